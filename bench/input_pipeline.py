"""Input pipeline throughput: training examples/s per task, batch mixing and eval.

  .venv/bin/python bench/input_pipeline.py [--images 24] [--image-size 640] [--canvas 640]
                                           [--batch 8] [--batches 15] [--write]

Makes a `pix2seq synth` set, ingests it with the real Beam ingestion
(data/coco_source.py -> components/beam_ingest.py), then times data/pipelines.py on
the shards: for each task the augmented training stream (parse, decode, keras-cv
jitter/crop/flip, polygon/keypoint moves, task codec, batching), the deterministic
eval stream, and one batch-mixing step (a batch of every task). The first batch is
excluded (tracing); examples/s counts sequences (segmentation/keypoints: one per
instance). --write puts the table into BENCHMARKS.md (section "Input pipeline").
"""
import argparse
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pix2seq  # noqa: E402,F401  (Keras 3 guard)

import tensorflow as tf  # noqa: E402

from bench.report import write_section  # noqa: E402
from data import coco_source, pipelines, synth  # noqa: E402
from model import vocab  # noqa: E402

SECTION = "## Input pipeline: examples/s per task (`bench/input_pipeline.py`)"


def rate(ds, batches, batch_size):
    """Examples/s over `batches` batches after the first (which pays for tracing);
    None when the split has nothing for the task."""
    it = iter(ds)
    if next(it, None) is None:
        return None, 0
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            break
        n += batch_size(batch)
    return n / (time.perf_counter() - start), n


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
    data = coco_source.ingest_coco_dir(coco, os.path.join(work, "ingested"), caption_vocab_size=500)
    tc = vocab.TokenConfig(image_size=args.canvas, caption_vocab_size=data.caption_vocab_size,
                           num_keypoints=data.num_keypoints or 17)
    rows = []
    for task in pipelines.TASK_NAMES:
        train = pipelines.train_dataset(data.train_files, task, tc, args.batch, seed=0)
        train_rate, _ = rate(train, args.batches, lambda b: int(b["image"].shape[0]))
        evald = pipelines.eval_dataset(data.eval_files, task, tc, args.batch, drop_remainder=False).repeat()
        eval_rate, _ = rate(evald, args.batches, lambda b: int(b["image"].shape[0]))
        rows.append((task, train_rate, eval_rate))
        print(f"{task:13s} train {_fmt(train_rate):>8s} ex/s   eval {_fmt(eval_rate):>8s} ex/s", flush=True)
    mixed = pipelines.batch_mixing_dataset(data.train_files, pipelines.TASK_NAMES, tc, args.batch)
    mix_rate, _ = rate(mixed, max(args.batches // 2, 1), lambda b: sum(int(v["image"].shape[0]) for v in b.values()))
    print(f"batch mixing  {_fmt(mix_rate)} ex/s")

    lines = ["| stream | train examples/s | eval examples/s |", "|---|---:|---:|"]
    lines += [f"| {task} | {_fmt(tr)} | {_fmt(ev)} |" for task, tr, ev in rows]
    lines.append(f"| batch mixing (all 4 tasks, one step = {len(pipelines.TASK_NAMES)} x {args.batch}) | "
                 f"{_fmt(mix_rate)} | |")
    lines.append("")
    lines.append(f"{args.images} synthetic images (longest side {args.image_size}) ingested with the Beam "
                 f"ingestion; canvas {args.canvas}, batch {args.batch}, {args.batches} timed batches after the "
                 f"first; tf.data AUTOTUNE; {platform.machine()}, {os.cpu_count()} CPUs, TF {tf.__version__}.")
    body = "\n".join(lines)
    print(body)
    if args.write:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
