"""Run a version once before it takes traffic, so the first client does not pay for it.

The first call of a loaded signature optimizes its graph (for the decoding while-loops
this takes far longer than a request). TF Serving replays the requests stored in
`<version>/assets.extra/tf_serving_warmup_requests` (a TFRecord of PredictionLog)
before marking a version AVAILABLE; we do the same, and when a SavedModel ships no such
file, call every signature whose only inputs are images once with a small generated
JPEG. The version manager swaps a version in only after this has run.
"""
import logging
import os

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import prediction_log_pb2

log = logging.getLogger(__name__)

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def _sample_jpeg(side: int = 32) -> bytes:
    ramp = np.linspace(0, 255, side * side * 3, dtype=np.float32).reshape(side, side, 3)
    return tf.io.encode_jpeg(tf.constant(ramp.astype(np.uint8))).numpy()


def _recorded_requests(path: str):
    """(signature, {alias: Tensor}) for each Predict request in the version's warm-up file."""
    for record in tf.data.TFRecordDataset(path):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if entry.WhichOneof("log_type") != "predict_log":
            continue  # classify/regress logs have no predict signature to run here
        request = entry.predict_log.request
        inputs = {alias: tf.constant(tf.make_ndarray(proto)) for alias, proto in request.inputs.items()}
        yield request.model_spec.signature_name or "serving_default", inputs


def _generated_requests(signature_defs, image_inputs):
    """One small JPEG for each signature whose inputs are all image inputs."""
    images = tf.constant([_sample_jpeg()])
    for name, signature_def in signature_defs.items():
        inputs = signature_def.inputs
        if inputs and all(a in image_inputs and i.dtype == types_pb2.DT_STRING for a, i in inputs.items()):
            yield name, {alias: images for alias in inputs}


def warm_up(model, image_inputs=("images",)) -> int:
    """Call the signatures of a LoadedVersion once; returns how many calls succeeded.

    A failing warm-up call is logged, not raised: the version can still answer the
    requests that do work, exactly as without warm-up.
    """
    path = os.path.join(model.path, WARMUP_FILE)
    if tf.io.gfile.exists(path):
        requests = _recorded_requests(path)
    else:
        requests = _generated_requests(model.signature_defs, image_inputs)
    done = 0
    for name, inputs in requests:
        if name not in model.signatures:
            log.warning("warm-up request for unknown signature %r in %s", name, model.path)
            continue
        try:
            model.signatures[name](**inputs)
            done += 1
        except Exception as e:  # noqa: BLE001  (logged; serving goes on)
            log.warning("warm-up call of %r on %s failed: %s", name, model.path, e)
    return done
