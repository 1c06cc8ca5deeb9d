"""Predict / GetModelMetadata / GetModelStatus, request proto in, response proto out.

No gRPC here: each function raises `errors.ServingError` for a bad request, so the
rules are testable without a socket and the servicer stays a thin adapter. The order
of checks follows TF Serving: resolve the servable from the ModelSpec, find the
signature, match the inputs and output_filter against it, check dtypes and shapes,
then (our addition) look at the image bytes before any graph runs.
"""
import dataclasses

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)

from serving import errors, image_check

DEFAULT_SIGNATURE = "serving_default"
SIGNATURE_DEF_FIELD = "signature_def"


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """Per-request limits checked before the graph runs."""

    images: image_check.ImageLimits = image_check.ImageLimits()
    image_inputs: tuple = ("images",)  # string inputs holding encoded images
    max_batch: int = 0  # 0: no limit


def resolve(manager, model_spec):
    """The LoadedVersion a ModelSpec asks for (TF Serving's ServableRequestFromModelSpec)."""
    if not model_spec.name:
        raise errors.invalid_argument("ModelSpec has no name specified.")
    choice = model_spec.WhichOneof("version_choice")
    version = model_spec.version.value if choice == "version" else None
    if model_spec.name != manager.model_name:
        raise errors.servable_not_found(model_spec.name, version)
    if choice == "version_label":
        raise errors.invalid_argument(
            f"ModelSpec has 'version_label' set ({model_spec.version_label!r}), but it is not "
            "currently allowed by the server: version labels are not configured; ask by 'version'."
        )
    return manager.get(version)


def _shape_str(dims) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _check_tensor(alias, proto, info) -> np.ndarray:
    """Request TensorProto -> ndarray matching the signature's TensorInfo (dtype, shape)."""
    if proto.dtype != info.dtype:
        raise errors.invalid_argument(
            f"input '{alias}' has dtype {types_pb2.DataType.Name(proto.dtype)}, "
            f"the signature expects {types_pb2.DataType.Name(info.dtype)}"
        )
    try:
        value = tf.make_ndarray(proto)
    except Exception as e:
        raise errors.invalid_argument(f"input '{alias}' is not a valid TensorProto: {e}") from None
    expected = info.tensor_shape
    if not expected.unknown_rank:
        dims = [d.size for d in expected.dim]
        if value.ndim != len(dims) or any(d >= 0 and d != s for d, s in zip(dims, value.shape)):
            raise errors.invalid_argument(
                f"input '{alias}' has shape {_shape_str(value.shape)}, the signature expects "
                f"{_shape_str(dims)} (-1 = any size)"
            )
    return value


def _check_images(alias, value, limits: RequestLimits) -> None:
    if value.ndim == 0 or value.shape[0] == 0:
        raise errors.invalid_argument(f"input '{alias}' is an empty batch: send at least one encoded image")
    if limits.max_batch and value.shape[0] > limits.max_batch:
        raise errors.resource_exhausted(
            f"input '{alias}' has {value.shape[0]} images, over the server limit of {limits.max_batch} per request"
        )
    image_check.check_images(value.ravel(), limits.images, alias)


def _prepare_inputs(signature_def, request, limits: RequestLimits) -> dict:
    sent, expected = set(request.inputs), set(signature_def.inputs)
    if sent != expected:
        raise errors.invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
            f"Missing but required: {{{','.join(sorted(expected - sent))}}}."
        )
    inputs = {}
    for alias, info in signature_def.inputs.items():
        value = _check_tensor(alias, request.inputs[alias], info)
        if info.dtype == types_pb2.DT_STRING and alias in limits.image_inputs:
            _check_images(alias, value, limits)
        inputs[alias] = tf.constant(value, dtype=tf.dtypes.as_dtype(info.dtype))
    return inputs


def _output_aliases(signature_def, output_filter) -> list:
    if not output_filter:
        return list(signature_def.outputs)
    seen = []
    for alias in output_filter:
        if alias not in signature_def.outputs:
            raise errors.invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                f"the set {{{','.join(sorted(signature_def.outputs))}}}."
            )
        if alias in seen:
            raise errors.invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen


def predict(manager, request: predict_pb2.PredictRequest, limits: RequestLimits) -> predict_pb2.PredictResponse:
    """Run one PredictRequest on the version its ModelSpec resolves to."""
    model = resolve(manager, request.model_spec)
    name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    if name not in model.signature_defs:
        raise errors.failed_precondition(
            f'Serving signature key "{name}" not found. Available: {", ".join(sorted(model.signature_defs))}.'
        )
    signature_def = model.signature_defs[name]
    inputs = _prepare_inputs(signature_def, request, limits)
    aliases = _output_aliases(signature_def, request.output_filter)
    try:
        outputs = model.signatures[name](**inputs)
    except tf.errors.OpError as e:
        raise errors.from_op_error(e) from None
    response = predict_pb2.PredictResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = model.version
    response.model_spec.signature_name = name
    for alias in aliases:
        response.outputs[alias].CopyFrom(tf.make_tensor_proto(outputs[alias].numpy()))
    return response


def model_metadata(manager, request: get_model_metadata_pb2.GetModelMetadataRequest):
    """The SignatureDefMap of the resolved version, packed under "signature_def"."""
    if not request.HasField("model_spec"):
        raise errors.invalid_argument("Missing ModelSpec")
    if not request.metadata_field:
        raise errors.invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
        if field != SIGNATURE_DEF_FIELD:
            raise errors.invalid_argument(f"Metadata field {field} is not supported")
    model = resolve(manager, request.model_spec)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in model.signature_defs.items():
        signature_map.signature_def[name].CopyFrom(signature_def)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = model.version
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
    return response


def model_status(manager, request: get_model_status_pb2.GetModelStatusRequest):
    """State of every version seen (or of the one asked for), like TF Serving's ModelService."""
    if not request.HasField("model_spec"):
        raise errors.invalid_argument("Missing ModelSpec")
    spec = request.model_spec
    states = manager.states() if spec.name == manager.model_name else {}
    if spec.HasField("version"):
        if spec.version.value not in states:
            raise errors.not_found(f"Could not find version {spec.version.value} of model {spec.name}")
        states = {spec.version.value: states[spec.version.value]}
    elif not states:
        raise errors.not_found(f"Could not find any versions of model {spec.name}")
    response = get_model_status_pb2.GetModelStatusResponse()
    for version in sorted(states):
        status = response.model_version_status.add()
        status.version = version
        status.state = get_model_status_pb2.ModelVersionStatus.State.Value(states[version].state)
        if states[version].error:
            status.status.error_code = error_codes_pb2.UNKNOWN
            status.status.error_message = states[version].error
    return response
