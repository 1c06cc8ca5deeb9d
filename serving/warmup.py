"""Run a version once before it takes traffic, so the first client does not pay for it.

The first call of a loaded signature optimizes its graph (for the decoding while-loops
this takes far longer than a request). TF Serving replays the requests stored in
`<version>/assets.extra/tf_serving_warmup_requests` (a TFRecord of PredictionLog; every
export writes one, model/warmup_requests.py) before marking a version AVAILABLE; we do
the same, and when a SavedModel ships no such file (an older export), call every
signature whose only inputs are images once with a small generated JPEG.
The version manager swaps a version in only after this has run.
"""
import logging
import os

import tensorflow as tf
from tensorflow.core.framework import types_pb2

from model import warmup_requests

log = logging.getLogger(__name__)

WARMUP_FILE = warmup_requests.WARMUP_FILE


def _recorded_requests(path: str):
    """(signature, {alias: Tensor}) for each Predict request in the version's warm-up file."""
    for name, inputs in warmup_requests.read(path):
        yield name, {alias: tf.constant(value) for alias, value in inputs.items()}


def _generated_requests(signature_defs, image_inputs):
    """One small JPEG for each signature whose inputs are all image inputs."""
    images = tf.constant([warmup_requests.sample_jpeg()])
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
