"""Predictions as per-image results: the task steps behind `pix2seq predict` and `model.generate`.

`run_task(backend, task, images, ...)` turns a task ("detect", "segment", "keypoints",
"caption", "all") into calls of the serving signatures (docs/CONTRACTS.md) on
encoded images: segment = detect, then segment on the detections; keypoints =
detect, then keypoints on the person detections; all = `detect_and_describe`. Any
sampling option given switches to the `*_with_options` signatures. A *backend* is
any object with `predict(signature, images, **inputs) -> {name: np.ndarray}`: the
SavedModel in process or over gRPC (pix2seq/predict_cli.py) or, here, `KerasBackend`,
which runs the same signature functions (model/export.py) on a Keras model without
exporting it. model/results.py turns the outputs into per-image results, so
`model.generate(...)` and `pix2seq predict` on an export of the model agree.
"""
import io
import os

import numpy as np

import pix2seq  # noqa: F401  (Keras 3 guard)
from model import results as results_lib
from model import signatures
from model.export import signature_functions
from model.serving_graph import PAPER_DEFAULTS, InferenceGraph

TASKS = ("detect", "segment", "keypoints", "caption", "all")
# Sampling options of each signature's `_with_options` twin (model/export.py).
SIGNATURE_OPTIONS = {"detect": ("max_objects", "temperature", "top_p", "seed"),
                     "segment": ("num_samples", "temperature", "top_p", "seed"),
                     "keypoints": ("temperature", "top_p", "seed"),
                     "caption": ("temperature", "top_p", "seed"),
                     "detect_and_describe": ("max_objects", "temperature", "top_p", "num_samples", "seed")}
OPTION_NAMES = ("max_objects", "temperature", "top_p", "num_samples", "seed")


def _defaults(defaults):
    """{signature: {option: value}}: what an option left out means (the paper's, seed 0)."""
    d = defaults or PAPER_DEFAULTS
    det = {"max_objects": 1 << 16, **d["detection"], "seed": 0}
    return {"detect": det, "segment": {**d["segmentation"], "seed": 0}, "keypoints": {**d["keypoints"], "seed": 0},
            "caption": {**d["captioning"], "seed": 0},
            "detect_and_describe": {**det, "num_samples": d["segmentation"]["num_samples"]}}


def _call(backend, name, images, options, defaults, **inputs):
    """`name`, or `name_with_options` (missing options from `defaults`) when one is given."""
    given = {n: options[n] for n in SIGNATURE_OPTIONS[name] if options.get(n) is not None}
    if not given:
        return backend.predict(name, images, **inputs)
    full = {n: given.get(n, defaults[name][n]) for n in SIGNATURE_OPTIONS[name]}
    return backend.predict(f"{name}_with_options", images, **inputs, **full)


def run_task(backend, task, images, person_class=1, defaults=None, **options):
    """Run `task` on encoded images (bytes) through `backend`; returns the outputs
    model/results.py reads. `person_class`: the category id keypoints are decoded for;
    options (None: the signature's default): max_objects, temperature (<= 0: greedy),
    top_p, num_samples, seed."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; expected one of {TASKS}")
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise ValueError(f"Unknown sampling options {unknown}; expected names from {OPTION_NAMES}")
    d = _defaults(defaults)
    if task in ("caption", "all"):
        return _call(backend, "caption" if task == "caption" else "detect_and_describe", images, options, d)
    found = _call(backend, "detect", images, options, d)
    if task == "detect":
        return found
    if task == "segment":
        return {**found, **_call(backend, "segment", images, options, d, boxes=found["boxes"],
                                 classes=found["classes"])}
    person = found["classes"] == person_class
    found = {**found, "classes": np.where(person, found["classes"], 0),
             "scores": np.where(person, found["scores"], 0.0)}
    boxes = np.where(person[..., None], found["boxes"], 0.0).astype(np.float32)
    return {**found, **_call(backend, "keypoints", images, options, d, boxes=boxes)}


def keypoint_category(backend, default=1):
    """The category id whose detections get keypoints, asked of the model itself (its
    `model_info` signature: in process and over gRPC alike); `default` for a model
    exported without that signature."""
    if signatures.MODEL_INFO not in backend.signature_names:
        return default
    return int(backend.predict(signatures.MODEL_INFO, None)["keypoint_category_id"])


def image_info(path, index, ids=None):
    """The per-image record of a file: `file`, `image_id` (from `ids` {file name: id},
    else a numeric file stem, else index + 1), `height`, `width`."""
    from PIL import Image

    name = os.path.basename(path)
    stem = os.path.splitext(name)[0]
    image_id = (ids or {}).get(name, int(stem) if stem.isdigit() else index + 1)
    with Image.open(path) as im:
        width, height = im.size
    return {"file": path, "image_id": image_id, "height": height, "width": width}


class KerasBackend:
    """The serving signatures' functions on a Keras `Pix2SeqModel`, traced once, without
    exporting (the backend interface of `run_task`)."""

    def __init__(self, model):
        import tensorflow as tf

        self._tf = tf
        self.caption_vocab_file = model.caption_vocab_file
        self.graph = InferenceGraph(model, model.caption_vocab_file)
        self._functions = signature_functions(self.graph)

    def predict(self, signature, images, **inputs):
        fn, specs = self._functions[signature]
        feed = {"images": self._tf.constant(list(images), self._tf.string), **inputs}
        missing = sorted({s.name for s in specs} - set(feed))
        if missing:
            raise ValueError(f"signature {signature!r} needs inputs {missing}")
        out = fn(*[self._tf.constant(feed[s.name], s.dtype) for s in specs])
        return {k: v.numpy() for k, v in out.items()}


def _as_items(images):
    """One image or a sequence/batch of them -> a list of single images."""
    if isinstance(images, (str, bytes, os.PathLike)):
        return [images]
    if hasattr(images, "shape") and len(images.shape) in (3, 4):
        array = np.asarray(images)
        return [array] if array.ndim == 3 else list(array)
    return list(images)


def _uint8(image):
    """Pixels [H, W, 3], uint8 or floats in [0, 1] -> uint8 numpy."""
    pixels = np.asarray(image)
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise ValueError(f"an image array must be [H, W, 3]. Received shape: {pixels.shape}")
    if pixels.dtype != np.uint8:
        pixels = np.clip(np.round(pixels.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return pixels


def encode_image(item, index):
    """A file path, encoded bytes or pixels [H, W, 3] (uint8, or floats in [0, 1]) ->
    (encoded bytes, per-image record). Pixels are PNG-encoded: lossless, so the model
    sees exactly these pixels."""
    from PIL import Image

    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        with open(path, "rb") as f:
            return f.read(), image_info(path, index)
    if isinstance(item, bytes):
        data = item
    else:
        buffer = io.BytesIO()
        Image.fromarray(_uint8(item)).save(buffer, format="PNG")
        data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
    return data, {"image_id": index + 1, "height": height, "width": width}


def backend_for(model):
    """The model's `KerasBackend`, made once per caption vocabulary."""
    backend = getattr(model, "_generate_backend", None)
    if backend is None or backend.caption_vocab_file != model.caption_vocab_file:
        backend = KerasBackend(model)
        object.__setattr__(model, "_generate_backend", backend)  # not a Keras-tracked attribute
    return backend


def generate(model, images, task="detect", min_score=0.0, person_class=None, batch_size=8, **sampling):
    """`model.generate`: per-image results (model/results.py) of `task` on `images`.

    Args:
      images: a file path, encoded bytes, pixels [H, W, 3], a batch [B, H, W, 3], or a
        list of these (numpy or tensors; uint8, or floats in [0, 1]).
      task: one of `TASKS`.
      min_score: leave out detections scoring below.
      person_class: category id that gets keypoints (default: the model's keypoint class).
      batch_size: images per model call.
      **sampling: max_objects, temperature (<= 0: greedy), top_p, num_samples, seed
        (defaults: the paper's settings, seed 0, as the serving signatures).
    """
    backend = backend_for(model)
    if person_class is None:
        person_class = backend.graph.keypoint_category_id
    options = results_lib.ResultOptions(min_score=min_score, keypoint_category_ids=(int(person_class),))
    encoded = [encode_image(item, i) for i, item in enumerate(_as_items(images))]
    out = []
    for start in range(0, len(encoded), max(1, int(batch_size))):
        chunk = encoded[start:start + batch_size]
        outputs = run_task(backend, task, [data for data, _ in chunk], person_class, **sampling)
        out += results_lib.to_results(outputs, [info for _, info in chunk], options)
    return out


def draw(image, result, category_names=None):
    """A notebook picture of one result (model/visualize.py): `image` is a file path,
    pixels [H, W, 3] or a PIL image; returns a PIL image."""
    from PIL import Image

    from model import visualize

    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as im:
            return visualize.draw_result(im, result, category_names)
    if not isinstance(image, Image.Image):
        image = Image.fromarray(_uint8(image))
    return visualize.draw_result(image, result, category_names)
