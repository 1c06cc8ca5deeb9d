"""Input pipeline throughput: training examples/s per task, batch mixing and eval.

  .venv/bin/python bench/input_pipeline.py [--images 24] [--image-size 640] [--canvas 640]
                                           [--batch 8] [--batches 15] [--write]

Makes a `pix2seq synth` set, ingests it with the real Beam ingestion
(components/beam_ingest.py), then times model/input_pipelines.py on
the shards: for each task the augmented training stream (parse, decode,
jitter/crop/flip of pixels, boxes, polygons and keypoints, task codec, batching), the deterministic
eval stream, and one batch-mixing step (a batch of every task). The first batch is
excluded (tracing); examples/s counts sequences (segmentation/keypoints: one per
instance). --write puts the table into BENCHMARKS.md (section "Input pipeline").
"""
import argparse
import os
import platform
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pix2seq  # noqa: E402,F401  (Keras 3 guard)

import tensorflow as tf  # noqa: E402

from bench.report import write_section  # noqa: E402
from components import beam_ingest  # noqa: E402
from data import synth  # noqa: E402
from model import datasets  # noqa: E402
from model import input_pipelines as pipelines  # noqa: E402
from model import vocab  # noqa: E402

SECTION = "## Input pipeline: examples/s per task (`bench/input_pipeline.py`)"


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rate(ds, batches, batch_size, warmup=3):
    """(examples/s, process CPU ms per example) over `batches` batches after `warmup`
    batches (tracing, tf.data autotuning); (None, None) when the split has nothing for
    the task. CPU ms/example moves less with machine load than examples/s."""
    it = iter(ds)
    for _ in range(warmup):
        if next(it, None) is None:
            return None, None
    start, cpu = time.perf_counter(), _cpu_seconds()
    n = 0
    for _ in range(batches):
        batch = next(it, None)
        if batch is None:
            break
        n += batch_size(batch)
    return n / (time.perf_counter() - start), 1000.0 * (_cpu_seconds() - cpu) / max(n, 1)


def _fmt(value):
    return "n/a" if value is None else f"{value:.1f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=24, help="synthetic train (and half as many eval) images")
    p.add_argument("--image-size", type=int, default=640, help="longest side of the synthetic images")
    p.add_argument("--canvas", type=int, default=640, help="square canvas side (TokenConfig.image_size)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=15, help="timed batches per stream")
    p.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = p.parse_args(argv)

    work = tempfile.mkdtemp(prefix="bench_input_")
    coco = os.path.join(work, "coco")
    synth.generate(coco, num_train=args.images, num_val=max(args.images // 2, 1),
                   image_size=args.image_size, seed=0)
    examples, _ = beam_ingest.ingest(coco, os.path.join(work, "ingested"), caption_vocab_size=500)
    info = datasets.dataset_info(examples)
    train_files, eval_files = (datasets.split_pattern(examples, s) for s in ("train", "eval"))
    tc = vocab.TokenConfig(image_size=args.canvas, caption_vocab_size=info["caption_vocab_size"],
                           num_keypoints=info.get("num_keypoints") or 17)
    rows = []
    count = lambda b: int(b["image"].shape[0])  # noqa: E731
    for task in pipelines.task_names():
        train = pipelines.train_dataset(train_files, task, tc, args.batch, seed=0)
        evald = pipelines.eval_dataset(eval_files, task, tc, args.batch, drop_remainder=False).repeat()
        rows.append((task,) + rate(train, args.batches, count) + rate(evald, args.batches, count))
        print(f"{task:13s} train {_fmt(rows[-1][1]):>8s} ex/s {_fmt(rows[-1][2]):>6s} cpu ms/ex   "
              f"eval {_fmt(rows[-1][3]):>8s} ex/s {_fmt(rows[-1][4]):>6s} cpu ms/ex", flush=True)
    mixed = pipelines.batch_mixing_dataset(train_files, pipelines.task_names(), tc, args.batch)
    mix = rate(mixed, max(args.batches // 2, 1), lambda b: sum(count(v) for v in b.values()))
    print(f"batch mixing  {_fmt(mix[0])} ex/s {_fmt(mix[1])} cpu ms/ex")

    lines = ["| stream | train examples/s | train CPU ms/example | eval examples/s | eval CPU ms/example |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {row[0]} | " + " | ".join(_fmt(v) for v in row[1:]) + " |" for row in rows]
    lines.append(f"| batch mixing (one step = {len(pipelines.task_names())} tasks x {args.batch}) | "
                 f"{_fmt(mix[0])} | {_fmt(mix[1])} | | |")
    lines.append("")
    lines.append(f"{args.images} synthetic images (longest side {args.image_size}) ingested with the Beam "
                 f"ingestion; canvas {args.canvas}, batch {args.batch}, {args.batches} timed batches after 3 "
                 f"warm-up batches; tf.data AUTOTUNE; {platform.machine()}, {os.cpu_count()} CPUs, "
                 f"TF {tf.__version__}, 1-min load average {os.getloadavg()[0]:.1f} at the end (a shared machine "
                 f"inflates examples/s swings; CPU ms/example is steadier). Train = parse, decode, flip + scale jitter [0.3, 2] + crop (keypoints: "
                 f"flip + 2x person crop), task codec; eval = parse, decode, resize/pad, codec.")
    body = "\n".join(lines)
    print(body)
    if args.write:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
