"""Python client for a served pix2seq model (TF Serving or `pix2seq serve`).

Thin layer over the real `tensorflow_serving.apis` stubs: it builds the PredictRequest
from encoded image bytes and turns the response back into the same dict of numpy arrays
an in-process call of the SavedModel signature gives (`{k: v.numpy()}`), so code and
pictures downstream do not care where the model ran. gRPC errors are raised as they
come (`grpc.RpcError` with `.code()` and `.details()`).

`predict_results` goes one step further: the per-image results of model/results.py
(boxes clipped to each image, masks at its size, COCO ids), the conversion the
evaluator and `pix2seq predict` use.

Example:
  client = Pix2SeqClient("127.0.0.1:8500")
  out = client.predict("detect", [open("cat.jpg", "rb").read()])
  out["boxes"], out["scores"]
  client.predict_results("detect_and_describe", images, image_ids=[42])[0]["objects"]
"""
import io
import time

import grpc
import numpy as np
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from model import results
from model import signatures as signatures_lib

DEFAULT_SIGNATURE = "serving_default"


def _model_spec(spec, name, version=None, signature_name=None):
    spec.name = name
    if version is not None:
        spec.version.value = int(version)
    if signature_name:
        spec.signature_name = signature_name


class Pix2SeqClient:
    """Calls one model on one server.

    Args:
      target: "host:port" of the gRPC endpoint.
      model_name: `model_spec.name` (TF Serving's --model_name).
      timeout: seconds per call.
      max_message_bytes: largest request/response this client sends or accepts.
    """

    def __init__(self, target: str, model_name: str = "pix2seq", timeout: float = 60.0,
                 max_message_bytes: int = 64 * 1024 * 1024):
        self.target = target
        self.model_name = model_name
        self.timeout = timeout
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        self._channel = grpc.insecure_channel(target, options=options)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._dtypes = {}  # signature -> {input alias: dtype name}, filled on first use

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def predict_request(self, signature: str, images, version=None, output_filter=None, **inputs):
        """The PredictRequest `predict` sends (exposed for batching tools and tests).

        `images` is a list of encoded JPEG/PNG bytes; extra keyword `inputs` (the `boxes`
        of `segment`, the options of `*_with_options`) are sent as tensors under their
        alias, converted to the dtype the signature declares.
        """
        request = predict_pb2.PredictRequest()
        _model_spec(request.model_spec, self.model_name, version, signature or DEFAULT_SIGNATURE)
        if images is not None:
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string))
        expected = self._input_dtypes(signature or DEFAULT_SIGNATURE) if inputs else {}
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(tf.make_tensor_proto(value, dtype=expected.get(alias)))
        request.output_filter.extend(output_filter or ())
        return request

    def _input_dtypes(self, signature: str) -> dict:
        """alias -> dtype name of a signature's inputs (asked once per signature, then cached),
        so `predict(..., temperature=0.5)` sends float32 where a plain float would be double."""
        if signature not in self._dtypes:
            signatures = self.metadata()["signatures"]
            self._dtypes.update(
                {name: {alias: dtype for alias, (dtype, _) in sig["inputs"].items()}
                 for name, sig in signatures.items()}
            )
        return self._dtypes.get(signature, {})

    def predict_with_version(self, signature: str, images, version=None, output_filter=None, **inputs):
        """`predict`, plus the model version that answered (from the response's model_spec)."""
        request = self.predict_request(signature, images, version, output_filter, **inputs)
        response = self._predict.Predict(request, timeout=self.timeout)
        outputs = {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}
        return outputs, response.model_spec.version.value

    def predict(self, signature: str, images, version=None, output_filter=None, **inputs) -> dict:
        """Run `signature` on a batch of encoded images; dict of numpy arrays by output alias."""
        return self.predict_with_version(signature, images, version, output_filter, **inputs)[0]

    def predict_results(self, signature: str, images, image_ids=None, options=None, version=None,
                        **inputs) -> list:
        """`predict`, then model/results.py: one per-image result per image (`image_ids`
        default 1..B; sizes read from the image headers; `options` a ResultOptions)."""
        outputs = self.predict(signature, images, version, **inputs)
        ids = list(image_ids) if image_ids is not None else list(range(1, len(images) + 1))
        infos = []
        for image_id, data in zip(ids, images):
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
            infos.append({"image_id": image_id, "height": height, "width": width})
        return results.to_results(outputs, infos, options or results.ResultOptions())

    @property
    def signature_names(self) -> list:
        """The served version's signature names (GetModelMetadata)."""
        return sorted(self.metadata()["signatures"])

    def metadata(self, version=None) -> dict:
        """Signatures of the served version: {name: {"inputs"|"outputs": {alias: (dtype, shape)}}}.

        The version that answered is under the key "version"; `None` dims are any size;
        "tasks" are the tasks the model serves, told by its signature names (a model
        exports the signatures of the tasks it was trained for, model/signatures.py).
        """
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        _model_spec(request.model_spec, self.model_name, version)
        request.metadata_field.append("signature_def")
        response = self._predict.GetModelMetadata(request, timeout=self.timeout)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)

        def describe(tensor_infos):
            return {
                alias: (
                    tf.dtypes.as_dtype(info.dtype).name,
                    None if info.tensor_shape.unknown_rank
                    else tuple(None if d.size < 0 else d.size for d in info.tensor_shape.dim),
                )
                for alias, info in tensor_infos.items()
            }

        signatures = {
            name: {"inputs": describe(sig.inputs), "outputs": describe(sig.outputs), "method_name": sig.method_name}
            for name, sig in signature_map.signature_def.items()
        }
        return {"version": response.model_spec.version.value, "signatures": signatures,
                "tasks": signatures_lib.tasks_of(signatures, {n: s["outputs"] for n, s in signatures.items()})}

    def status(self, version=None) -> list[dict]:
        """[{version, state, error_code, error_message}] from ModelService.GetModelStatus."""
        request = get_model_status_pb2.GetModelStatusRequest()
        _model_spec(request.model_spec, self.model_name, version)
        response = self._models.GetModelStatus(request, timeout=self.timeout)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [
            {
                "version": s.version,
                "state": state_name(s.state),
                "error_code": int(s.status.error_code),
                "error_message": s.status.error_message,
            }
            for s in response.model_version_status
        ]

    def wait_until_available(self, timeout: float = 60.0, poll: float = 0.1) -> int:
        """Block until some version is AVAILABLE; returns it (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                available = [s["version"] for s in self.status() if s["state"] == "AVAILABLE"]
                if available:
                    return max(available)
            except grpc.RpcError as e:
                last = e
            time.sleep(poll)
        raise TimeoutError(f"no available version of {self.model_name!r} at {self.target} after {timeout} s ({last})")


def to_numpy_outputs(outputs) -> dict:
    """An in-process signature's output dict as numpy arrays, the form `predict` returns."""
    return {alias: np.asarray(value.numpy() if hasattr(value, "numpy") else value) for alias, value in outputs.items()}
