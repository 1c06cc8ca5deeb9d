"""Learning curves of the demo: AP per task against training steps, from scratch
(`demo-scratch`) and warm-started from pretrained/demo_tiny (`demo`).

    python bench/learning_curve.py --coco-dir demo_data/synth --steps 600 --every 150 [--write]

Each variant trains with its preset's TrainConfig (steps and interval replaced) on the
demo's ingested data; at step 0 and every `--every` steps the weights are saved,
exported as the serving SavedModel and scored on the val split by `pix2seq evaluate`
(a subprocess: the command users run). Writes docs/images/learning_curve.png (drawn
with Pillow) and, with `--write`, a BENCHMARKS.md table. Hours of CPU: not a test.
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

import pix2seq  # noqa: E402,F401  (Keras 3 guard)
from bench.report import write_section  # noqa: E402
from model import tf_threads, train_data  # noqa: E402
from model.export import export_saved_model  # noqa: E402
from model.training import load_model, save_model  # noqa: E402
from pipeline import presets  # noqa: E402
from pix2seq import train_cli  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("demo-scratch", "demo")
# (task, metric, the aim)
CURVES = (("detection", "AP50", 0.5), ("segmentation", "AP50", 0.3), ("keypoints", "AP", 0.3),
          ("captioning", "CIDEr-D", 0.5))
COLORS = {"demo-scratch": (200, 60, 40), "demo": (30, 90, 200)}


class StepWeights(keras.callbacks.Callback):
    """Saves the weights at the start (step 0, after any warm start) and at every interval."""

    def __init__(self, out_dir):
        super().__init__()
        self.out_dir = out_dir

    def _save(self):
        step = int(self.model.optimizer.iterations.numpy())
        save_model(self.model, os.path.join(self.out_dir, f"step_{step:06d}"))

    def on_train_begin(self, logs=None):
        self._save()

    def on_epoch_end(self, epoch, logs=None):
        self._save()


def score(weights_dir, caption_model, coco_dir):
    """Exports the saved weights and runs `pix2seq evaluate` on the val split; returns its metrics."""
    export = os.path.join(weights_dir, "export")
    if not os.path.exists(os.path.join(export, "saved_model.pb")):
        export_saved_model(load_model(weights_dir), export, caption_model)
    out = os.path.join(weights_dir, "metrics.json")
    if not os.path.exists(out):
        subprocess.run([sys.executable, "-m", "pix2seq.cli", "evaluate", "--model", export, "--coco-dir", coco_dir,
                        "--split", "val", "--batch-size", "16", "--json", out], check=True)
    with open(out) as f:
        return json.load(f)["metrics"]


def plot(curves, path):
    """One panel per task: the metric against steps, a line per variant, the aim dashed."""
    width, height, pad = 380, 260, 40
    image = Image.new("RGB", (width * len(CURVES), height + 30), "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    max_step = max(s for points in curves.values() for s, _ in points) or 1
    for i, (task, metric, aim) in enumerate(CURVES):
        x0, y0, w, h = i * width + pad, 20, width - 2 * pad, height - 60
        values = [m[task].get(metric) or 0.0 for points in curves.values() for _, m in points if task in m]
        top = max([aim * 1.1] + values)
        to_xy = lambda s, v: (x0 + w * s / max_step, y0 + h - h * v / top)  # noqa: E731
        draw.rectangle([x0, y0, x0 + w, y0 + h], outline="black")
        draw.text((x0, 4), f"{task} {metric} (aim {aim})", fill="black", font=font)
        draw.text((x0, y0 + h + 6), f"0 .. {max_step} steps", fill="black", font=font)
        draw.text((x0 - 30, y0 - 4), f"{top:.2f}", fill="black", font=font)
        ya = to_xy(0, aim)[1]
        for x in range(int(x0), int(x0 + w), 8):
            draw.line([x, ya, x + 4, ya], fill=(120, 120, 120))
        for variant, points in curves.items():
            xy = [to_xy(s, m[task].get(metric) or 0.0) for s, m in points if task in m]
            if len(xy) > 1:
                draw.line(xy, fill=COLORS[variant], width=2)
            for x, y in xy:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=COLORS[variant])
    for j, variant in enumerate(curves):
        draw.text((pad + 200 * j, height + 12), f"-- {variant}", fill=COLORS[variant], font=font)
    image.save(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco-dir", default=os.path.join(ROOT, "demo_data", "synth"))
    parser.add_argument("--work", default=os.path.join(ROOT, "runs", "learning_curve"))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=150)
    parser.add_argument("--png", default=os.path.join(ROOT, "docs", "images", "learning_curve.png"))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="presets to train, in this order (default: both)")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args(argv)
    tf_threads.configure(presets.get("demo").train.inter_op_threads)
    examples = train_cli.ingest(args.coco_dir, os.path.join(args.work, "data"), presets.get("demo").caption_vocab_size)
    caption_model = train_data.caption_model_file(examples)
    curves, seconds = {}, {}
    for variant in args.variants:
        config = presets.get(variant).train.replace(steps=args.steps, checkpoint_every=args.every)
        if config.init_checkpoint:
            config = config.replace(init_checkpoint=os.path.join(ROOT, config.init_checkpoint))
        out = os.path.join(args.work, variant)
        start = time.time()
        train_data.train_on_examples(config, examples, os.path.join(out, "train"), callbacks=[StepWeights(out)])
        seconds[variant] = time.time() - start
        keras.backend.clear_session(free_memory=True)
        steps = sorted(d for d in os.listdir(out) if d.startswith("step_"))
        curves[variant] = [(int(d[5:]), score(os.path.join(out, d), caption_model, args.coco_dir)) for d in steps]
    plot(curves, args.png)
    lines = ["| variant | step | bbox AP50 | segm AP50 | keypoint AP | CIDEr-D |", "|---|---:|---:|---:|---:|---:|"]
    for variant, points in curves.items():
        for step, m in points:
            cells = [m.get(task, {}).get(metric) for task, metric, _ in CURVES]
            lines.append(f"| {variant} | {step} | " + " | ".join("n/a" if c is None else f"{c:.3f}" for c in cells)
                         + " |")
    lines += ["", f"Val split of `{os.path.relpath(args.coco_dir, ROOT)}` scored by `pix2seq evaluate`; training "
              f"seconds: " + ", ".join(f"{v} {s:.0f}" for v, s in seconds.items()) + f" ({os.cpu_count()} CPUs, "
              f"1-minute load average {os.getloadavg()[0]:.1f} at the end). Aims: "
              + ", ".join(f"{t} {m} {a}" for t, m, a in CURVES) + ".",
              "", f"![learning curves]({os.path.relpath(args.png, ROOT)})"]
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section("## Learning curves of the demo (`bench/learning_curve.py`)", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
