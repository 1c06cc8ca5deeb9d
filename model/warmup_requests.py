"""TF Serving warm-up records, written into every exported SavedModel.

The first call of a signature optimizes its graph, which for the decoding while-loops
takes far longer than a request. TF Serving replays
`<version>/assets.extra/tf_serving_warmup_requests` (a TFRecord file of
`PredictionLog`s, at most 1000) before it marks a version AVAILABLE; `pix2seq serve`
replays the same file (serving/warmup.py). `write` records one Predict request per
signature and batch size; `read` yields them back as (signature, {alias: ndarray}).

Request inputs are made from the signature's input names, so a new input name fails
the export (`ValueError`) instead of shipping a record that cannot run:
`images` small JPEGs, `examples` serialized tf.Examples holding them (the ingested
`image/encoded` feature), `boxes` / `classes` one box per image, scalar options the
value the export passes (the plain signature's defaults).
"""
import os

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from data import features

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# A client's single image and a small batch: the batch sizes a server sees most.
DEFAULT_BATCH_SIZES = (1, 4)
_SIDE = 32  # the sample image is _SIDE x _SIDE pixels
_BOX = [_SIDE / 8, _SIDE / 8, _SIDE * 7 / 8, _SIDE * 7 / 8]  # (ymin, xmin, ymax, xmax) pixels


def sample_jpeg(side: int = _SIDE) -> bytes:
    """A small colour-ramp JPEG: decodes like any photo, costs nothing to store."""
    ramp = np.linspace(0, 255, side * side * 3, dtype=np.float32).reshape(side, side, 3)
    return tf.io.encode_jpeg(tf.constant(ramp.astype(np.uint8))).numpy()


def _image_example(image: bytes, side: int = _SIDE) -> bytes:
    """An ingested-layout tf.Example (data/features.py) of the image, without annotations."""
    record = {"image_id": 0, "height": side, "width": side, "file_name": "warmup.jpg"}
    return features.encode_example(record, image, "jpeg", num_keypoints=0).SerializeToString()


def sample_inputs(input_names, batch_size: int, scalars: dict) -> dict:
    """{name: ndarray} for one request of `batch_size` images.

    Args:
      input_names: the signature's input names.
      scalars: value of each scalar option input (e.g. `{"seed": 0, "top_p": 0.4}`).
    """
    image = sample_jpeg()
    made = {
        "images": lambda: np.array([image] * batch_size, dtype=object),
        "examples": lambda: np.array([_image_example(image)] * batch_size, dtype=object),
        "boxes": lambda: np.array([[_BOX]] * batch_size, np.float32),
        "classes": lambda: np.ones([batch_size, 1], np.int32),
    }
    inputs = {}
    for name in input_names:
        if name in made:
            inputs[name] = made[name]()
        elif name in scalars:
            inputs[name] = np.asarray(scalars[name])
        else:
            raise ValueError(f"No warm-up value for input {name!r}; known: {sorted(made)} and scalars "
                             f"{sorted(scalars)}.")
    return inputs


def predict_log(signature: str, inputs: dict, dtypes: dict) -> prediction_log_pb2.PredictionLog:
    """A PredictionLog holding one PredictRequest; `dtypes` {name: tf.DType} of the inputs."""
    entry = prediction_log_pb2.PredictionLog()
    request = entry.predict_log.request
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value, dtype=dtypes[name]))
    return entry


def write(export_dir: str, requests) -> str:
    """Write `requests` (PredictionLogs) to `<export_dir>/assets.extra/...`; returns the path."""
    path = os.path.join(export_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for entry in requests:
            writer.write(entry.SerializeToString())
    return path


def read(path: str):
    """(signature, {alias: ndarray}) for each Predict request of a warm-up file; other
    log types (classify, regress, ...) have no predict signature and are skipped."""
    for record in tf.data.TFRecordDataset(path):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if entry.WhichOneof("log_type") != "predict_log":
            continue
        request = entry.predict_log.request
        inputs = {alias: tf.make_ndarray(proto) for alias, proto in request.inputs.items()}
        yield request.model_spec.signature_name or "serving_default", inputs
