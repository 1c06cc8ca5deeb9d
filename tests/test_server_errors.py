"""Each bad request gets TF Serving's status code and a message naming the problem;
the server keeps answering valid requests afterwards."""
import io

import grpc
import numpy as np
import portpicker
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

from serving import handlers, image_check
from serving.client import Pix2SeqClient
from serving.server import ModelServer, ServerConfig
from serving_toy_model import encode_image, push_version, toy_model_dir

MAX_IMAGE_BYTES = 60_000
MAX_PIXELS = 120 * 120
MAX_MESSAGE = 256 * 1024
CODE = grpc.StatusCode


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("serving") / "pix2seq")
    push_version(toy_model_dir(0), base, 1)
    limits = handlers.RequestLimits(images=image_check.ImageLimits(MAX_IMAGE_BYTES, MAX_PIXELS))
    config = ServerConfig(base, port=portpicker.pick_unused_port(), poll_seconds=0,
                          max_message_bytes=MAX_MESSAGE, limits=limits)
    with ModelServer(config) as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    with Pix2SeqClient(server.address, max_message_bytes=4 * MAX_MESSAGE) as client:
        yield client


@pytest.fixture(scope="module")
def stub(client):
    return prediction_service_pb2_grpc.PredictionServiceStub(client._channel)


def _png(height, width, noise=False) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8) if noise else \
        np.full((height, width, 3), 127, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _corrupt_png_pixels() -> bytes:
    data = bytearray(encode_image(0, fmt="PNG"))
    start = data.find(b"IDAT") + 10
    for i in range(start, start + 30):  # structure intact, compressed pixels garbage
        data[i] ^= 0x55
    return bytes(data)


def _request(client, **changes):
    """A valid detect request, then `changes` applied to it (each a function of the request)."""
    request = client.predict_request("detect", [encode_image(1)])
    for change in changes.values():
        change(request)
    return request


def _images(*images):
    return lambda r: r.inputs["images"].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string))


# name -> (request changes, expected code, words the message must contain)
BAD_REQUESTS = {
    "not_an_image": (dict(i=_images(encode_image(2), b"this is not an image")), CODE.INVALID_ARGUMENT,
                     ["'images'[1]", "not a JPEG or PNG"]),
    "truncated_jpeg": (dict(i=_images(encode_image(3)[:-200])), CODE.INVALID_ARGUMENT,
                       ["'images'[0]", "truncated JPEG"]),
    "truncated_png": (dict(i=_images(encode_image(3, fmt="PNG")[:-40])), CODE.INVALID_ARGUMENT, ["truncated PNG"]),
    "corrupt_pixels": (dict(i=_images(_corrupt_png_pixels())), CODE.INVALID_ARGUMENT, ["PNG"]),
    "empty_batch": (dict(i=_images()), CODE.INVALID_ARGUMENT, ["'images'", "empty batch"]),
    "image_over_byte_limit": (dict(i=_images(_png(150, 150, noise=True))), CODE.RESOURCE_EXHAUSTED,
                              ["bytes", str(MAX_IMAGE_BYTES)]),
    "image_over_pixel_limit": (dict(i=_images(_png(100, 200))), CODE.RESOURCE_EXHAUSTED, ["100x200", str(MAX_PIXELS)]),
    "message_over_size_limit": (dict(i=_images(*[encode_image(4, size=(200, 200))] * 20)), CODE.RESOURCE_EXHAUSTED, []),
    "wrong_dtype": (dict(i=lambda r: r.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros(2, np.float32)))),
                    CODE.INVALID_ARGUMENT, ["'images'", "DT_FLOAT", "DT_STRING"]),
    "wrong_shape": (dict(i=lambda r: r.inputs["images"].CopyFrom(
        tf.make_tensor_proto([[encode_image(5)]], dtype=tf.string))), CODE.INVALID_ARGUMENT,
                    ["'images'", "shape [1,1]"]),
    "unknown_model": (dict(m=lambda r: setattr(r.model_spec, "name", "resnet")), CODE.NOT_FOUND, ["resnet"]),
    "no_model_name": (dict(m=lambda r: r.model_spec.ClearField("name")), CODE.INVALID_ARGUMENT, ["no name"]),
    "unknown_version": (dict(v=lambda r: r.model_spec.version.__setattr__("value", 7)), CODE.NOT_FOUND,
                        ["Specific(pix2seq, 7)"]),
    "version_label": (dict(v=lambda r: setattr(r.model_spec, "version_label", "stable")), CODE.INVALID_ARGUMENT,
                      ["version_label", "stable"]),
    "unknown_signature": (dict(s=lambda r: setattr(r.model_spec, "signature_name", "classify")),
                          CODE.FAILED_PRECONDITION, ['"classify" not found']),
    "missing_input": (dict(i=lambda r: r.inputs.pop("images")), CODE.INVALID_ARGUMENT,
                      ["Missing but required: {images}"]),
    "extra_input": (dict(i=lambda r: r.inputs["scale"].CopyFrom(tf.make_tensor_proto(1.0))), CODE.INVALID_ARGUMENT,
                    ["Sent extra: {scale}"]),
    "unknown_output_filter": (dict(o=lambda r: r.output_filter.append("masks")), CODE.INVALID_ARGUMENT,
                              ["output tensor alias not found in signature: masks"]),
}


def _call_bad(stub, client, name):
    changes, code, words = BAD_REQUESTS[name]
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(_request(client, **changes), timeout=30)
    return err.value, code, words


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_bad_request_gets_its_status_code(stub, client, name):
    error, code, words = _call_bad(stub, client, name)
    assert error.code() == code, error.details()
    for word in words:
        assert word in error.details(), (word, error.details())


def test_metadata_field_other_than_signature_def_is_invalid(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "pix2seq"
    request.metadata_field.append("tags")
    with pytest.raises(grpc.RpcError) as err:
        stub.GetModelMetadata(request, timeout=30)
    assert err.value.code() == CODE.INVALID_ARGUMENT and "tags" in err.value.details()


def test_valid_request_succeeds_after_every_bad_one(stub, client):
    want = client.predict("detect", [encode_image(1)])
    for name in BAD_REQUESTS:
        error, code, _ = _call_bad(stub, client, name)
        assert error.code() == code
        got = client.predict("detect", [encode_image(1)])
        for alias in want:
            np.testing.assert_array_equal(got[alias], want[alias])
    assert client.status()[0]["state"] == "AVAILABLE"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_header_size_matches_decoded_size(fmt):
    for size in [(1, 1), (24, 32), (300, 7)]:
        info = image_check.inspect_image(encode_image(0, size=size, fmt=fmt))
        assert (info.height, info.width) == size and info.format == fmt.lower()


def test_progressive_jpeg_is_accepted_and_truncation_anywhere_is_caught():
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(buffer, format="JPEG", progressive=True)
    data = buffer.getvalue()
    assert image_check.inspect_image(data).height == 40
    for cut in range(2, len(data) - 1, max(1, len(data) // 40)):
        with pytest.raises(ValueError):
            image_check.inspect_image(data[:cut])
