"""A seconds-fast stand-in SavedModel in the serving contract's style.

Input `images` (string [B] of encoded JPEG/PNG) and the contract's signature names
(detect = serving_default, segment, keypoints, caption, detect_and_describe; here all
of them take only `images`), written with `keras.export.ExportArchive` around a tiny
Keras model. The tests whose subject is the server (errors, concurrency, hot reload)
use it so 200 requests take seconds; `tests/test_server.py` also serves the real export
(`model/export.py`) and checks it against the in-process call.
"""
import atexit
import io
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

SIGNATURES = ("serving_default", "detect", "segment", "keypoints", "caption", "detect_and_describe")
_SIDE = 8


def _decode(images):
    def one(data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        return tf.image.resize(tf.cast(image, tf.float32) / 255.0, (_SIDE, _SIDE))

    return tf.map_fn(one, images, fn_output_signature=tf.TensorSpec([_SIDE, _SIDE, 3], tf.float32))


def export_toy_model(export_dir: str, seed: int = 0) -> None:
    """Write the toy SavedModel to `export_dir`; different seeds give different outputs."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((_SIDE, _SIDE, 3))
    features = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(8)(features))

    def detect(images):
        y = model(_decode(images))
        boxes = tf.sort(tf.reshape(tf.sigmoid(y[:, :4]), [-1, 1, 4]), axis=-1) * 100.0
        return {
            "boxes": boxes,
            "classes": tf.cast(tf.abs(y[:, 4:5]) * 10, tf.int32) + 1,
            "scores": tf.sigmoid(y[:, 5:6]),
            "num_detections": tf.ones_like(images, tf.int32),
        }

    def segment(images):
        out = detect(images)
        out["masks"] = tf.cast(tf.sigmoid(model(_decode(images)))[:, None, :, None] > 0.5, tf.uint8)
        return out

    def keypoints(images):
        out = detect(images)
        out["keypoints"] = tf.reshape(tf.sigmoid(model(_decode(images)))[:, :6], [-1, 1, 2, 3])
        return out

    def caption(images):
        y = model(_decode(images))
        return {"captions": tf.strings.join(["a thing ", tf.strings.as_string(y[:, 0], precision=3)])}

    def detect_and_describe(images):
        out = segment(images)
        out.update(keypoints(images))
        return out

    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = [tf.TensorSpec([None], tf.string, name="images")]
    for name, fn in [("serving_default", detect), ("detect", detect), ("segment", segment),
                     ("keypoints", keypoints), ("caption", caption),
                     ("detect_and_describe", detect_and_describe)]:
        archive.add_endpoint(name, tf.function(fn), input_signature=spec)
    archive.write_out(export_dir, verbose=False)


def encode_image(seed: int, size=(24, 32), fmt: str = "JPEG") -> bytes:
    """A small random RGB picture, encoded."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


_EXPORTS = {}


def toy_model_dir(seed: int = 0) -> str:
    """Path of a toy export for `seed`, written once per test process (copy it, don't modify it)."""
    if seed not in _EXPORTS:
        root = tempfile.mkdtemp(prefix="toy_export_")
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        path = os.path.join(root, "model")
        export_toy_model(path, seed)
        _EXPORTS[seed] = path
    return _EXPORTS[seed]


def push_version(source_dir: str, base_path: str, version: int) -> str:
    """Copy a SavedModel to `<base>/<version>` the safe way: into a hidden dir, then rename."""
    os.makedirs(base_path, exist_ok=True)
    staging = os.path.join(base_path, f".tmp-{version}")
    shutil.copytree(source_dir, staging)
    target = os.path.join(base_path, str(version))
    os.rename(staging, target)
    return target
