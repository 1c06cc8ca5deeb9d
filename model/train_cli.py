"""`pix2seq train`: Keras `model.fit` on ingested examples or straight from a COCO directory.

    pix2seq train --examples DIR --preset tiny --steps 200 --out runs/tiny
    pix2seq train --coco-dir demo_data/synth --preset tiny --steps 200 --out runs/tiny

`--coco-dir` first runs the ingestion pipeline (components/beam_ingest.py, Beam
DirectRunner) into OUT/ingest. Training resumes from OUT/checkpoints when present;
TensorBoard logs go to OUT/tensorboard; the trained weights to OUT/model.weights.h5;
with `--export DIR` the serving SavedModel (the one the TFX Trainer pushes) to DIR.
`--init-checkpoint DIR` starts a new run from the weights saved in DIR (`pix2seq train`
or `pix2seq import-checkpoint` output) with DIR's architecture (`--preset` is then not
used; see model/warm_start.py).
"""
import logging
import os
import sys

import pix2seq  # noqa: F401  (Keras 3 guard)

TASKS = ("detection", "segmentation", "keypoints", "captioning")


def add_arguments(parser):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--examples", help="ingested Examples directory (Split-train/, Split-eval/, dataset_info.json)")
    source.add_argument("--coco-dir", help="COCO-format directory; ingested into OUT/ingest first")
    parser.add_argument("--out", required=True, help="run directory: checkpoints, TensorBoard logs, weights")
    parser.add_argument("--preset", default="tiny", choices=("tiny", "small", "base", "large"))
    parser.add_argument("--steps", type=int, required=True, help="total optimizer steps")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch size per task")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=None, help="default: 10%% of --steps, at most 1000")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--clipnorm", type=float, default=1.0, help="global gradient-norm clip; 0 disables")
    for task in TASKS:
        parser.add_argument(f"--{task}-weight", type=float, default=None,
                            help=f"loss weight of {task} (default: the paper's when the data supports "
                                 f"{task}, else 0; 0 disables the task)")
    parser.add_argument("--mixing", choices=("batch", "data"), default="batch",
                        help="batch mixing (one batch per task per step) or data mixing (tasks sampled by weight)")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--eval-steps", type=int, default=0, help="validation batches per checkpoint interval")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"))
    parser.add_argument("--tpu", default=None, help="TPU name or grpc:// address; 'none' disables discovery")
    parser.add_argument("--caption-vocab-size", type=int, default=1000, help="with --coco-dir: SentencePiece size")
    parser.add_argument("--export", metavar="DIR", help="also write the serving SavedModel here (for pix2seq predict/serve)")
    parser.add_argument("--verbose", action="store_true", help="show the traceback of a dataset error")
    parser.add_argument("--init-checkpoint", metavar="DIR",
                        help="start from the weights saved in DIR (train or import-checkpoint output), with its "
                             "architecture instead of --preset; ignored when OUT already has checkpoints")


def task_weights(args, examples):
    """The paper's weights for the tasks the data supports (dataset_info.json `tasks`),
    with the flags given on top; a flagged task the data cannot feed is an error."""
    from model import train_data
    from model.pix2seq_model import DEFAULT_TASK_WEIGHTS

    weights = dict(DEFAULT_TASK_WEIGHTS)
    explicit = [t for t in TASKS if getattr(args, f"{t}_weight") is not None]
    weights.update({t: getattr(args, f"{t}_weight") for t in explicit})
    weights = train_data.task_weights_for(examples, weights, explicit)
    if not weights:
        raise SystemExit("pix2seq train: every task weight is 0; nothing to train")
    return weights


def ingest(coco_dir, out, caption_vocab_size):
    """Runs the ingestion pipeline into OUT/ingest; returns the examples directory."""
    import apache_beam as beam

    from components import beam_ingest, ingest_cli

    examples, vocabulary, report = ingest_cli.output_dirs(os.path.join(out, "ingest"))
    if not os.path.exists(os.path.join(examples, "dataset_info.json")):
        summary = beam_ingest.run_ingest(coco_dir, examples, vocabulary, report, make_pipeline=beam.Pipeline,
                                         caption_vocab_size=caption_vocab_size)
        print(beam_ingest.format_summary(summary))
    return examples


def main(args) -> int:
    """Dataset mistakes (data/dataset_info.py DatasetError) end with their message and exit 2."""
    from data.dataset_info import DatasetError

    try:
        return _main(args)
    except DatasetError as e:
        if getattr(args, "verbose", False):
            raise
        print(f"pix2seq train: {e}", file=sys.stderr)
        return 2


def _main(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from model import train_data
    from model.training import TrainConfig, train

    examples = args.examples or ingest(args.coco_dir, args.out, args.caption_vocab_size)
    weights = task_weights(args, examples)
    initialize = None
    if args.init_checkpoint:
        from model import warm_start

        model_config = train_data.model_config_for(warm_start.source_config(args.init_checkpoint), examples)

        def initialize(model):
            print(warm_start.warm_start(model, args.init_checkpoint).summary())
    else:
        model_config = train_data.model_config_for(args.preset, examples)
    settings = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, global_clipnorm=args.clipnorm or None,
        task_weights=weights, checkpoint_every=args.checkpoint_every, eval_steps=args.eval_steps,
        seed=args.seed, precision=args.precision, tpu=args.tpu)
    train_files = train_data.split_pattern(examples, "train")
    result = train(
        model_config, settings, args.out,
        train_data.train_dataset_fn(train_files, model_config.tokens, args.batch_size, weights, args.mixing, args.seed),
        train_data.eval_dataset_fn(train_data.split_pattern(examples, "eval"), model_config.tokens,
                                   args.batch_size, list(weights)) if args.eval_steps else None,
        initialize=initialize,
    )
    final = {k: round(float(v[-1]), 4) for k, v in result.history.items()}
    print(f"trained {model_config.name} to step {int(result.model.optimizer.iterations.numpy())}: {final}")
    print(f"weights: {os.path.join(args.out, 'model.weights.h5')}  TensorBoard: {os.path.join(args.out, 'tensorboard')}")
    if args.export:
        from model.export import export_saved_model

        export_saved_model(result.model, args.export, train_data.caption_model_file(examples))
        print(f"serving SavedModel: {args.export}")
    return 0
