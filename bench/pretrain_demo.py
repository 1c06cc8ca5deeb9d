"""Pretrains the `tiny` checkpoint that `make demo` warm-starts from (pretrained/demo_tiny).

    python bench/pretrain_demo.py --steps 6000            # or: make pretrain-demo

What it does, all through the code users run:
1. `pix2seq synth` data with `--seed 2` (the demo's data is seed 1; a scene depends only on
   (seed, split, index), so no pretraining image is a demo image, val or train);
2. ingestion into WORK/ingest (`pix2seq train --coco-dir`'s), with the demo's caption
   vocabulary size;
3. `train_on_examples` with the demo preset's model (the same `model_overrides`, so the
   checkpoint fits it) and a batch and loss that give segmentation and keypoints a real
   share (the demo's own recipe spends most of a short run on detection);
4. every checkpoint interval, the weights (`model.weights.h5` + `model_config.json`, what
   `TrainConfig.init_checkpoint` reads) go to OUT, so a stopped run leaves a usable
   checkpoint; OUT/pretraining.json records the data, recipe, step, losses and time.

5. at the end, the serving SavedModel of OUT goes to WORK/export, for
   `pix2seq evaluate --model WORK/export --coco-dir demo_data/synth` (the demo's val split);
   `--export-only` does just that for whatever OUT holds (e.g. a stopped run's snapshot).

A long CPU run: start it in the background (`nice -n 19 ... > log 2>&1 &`); running it
again resumes from WORK/train/checkpoints. A run that has lost WORK (another machine, a
fresh clone) continues from a checkpoint with `--continue-from pretrained/demo_tiny`: a
warm start (model/warm_start.py) of a new run, so the step count and the learning-rate
schedule start over; pretraining.json keeps the earlier runs' records under `earlier`.
"""
import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time

import h5py
import keras

import pix2seq  # noqa: F401  (Keras 3 guard)
from data import synth
from model import datasets, tf_threads
from model import train_data
from model.training import WEIGHTS_FILE, save_model
from pipeline import presets
from pix2seq import train_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_SEED = 1  # the Makefile's `pix2seq synth demo_data/synth ... --seed 1`
# Images per task per step and loss weights: segmentation and keypoints get as many
# images as detection and most of the loss (their sequences are longer and harder).
TASK_BATCH_SIZES = {"detection": 8, "segmentation": 8, "keypoints": 8, "captioning": 4}
TASK_WEIGHTS = {"detection": 0.3, "segmentation": 0.35, "keypoints": 0.25, "captioning": 0.1}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def pretrain_config(steps, checkpoint_every, learning_rate, warmup_steps, init_checkpoint=None):
    """The demo preset's TrainConfig with the pretraining batch, weights and length."""
    demo = presets.get("demo-scratch").train
    return dataclasses.replace(demo, steps=steps, checkpoint_every=checkpoint_every, learning_rate=learning_rate,
                               warmup_steps=warmup_steps, task_batch_sizes=TASK_BATCH_SIZES,
                               task_weights=TASK_WEIGHTS, keep_checkpoints=2, init_checkpoint=init_checkpoint)


def continuation(source, work):
    """A copy of `source` in WORK (OUT, often the same directory, is rewritten while training)
    and the records of the runs that made it."""
    copy = os.path.join(work, "continued_from")
    if not os.path.exists(os.path.join(copy, WEIGHTS_FILE)):
        shutil.copytree(source, copy, dirs_exist_ok=True)
    earlier = []
    record_file = os.path.join(copy, "pretraining.json")
    if os.path.exists(record_file):
        with open(record_file) as f:
            record = json.load(f)
        earlier = record.pop("earlier", []) + [record]
    return copy, earlier


def save_weights_only(model, out_dir):
    """`save_model`'s files without the optimizer's slots (Keras writes them into
    model.weights.h5; a warm start never reads them): a third of the size."""
    save_model(model, out_dir)
    path = os.path.join(out_dir, WEIGHTS_FILE)
    with h5py.File(path) as full, h5py.File(path + ".tmp", "w") as lean:
        for key, value in full.attrs.items():
            lean.attrs[key] = value
        for name in full:
            if name != "optimizer":
                full.copy(full[name], lean, name=name)
    os.replace(path + ".tmp", path)


class Snapshot(keras.callbacks.Callback):
    """Writes the weights and a record of the run to `out_dir` at every checkpoint."""

    def __init__(self, out_dir, record):
        super().__init__()
        self.out_dir, self.record, self.start = out_dir, record, time.time()

    def on_epoch_end(self, epoch, logs=None):
        save_weights_only(self.model, self.out_dir)
        step = int(self.model.optimizer.iterations.numpy())
        record = dict(self.record, step=step, losses={k: round(float(v), 4) for k, v in (logs or {}).items()})
        record["train_seconds_this_session"] = round(time.time() - self.start)
        record["load_average"] = [round(x, 2) for x in os.getloadavg()]
        with open(os.path.join(self.out_dir, "pretraining.json"), "w") as f:
            json.dump(record, f, indent=1)
        print(f"pretrain_demo: step {step} weights -> {self.out_dir} {record['losses']}", flush=True)


def export(out_dir, export_dir):
    """The serving SavedModel of the checkpoint in `out_dir`, with its caption vocabulary."""
    from model.export import export_saved_model
    from model.training import load_model

    export_saved_model(load_model(out_dir), export_dir, os.path.join(out_dir, datasets.CAPTION_MODEL))
    print(f"pretrain_demo: serving SavedModel -> {export_dir}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=os.path.join(ROOT, "runs", "pretrain_demo"),
                        help="data, ingestion and training checkpoints (default runs/pretrain_demo)")
    parser.add_argument("--out", default=os.path.join(ROOT, "pretrained", "demo_tiny"),
                        help="the checkpoint the demo warm-starts from (default pretrained/demo_tiny)")
    parser.add_argument("--train", type=int, default=1500, help="synthetic training images (default 1500)")
    parser.add_argument("--seed", type=int, default=2, help=f"synth seed; must differ from the demo's {DEMO_SEED}")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--continue-from", metavar="CHECKPOINT",
                        help="warm-start a new run from this checkpoint (e.g. pretrained/demo_tiny) instead of random "
                             "weights; ignored when WORK/train holds checkpoints to resume from")
    parser.add_argument("--export-only", action="store_true",
                        help="only write the serving SavedModel of OUT to WORK/export")
    args = parser.parse_args(argv)
    if args.export_only:
        export(args.out, os.path.join(args.work, "export"))
        return 0
    if args.seed == DEMO_SEED:
        parser.error(f"--seed {DEMO_SEED} is the demo's data; pretraining must not see it")
    init_checkpoint, earlier = continuation(args.continue_from, args.work) if args.continue_from else (None, [])
    config = pretrain_config(args.steps, args.checkpoint_every, args.learning_rate, args.warmup_steps,
                             init_checkpoint)
    tf_threads.configure(config.inter_op_threads)

    coco_dir = os.path.join(args.work, "synth")
    if not os.path.exists(os.path.join(coco_dir, "annotations", "instances_val.json")):
        synth.generate(coco_dir, args.train, 10, seed=args.seed)
    examples = train_cli.ingest(coco_dir, args.work, presets.get("demo-scratch").caption_vocab_size)
    os.makedirs(args.out, exist_ok=True)
    # its caption vocabulary: a warm start maps caption tokens by piece (model/warm_start.py)
    shutil.copy(train_data.caption_model_file(examples), os.path.join(args.out, datasets.CAPTION_MODEL))
    record = {
        "data": f"pix2seq synth --train {args.train} --val 10 --seed {args.seed} (the demo's data: --seed {DEMO_SEED})",
        "recipe": {"model_preset": config.model_preset, "model_overrides": config.model_overrides,
                   "task_batch_sizes": TASK_BATCH_SIZES, "task_weights": TASK_WEIGHTS, "steps": config.steps,
                   "learning_rate": config.learning_rate, "warmup_steps": config.warmup_steps,
                   "inter_op_threads": config.inter_op_threads},
        "machine": f"{os.cpu_count()} x {cpu_model()}, run at nice {os.nice(0)}",
    }
    if earlier:
        record["recipe"]["continued_from"] = "the weights of the runs in `earlier` (a warm start: step 0, new schedule)"
        record["earlier"] = earlier
    result = train_data.train_on_examples(config, examples, os.path.join(args.work, "train"),
                                          callbacks=[Snapshot(args.out, record)])
    save_weights_only(result.model, args.out)
    print(f"pretrain_demo: done at step {int(result.model.optimizer.iterations.numpy())}: {args.out}")
    export(args.out, os.path.join(args.work, "export"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
