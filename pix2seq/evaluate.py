"""`pix2seq evaluate`: COCO metrics of an exported model on a COCO-format directory.

    pix2seq evaluate --model SAVED_MODEL_OR_BASE_DIR --coco-dir D [--split val]
                     [--tasks detection segmentation keypoints captioning] [--json METRICS_OUT]
                     [--max-images N] [--batch-size B] [--temperature T --top-p P --num-samples S
                     --max-objects M --seed X]

What the pipeline's CocoEvaluator does, in one process: the split's annotations are
read and validated as ingestion reads them (data/coco.py), each image becomes the
example ingestion would write (images that fail to decode are reported and skipped,
the rest are scored), and components/coco_evaluator/evaluation.py builds the ground
truth, runs the model batch by batch (ModelRunner, model/results.py) and scores it.
The table is the one `pix2seq pipeline run` prints. Without --tasks it scores every
task the model serves (its signatures) that the split has annotations for; a task asked
for that the data or the model lacks is a one-paragraph error naming what is missing.
"""
from __future__ import annotations

import json
import sys

def add_arguments(parser):
    from model.tasks import task_names

    tasks = task_names()
    parser.add_argument("--model", required=True, help="SavedModel dir, or a base dir of numbered versions")
    parser.add_argument("--coco-dir", required=True, help="COCO-format directory (annotations/ + images)")
    parser.add_argument("--split", default="val",
                        help="split to score: val (= eval), train, or an annotation suffix such as val2017")
    parser.add_argument("--tasks", nargs="+", choices=tasks, metavar="TASK",
                        help=f"tasks to score, of {', '.join(tasks)} (default: every task the model serves that "
                             f"the split has annotations for)")
    parser.add_argument("--json", dest="json_out", metavar="METRICS_OUT", help="write the metrics here as JSON")
    parser.add_argument("--max-images", type=int, default=0, help="score only the first N images (by id)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per model call")
    from pix2seq import predict_cli  # the same sampling options as `pix2seq predict`

    predict_cli.add_decoding_arguments(parser)


class UsageError(Exception):
    """A problem with the inputs, reported as one line and exit status 2."""


def split_name(split: str) -> str:
    """`val`, `eval`, `val2017`, `minival2014` -> "eval"; `train*` -> "train"."""
    from data import coco

    return coco.split_for_suffix(split) or split


def load_split(coco_dir: str, split: str, max_images: int = 0):
    """The split's validated per-image records (data/coco.py), first `max_images` by id.

    Returns (records, image_dir, categories, num_keypoints)."""
    from data import coco

    name = split_name(split)
    try:
        data = coco.load_coco_dir(coco_dir, [name])
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(f"split {split!r}: {e}") from e
    records = data.splits[name][:max_images] if max_images > 0 else data.splits[name]
    return records, data.image_dirs[name], data.categories, data.num_keypoints


def decode_images(records, image_dir: str, num_keypoints: int, progress=None):
    """Records -> (decoded examples as ingestion writes them, skipped [(file_name, reason, detail)])."""
    from data import features as F
    from data import image_io

    decoded, skipped = [], []
    for record in records:
        # caption token ids are a training input; the text is what is scored
        record = {**record, "captions": [{**c, "ids": []} for c in record.get("captions", [])]}
        try:
            example, _ = F.example_from_file(record, image_dir, num_keypoints)
            decoded.append(F.decode_example(example))
        except image_io.ImageRejected as e:
            skipped.append((record["file_name"], e.reason, e.detail))
        if progress is not None:
            progress(1)
    return decoded, skipped


def _progress(total, what):
    from pix2seq import progress

    return progress.Progress(what, total)


def evaluate(args):
    """Runs the evaluation; returns the report dict written by --json."""
    from components.coco_evaluator import evaluation, model_runner
    from pix2seq.predict_cli import resolve_model_dir

    try:
        model_dir = resolve_model_dir(args.model)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from e
    from data import dataset_info
    from model import signatures
    from model.generate import OPTION_NAMES
    from model.tasks import supported_tasks

    decoding = {n: getattr(args, n) for n in OPTION_NAMES if getattr(args, n, None) is not None}
    records, image_dir, categories, num_keypoints = load_split(args.coco_dir, args.split)
    # what the whole split has annotations for, however few images are scored
    data_tasks = supported_tasks(records, dataset_info.keypoint_schema(categories))
    records = records[:args.max_images] if args.max_images > 0 else records
    try:
        tasks = evaluation.tasks_to_score(args.tasks or (), signatures.exported_tasks(model_dir), data_tasks,
                                          model_dir, f"{args.coco_dir} (split {args.split})")
        runner = model_runner.ModelRunner(model_dir, tasks, decoding)
    except (model_runner.MissingSignatureError, dataset_info.DatasetError) as e:
        raise UsageError(str(e)) from e
    with _progress(len(records), "reading images") as bar:
        decoded, skipped = decode_images(records, image_dir, num_keypoints, bar.advance)
    for file_name, reason, detail in skipped:
        print(f"skipped {file_name}: {reason} ({detail})", file=sys.stderr)
    if not decoded:
        raise UsageError(f"{args.coco_dir}: no image of split {args.split!r} could be read")
    gt = evaluation.ground_truth(decoded, categories)
    options = evaluation.EvalOptions(tasks=tasks, batch_size=max(1, args.batch_size),
                                     keypoint_category_ids=gt.keypoint_category_ids,
                                     decoding=tuple(sorted(decoding.items())))
    with _progress(len(decoded), "evaluating") as bar:
        per_image = evaluation.predict(runner, decoded, options, progress=bar.advance)
    metrics, _ = evaluation.score(gt, per_image, tasks)
    return {"model": model_dir, "coco_dir": args.coco_dir, "split": args.split, "tasks": list(tasks),
            "num_images": len(decoded), "skipped": [{"file_name": f, "reason": r, "detail": d}
                                                    for f, r, d in skipped],
            "decoding": decoding, "metrics": metrics}


def main(args) -> int:
    from components import coco_metrics

    try:
        report = evaluate(args)
    except UsageError as e:
        print(f"pix2seq evaluate: {e}", file=sys.stderr)
        return 2
    print(f"model {report['model']}  on {report['coco_dir']} ({args.split}, {report['num_images']} images"
          + (f", {len(report['skipped'])} skipped" if report["skipped"] else "") + ")")
    print("")
    print("\n".join(coco_metrics.metrics_table(report["metrics"])))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=1, sort_keys=True)
        print(f"\nmetrics: {args.json_out}")
    return 0
