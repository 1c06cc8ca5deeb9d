"""`pix2seq serve` answers like the in-process SavedModel, through the real TF Serving stubs."""
import os
import signal
import subprocess
import sys

import grpc
import numpy as np
import portpicker
import pytest
import tensorflow as tf

from serving.client import Pix2SeqClient, to_numpy_outputs
from serving.server import ModelServer, ServerConfig
from serving_toy_model import SIGNATURES, encode_image, push_version, toy_model_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def base_path(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("serving") / "pix2seq")
    push_version(toy_model_dir(0), base, 1)
    return base


@pytest.fixture(scope="module")
def client(base_path):
    config = ServerConfig(base_path, host="127.0.0.1", port=portpicker.pick_unused_port(), poll_seconds=0)
    with ModelServer(config) as server, Pix2SeqClient(server.address) as client:
        yield client


@pytest.fixture(scope="module")
def in_process(base_path):
    return tf.saved_model.load(os.path.join(base_path, "1"))


def _assert_same(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for alias in want:
        assert got[alias].dtype == want[alias].dtype, alias
        np.testing.assert_array_equal(got[alias], want[alias], err_msg=alias)


@pytest.mark.parametrize("signature", SIGNATURES)
def test_predict_equals_in_process_call(client, in_process, signature):
    images = [encode_image(1), encode_image(2, size=(40, 18), fmt="PNG")]
    want = to_numpy_outputs(in_process.signatures[signature](images=tf.constant(images)))
    got, version = client.predict_with_version(signature, images)
    assert version == 1
    _assert_same(got, want)


def test_default_signature_is_serving_default(client, in_process):
    images = [encode_image(3)]
    want = to_numpy_outputs(in_process.signatures["serving_default"](images=tf.constant(images)))
    _assert_same(client.predict("", images), want)


def test_output_filter_returns_only_requested_outputs(client, in_process):
    images = [encode_image(4)]
    want = to_numpy_outputs(in_process.signatures["detect"](images=tf.constant(images)))
    got = client.predict("detect", images, output_filter=["scores", "boxes"])
    _assert_same(got, {k: want[k] for k in ("scores", "boxes")})


def test_specific_version_is_served(client):
    _, version = client.predict_with_version("detect", [encode_image(5)], version=1)
    assert version == 1


def test_metadata_returns_the_signature_map(client, in_process):
    meta = client.metadata()
    assert meta["version"] == 1
    assert set(meta["signatures"]) == set(SIGNATURES)
    for name, sig in meta["signatures"].items():
        assert sig["inputs"] == {"images": ("string", (None,))}
        assert sig["method_name"] == "tensorflow/serving/predict"
        outputs = in_process.signatures[name].structured_outputs
        assert {k: v[0] for k, v in sig["outputs"].items()} == {k: t.dtype.name for k, t in outputs.items()}


def test_status_reports_the_available_version(client):
    assert client.status() == [{"version": 1, "state": "AVAILABLE", "error_code": 0, "error_message": ""}]
    assert client.status(version=1)[0]["state"] == "AVAILABLE"
    with pytest.raises(grpc.RpcError) as err:
        client.status(version=9)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def _wait_for_line(proc, needle, limit=200):
    lines = []
    for _ in range(limit):
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return line
    raise AssertionError(f"server never printed {needle!r}:\n{''.join(lines)}")


def test_cli_serves_and_stops_cleanly_on_sigterm(base_path):
    port = portpicker.pick_unused_port()
    cmd = [sys.executable, "-m", "pix2seq.cli", "serve", "--model-base-path", base_path,
           "--port", str(port), "--file-system-poll-wait-seconds", "0", "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert f"127.0.0.1:{port}" in _wait_for_line(proc, "pix2seq serve: model")
        with Pix2SeqClient(f"127.0.0.1:{port}") as client:
            assert client.predict("detect", [encode_image(6)])["boxes"].shape == (1, 1, 4)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "pix2seq serve: stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_models_config_is_a_valid_model_server_config():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    with open(os.path.join(REPO, "serving", "configs", "models.config")) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == ServerConfig("unused").model_name
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.latest.num_versions == 1
