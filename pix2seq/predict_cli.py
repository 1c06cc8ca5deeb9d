"""`pix2seq predict`: run the serving SavedModel on images, print, write COCO JSON and pictures.

    pix2seq predict (--model DIR | --server HOST:PORT) --task detect|segment|keypoints|caption|all IMAGE...
                    [--json OUT] [--viz DIR] [--annotations COCO.json]

`--model` is a SavedModel directory or a TF Serving base directory (its highest
numbered version is used). The model is reached through a *backend*: any object
with `predict(signature, images, **inputs) -> {name: np.ndarray}` and `signature_names`
(what the model serves) — here the
SavedModel in process (`SavedModelBackend`), or with `--server` the gRPC client
`serving/client.Pix2SeqClient` (TF Serving or `pix2seq serve`). The task steps are
model/generate.py's `run_task` (what `model.generate` runs on a Keras model); everything
after the call is model/results.py (per-image results, COCO JSON) and model/visualize.py
(pictures), the code the evaluator uses too, so every backend and the evaluator give the
same results.

Tasks and the signatures they call: detect -> `detect`; segment -> `detect`, then
`segment` on the detections; keypoints -> `detect`, then `keypoints` on the detections
of the keypoint category (`--person-class`; default: the model's own, from its
`model_info` signature, which a served model answers over gRPC too; for an export without
it, its config file with --model, 1 with --server); caption -> `caption`; all -> `detect_and_describe` (one
encoding), or the one task a single-task model serves. Any sampling option given
switches to the `*_with_options` signatures. A model serves only the tasks it was
trained for (model/signatures.py: its signature names tell, locally or through
GetModelMetadata); asking for another is a one-paragraph error and exit status 2.

`--json OUT` writes each COCO result kind the task produces, scored as the evaluator scores
it: the task's first kind goes to OUT, the others next to it as OUT's name + `_<kind>`
(detect: bbox; segment: segm + `_bbox`; keypoints: keypoints + `_bbox`; caption: captions;
all: bbox + `_segm`, `_keypoints`, `_captions`).
"""
import json
import os
import sys

from model import generate
from model import results as results_lib
from model import signatures as signatures_lib
from model.tasks import DetectionTask, task_class, task_names

TASKS = generate.TASKS
# COCO result kinds (model/results.KINDS) each task writes; the first goes to --json itself.
TASK_KINDS = {"detect": ("bbox",), "segment": ("segm", "bbox"), "keypoints": ("keypoints", "bbox"),
              "caption": ("captions",), "all": ("bbox", "segm", "keypoints", "captions")}


def task_needs(verb):
    """The model tasks (model/tasks) a --task verb other than `all` needs: the task whose
    plain signature it calls, after detection when that signature describes detected boxes."""
    owner = next(task_class(t) for t in task_names() if verb in task_class(t).signatures)
    return ((DetectionTask.name,) if not owner.serves_from_images else ()) + (owner.name,)


# The model tasks each --task verb needs.
TASK_NEEDS = {verb: task_needs(verb) for verb in TASKS if verb != "all"}


class MissingTaskError(ValueError):
    """--task asks for what the model was not trained for."""


def served_task(task, signature_names, model):
    """--task as the model can answer it: `all` without `detect_and_describe` becomes the
    single task the model serves; a task it lacks is a MissingTaskError."""
    served = signatures_lib.tasks_of(signature_names)
    if task == "all":
        if "detect_and_describe" in signature_names:
            return task
        single = [t for t, needs in TASK_NEEDS.items() if list(needs) == served]
        if single:
            return single[0]
        raise MissingTaskError(f"--task all needs the detect_and_describe signature, which the model {model} "
                               f"(serving {', '.join(served) or 'no task'}) lacks; ask for one task")
    if any(t not in served for t in TASK_NEEDS[task]):
        raise MissingTaskError(signatures_lib.missing_task_message(model, TASK_NEEDS[task], served))
    return task


def add_arguments(parser):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="SavedModel dir, or a base dir of numbered versions")
    source.add_argument("--server", metavar="HOST:PORT",
                        help="call a TF Serving / `pix2seq serve` gRPC endpoint instead of loading --model")
    parser.add_argument("--model-name", default="pix2seq", help="with --server: the served model's name")
    parser.add_argument("--task", choices=TASKS, default="detect")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG/PNG files")
    parser.add_argument("--json", dest="json_out", help="write COCO-format results here")
    parser.add_argument("--viz", help="write one PNG per image here")
    parser.add_argument("--annotations", help="COCO annotation JSON: image ids by file name, category names")
    parser.add_argument("--min-score", type=float, default=0.0, help="drop detections scoring below")
    parser.add_argument("--person-class", type=int,
                        help="category id that gets keypoints (default: the model's keypoint category, "
                             "from its model_info signature, over --server too)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per model call (progress advances per call)")
    add_decoding_arguments(parser)


def add_decoding_arguments(parser):
    """The sampling options (`generate.OPTION_NAMES`) of `pix2seq predict` and `pix2seq evaluate`."""
    decoding = parser.add_argument_group("decoding (any of these calls the `_with_options` signatures; "
                                         "unset ones keep the paper's defaults)")
    decoding.add_argument("--max-objects", type=int, help="detection: at most this many objects")
    decoding.add_argument("--temperature", type=float, help="sampling temperature (<= 0: greedy)")
    decoding.add_argument("--top-p", type=float, help="nucleus sampling mass (evaluate: detection's)")
    decoding.add_argument("--num-samples", type=int, help="segmentation: sampled polygons per mask")
    decoding.add_argument("--seed", type=int, help="sampling seed")


class SavedModelBackend:
    """The serving SavedModel in this process (TF2 loader)."""

    def __init__(self, model_dir):
        import tensorflow as tf

        self._tf = tf
        self.model_dir = resolve_model_dir(model_dir)
        self._loaded = tf.saved_model.load(self.model_dir)
        self.signature_names = sorted(self._loaded.signatures.keys())

    def predict(self, signature, images, **inputs):
        fn = self._loaded.signatures[signature]
        specs = fn.structured_input_signature[1]
        feed = {} if images is None else {"images": self._tf.constant(list(images), self._tf.string)}
        for name, value in inputs.items():
            feed[name] = self._tf.constant(value, dtype=specs[name].dtype)
        missing = sorted(set(specs) - set(feed))
        if missing:
            raise ValueError(f"signature {signature!r} needs inputs {missing}")
        return {k: v.numpy() for k, v in fn(**feed).items()}


def resolve_model_dir(path):
    """A SavedModel dir as given, or the highest numbered version under a base dir."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = [int(n) for n in (os.listdir(path) if os.path.isdir(path) else [])
                if n.isdigit() and os.path.exists(os.path.join(path, n, "saved_model.pb"))]
    if not versions:
        raise FileNotFoundError(f"--model {path}: no saved_model.pb there nor in a numbered version dir")
    return os.path.join(path, str(max(versions)))


def predict(backend, task, images, args, defaults=None):
    """Run `task` on encoded images through `backend` (model/generate.py `run_task`);
    returns the signature-style outputs."""
    options = {n: getattr(args, n, None) for n in generate.OPTION_NAMES}
    return generate.run_task(backend, task, images, args.person_class, defaults, **options)


def _image_infos(paths, annotations):
    ids = {img["file_name"]: img["id"] for img in (annotations or {}).get("images", [])}
    return [generate.image_info(path, i, ids) for i, path in enumerate(paths)]


def _print(results, names):
    for r in results:
        print(f"{r['file']} (image_id {r['image_id']}, {r['width']}x{r['height']})")
        for obj in r.get("objects", []):
            x, y, w, h = obj["bbox"]
            extra = " +mask" if "segmentation" in obj else ""
            extra += " +keypoints" if "keypoints" in obj else ""
            label = names.get(obj["category_id"], f"class {obj['category_id']}")
            print(f"  {label:<16} {obj['score']:.3f}  x={x:.1f} y={y:.1f} w={w:.1f} h={h:.1f}{extra}")
        if "caption" in r:
            print(f"  caption: {r['caption']}")


def _write_json(path, results, task):
    """The task's COCO result kinds (TASK_KINDS) as files; returns the paths written."""
    coco = results_lib.coco_results(results)
    root, ext = os.path.splitext(path)
    written = []
    for i, kind in enumerate(TASK_KINDS[task]):
        written.append(path if i == 0 else f"{root}_{kind}{ext or '.json'}")
        with open(written[-1], "w") as f:
            json.dump(coco[kind], f)
    return written


def predict_results(backend, task, infos, args, options):
    """`predict` on the image files of `infos`, `args.batch_size` at a time with live
    progress, each batch's outputs turned into per-image results."""
    from pix2seq import progress

    size = max(1, int(getattr(args, "batch_size", 8) or 8))
    results = []
    bar = progress.Progress("predict", len(infos))
    for start in range(0, len(infos), size):
        batch = infos[start:start + size]
        encoded = []
        for info in batch:
            with open(info["file"], "rb") as f:
                encoded.append(f.read())
        results += results_lib.to_results(predict(backend, task, encoded, args), batch, options)
        bar.update(start + len(batch))
    bar.close()
    return results


def run(backend, args, where="the model"):
    """Predict with `backend` (its `signature_names`), print and write what args ask for;
    `where` names the model in errors."""
    args.task = served_task(args.task, backend.signature_names, where)
    annotations = None
    if args.annotations:
        with open(args.annotations) as f:
            annotations = json.load(f)
    names = {c["id"]: c["name"] for c in (annotations or {}).get("categories", [])}
    infos = _image_infos(args.images, annotations)
    options = results_lib.ResultOptions(min_score=args.min_score, keypoint_category_ids=(args.person_class,))
    results = predict_results(backend, args.task, infos, args, options)
    _print(results, names)
    if args.json_out:
        for path in _write_json(args.json_out, results, args.task):
            print(f"wrote {path}")
    if args.viz:
        from PIL import Image

        from model import visualize

        os.makedirs(args.viz, exist_ok=True)
        for r in results:
            with Image.open(r["file"]) as im:
                picture = visualize.draw_result(im, r, names)
            out = os.path.join(args.viz, os.path.splitext(os.path.basename(r["file"]))[0] + ".png")
            picture.save(out)
            print(f"wrote {out}")
    return results


def main(args) -> int:
    for path in args.images:
        if not os.path.isfile(path):
            print(f"pix2seq predict: no such image file: {path}", file=sys.stderr)
            return 2
    try:
        if args.server:
            from serving.client import Pix2SeqClient

            with Pix2SeqClient(args.server, model_name=args.model_name) as backend:
                if args.person_class is None:
                    args.person_class = generate.keypoint_category(backend)
                run(backend, args, f"{args.model_name!r} at {args.server}")
        else:
            backend = SavedModelBackend(args.model)
            if args.person_class is None:  # an export without model_info: its config file
                args.person_class = generate.keypoint_category(
                    backend, signatures_lib.keypoint_category_id(backend.model_dir))
            run(backend, args, backend.model_dir)
    except MissingTaskError as e:
        print(f"pix2seq predict: {e}", file=sys.stderr)
        return 2
    return 0
