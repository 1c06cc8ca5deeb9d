"""`pix2seq train`: Keras `model.fit` on ingested examples or straight from a COCO directory.

    pix2seq train --examples DIR --model-preset tiny --steps 200 --out runs/tiny
    pix2seq train --coco-dir demo_data/synth --preset demo --out runs/demo

The training settings are one `model.train_config.TrainConfig`: `--preset NAME`
starts from that pipeline preset's (pipeline/presets.py; `demo` is what `make demo`
trains), otherwise from the TrainConfig defaults, and each flag given replaces one
field. `--coco-dir` first runs the ingestion pipeline (components/beam_ingest.py,
Beam DirectRunner) into OUT/ingest. Training resumes from OUT/checkpoints when
present; TensorBoard logs go to OUT/tensorboard; the trained weights to
OUT/model.weights.h5; with `--export DIR` the serving SavedModel (the one the TFX
Trainer pushes) to DIR. `--init-checkpoint DIR` starts a new run from the weights saved
in DIR (`pix2seq train` or `pix2seq import-checkpoint` output) with DIR's architecture
(TrainConfig.init_checkpoint; see model/warm_start.py).

Lives in the command-line layer because it reads the pipeline presets.
"""
import dataclasses
import logging
import os
import sys

import pix2seq  # noqa: F401  (Keras 3 guard)
from model import config as model_config
from pix2seq import console
from model import train_config as train_config_lib
from pipeline import presets

TASKS = train_config_lib.task_names()
# flag dest -> TrainConfig field, for the flags that replace one field as given
_FIELDS = {"model_preset": "model_preset", "steps": "steps", "learning_rate": "learning_rate",
           "warmup_steps": "warmup_steps", "weight_decay": "weight_decay", "mixing": "mixing",
           "checkpoint_every": "checkpoint_every", "eval_steps": "eval_steps", "seed": "seed",
           "precision": "precision", "tpu": "tpu", "init_checkpoint": "init_checkpoint",
           "inter_op_threads": "inter_op_threads"}


def add_arguments(parser):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--examples", help="ingested Examples directory (Split-train/, Split-eval/, dataset_info.json)")
    source.add_argument("--coco-dir", help="COCO-format directory; ingested into OUT/ingest first")
    parser.add_argument("--out", required=True, help="run directory: checkpoints, TensorBoard logs, weights")
    parser.add_argument("--preset", choices=sorted(presets.PRESETS),
                        help="start from this pipeline preset's training config (and caption vocabulary size); "
                             "default: the TrainConfig defaults")
    parser.add_argument("--model-preset", choices=tuple(model_config.PRESETS),
                        help="model size (default: the preset's, else tiny)")
    parser.add_argument("--steps", type=int, help="total optimizer steps (default: the preset's, else 100)")
    parser.add_argument("--batch-size", type=int,
                        help="global batch size of every task (replaces the preset's per-task batch sizes)")
    parser.add_argument("--learning-rate", type=float, help="peak learning rate (default 1e-3)")
    parser.add_argument("--warmup-steps", type=int, help="default: 10%% of --steps, at most 1000")
    parser.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0.05)")
    parser.add_argument("--clipnorm", type=float, help="global gradient-norm clip (default 1.0); 0 disables")
    for task in TASKS:
        parser.add_argument(f"--{task}-weight", type=float, default=None,
                            help=f"loss weight of {task} (default: the preset's or the paper's when the data supports "
                                 f"{task}, else 0; 0 disables the task)")
    parser.add_argument("--mixing", choices=train_config_lib.MIXING,
                        help="batch mixing (one batch per task per step, default) or data mixing (tasks sampled by weight)")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 500)")
    parser.add_argument("--eval-steps", type=int, help="validation batches per checkpoint interval (default 0)")
    parser.add_argument("--seed", type=int, help="default 0")
    parser.add_argument("--precision", choices=train_config_lib.PRECISIONS, help="default: auto (bfloat16 on TPU)")
    parser.add_argument("--tpu", help="TPU name or grpc:// address; 'none' disables discovery")
    parser.add_argument("--caption-vocab-size", type=int,
                        help="with --coco-dir: SentencePiece size (default: the preset's, else ingestion's)")
    parser.add_argument("--export", metavar="DIR", help="also write the serving SavedModel here (for pix2seq predict/serve)")
    parser.add_argument("--inter-op-threads", type=int, metavar="N",
                        help="TF inter-op thread pool size (default 1, measured ~2x faster on CPUs than "
                             "TF's default pool; 0: TF's default)")
    parser.add_argument("--init-checkpoint", metavar="DIR",
                        help="start from the weights saved in DIR (train or import-checkpoint output), with its "
                             "architecture instead of --model-preset; ignored when OUT already has checkpoints")


def train_config(args):
    """The preset's TrainConfig (or the defaults) with every given flag applied."""
    config = presets.get(args.preset).train if args.preset else train_config_lib.TrainConfig()
    changes = {field: getattr(args, dest) for dest, field in _FIELDS.items() if getattr(args, dest) is not None}
    if args.batch_size is not None:
        changes.update(batch_size=args.batch_size, task_batch_sizes={})
    if args.clipnorm is not None:
        changes["clipnorm"] = args.clipnorm or None
    weights = dict(config.task_weights)
    for task in TASKS:
        given = getattr(args, f"{task}_weight")
        if given is not None:
            weights[task] = given
    changes["task_weights"] = weights
    # a weight flag asks for its task (as the preset's required_tasks do): data that cannot
    # feed it is an error, not a dropped task
    asked = set(config.required_tasks) | {t for t in TASKS if getattr(args, f"{t}_weight") is not None}
    changes["required_tasks"] = tuple(t for t in TASKS if t in asked and weights.get(t, 0) > 0)
    if not any(w > 0 for w in weights.values()):
        raise SystemExit("pix2seq train: every task weight is 0; nothing to train")
    return dataclasses.replace(config, **changes)


def ingest(coco_dir, out, caption_vocab_size):
    """Runs the ingestion pipeline into OUT/ingest; returns the examples directory.

    A previous ingestion there is reused only when it was of the same files with the
    same vocabulary size (the input fingerprint of data/fingerprint.py).
    """
    from components import beam_ingest

    examples, summary = beam_ingest.ingest(coco_dir, os.path.join(out, "ingest"),
                                           caption_vocab_size=caption_vocab_size, reuse=True)
    if summary is not None:
        print(beam_ingest.format_summary(summary))
    return examples


def main(args) -> int:
    """A dataset that cannot feed what was asked (data/dataset_info.py DatasetError) ends with
    its message and exit 2 (`pix2seq --verbose train ...` shows the traceback)."""
    from data.dataset_info import DatasetError

    try:
        return _main(args)
    except DatasetError as e:
        if console.verbose():
            raise
        print(f"pix2seq train: {e}", file=sys.stderr)
        return 2


def _main(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from model import train_data

    config = train_config(args)
    from model import tf_threads

    tf_threads.configure(config.inter_op_threads)  # before ingestion runs TF's first op
    from components.beam_ingest import DEFAULT_CAPTION_VOCAB_SIZE

    vocab_size = args.caption_vocab_size or (presets.get(args.preset).caption_vocab_size if args.preset
                                             else DEFAULT_CAPTION_VOCAB_SIZE)
    examples = args.examples or ingest(args.coco_dir, args.out, vocab_size)
    result = train_data.train_on_examples(config, examples, args.out)
    final = {k: round(float(v[-1]), 4) for k, v in result.history.items()}
    print(f"trained {result.model.config.name} to step {int(result.model.optimizer.iterations.numpy())}: {final}")
    print(f"weights: {os.path.join(args.out, 'model.weights.h5')}  TensorBoard: {os.path.join(args.out, 'tensorboard')}")
    if args.export:
        from model.export import export_saved_model

        export_saved_model(result.model, args.export, train_data.caption_model_file(examples), tasks=result.tasks)
        print(f"serving SavedModel: {args.export}")
    return 0
