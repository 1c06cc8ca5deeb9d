"""`pix2seq serve` answers like the in-process SavedModel, through the real TF Serving stubs."""
import logging
import os
import signal
import subprocess
import sys

import grpc
import numpy as np
import portpicker
import pytest
import tensorflow as tf

import tiny_export
from model import export
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


@pytest.mark.slow
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
    assert meta["tasks"] == ["detection", "segmentation", "keypoints", "captioning"]  # told by the names
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


@pytest.mark.slow
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


# --- the real export (model/export.py): the run's shared tiny random-weights export ---
REAL_SIGNATURES = ("detect", "segment", "keypoints", "caption", "detect_and_describe", "caption_with_options")


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("serving_real") / "pix2seq"
    base.mkdir()
    os.symlink(tiny_export.exported_tiny(tmp_path_factory), base / "1")  # a version, as TF Serving lays them out
    config = ServerConfig(str(base), port=portpicker.pick_unused_port(), poll_seconds=0)
    logger, lines = logging.getLogger("serving.version_manager"), _Lines()  # what the server logs
    level = logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    try:
        with ModelServer(config) as server:
            server.log_lines = lines.lines
            yield server
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _real_inputs(signature, images, in_process):
    """Extra inputs a signature needs, taken from an in-process detect call."""
    det = in_process["detect"](images=tf.constant(images))
    extra = {"segment": {"boxes": det["boxes"], "classes": det["classes"]},
             "keypoints": {"boxes": det["boxes"]},
             "caption_with_options": {"temperature": tf.constant(0.7), "top_p": tf.constant(0.9),
                                      "seed": tf.constant(3)}}
    return {k: v.numpy() for k, v in extra.get(signature, {}).items()}


@pytest.mark.slow
def test_warmup_file_parses_and_every_record_runs(real_server):
    """The export's warm-up file: one Predict request per signature (and serving_default) and
    batch size, each of which the server answered when it loaded the version, before serving."""
    from model import warmup_requests
    from model.signatures import MODEL_INFO, SIGNATURES, read_signature_defs

    loaded = real_server.manager.get()
    records = list(warmup_requests.read(os.path.join(loaded.path, warmup_requests.WARMUP_FILE)))
    defs = read_signature_defs(loaded.path)
    batch = lambda inputs: len(inputs.get("images", inputs.get("examples")))  # noqa: E731
    asked = [n for n in SIGNATURES if n != MODEL_INFO] + ["serving_default"]  # every one with an input
    assert sorted((name, batch(inputs)) for name, inputs in records) == sorted(
        (name, b) for name in asked for b in warmup_requests.DEFAULT_BATCH_SIZES)
    for name, inputs in records:
        assert set(inputs) == set(defs[name].inputs)
    loaded_lines = [line for line in real_server.log_lines if line.startswith("loaded pix2seq version 1 ")]
    assert len(loaded_lines) == 1 and loaded_lines[0].endswith(f", {len(records)} warm-up requests answered")


@pytest.mark.slow
@pytest.mark.parametrize("signature", ("serving_default",) + REAL_SIGNATURES)
def test_real_export_over_grpc_equals_in_process_call(real_server, signature):
    # The in-process side calls the same SavedModel the server loaded (tf.saved_model.load of
    # <base>/1), directly, without gRPC: loading it twice would double this test's cost.
    in_process = real_server.manager.get().signatures
    images = [encode_image(11, size=(48, 40)), encode_image(12, size=(30, 64), fmt="PNG")]
    extra = _real_inputs(signature, images, in_process)
    want = to_numpy_outputs(in_process[signature](
        images=tf.constant(images), **{k: tf.constant(v) for k, v in extra.items()}))
    with Pix2SeqClient(real_server.address) as client:
        got, version = client.predict_with_version(signature, images, **extra)
    assert version == 1
    _assert_same(got, want)


@pytest.mark.slow
def test_real_export_metadata_lists_its_signatures_and_inputs(real_server):
    with Pix2SeqClient(real_server.address) as client:
        signatures = client.metadata()["signatures"]
    assert set(signatures) == {"serving_default", *export.SIGNATURES}
    assert signatures["segment"]["inputs"] == {
        "images": ("string", (None,)), "boxes": ("float32", (None, None, 4)), "classes": ("int32", (None, None))}
    assert signatures["detect"]["outputs"]["boxes"] == ("float32", (None, tiny_export.TINY_TOKENS["max_instances"], 4))
    assert signatures["caption"]["outputs"] == {"captions": ("string", (None,))}


@pytest.mark.slow
def test_predict_cli_over_grpc_writes_what_the_in_process_run_writes(real_server, tmp_path):
    import argparse
    import json

    from pix2seq import predict_cli

    files = []
    for i, (size, fmt) in enumerate([((48, 40), "JPEG"), ((30, 64), "PNG")]):
        path = tmp_path / f"{i + 1}.{fmt.lower()}"
        path.write_bytes(encode_image(20 + i, size=size, fmt=fmt))
        files.append(str(path))
    written = {}
    for source in (["--model", real_server.config.model_base_path], ["--server", real_server.address]):
        name = source[0].lstrip("-")
        parser = argparse.ArgumentParser()
        predict_cli.add_arguments(parser)
        args = parser.parse_args([*source, "--task", "all", "--json", str(tmp_path / f"{name}.json"),
                                  "--viz", str(tmp_path / name), *files])
        assert predict_cli.main(args) == 0
        written[name] = {p.name: p.read_bytes() for p in sorted(tmp_path.glob(f"{name}*")) if p.is_file()}
        written[name].update({p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())})
    kinds = ["", "_captions", "_keypoints", "_segm"]  # predict_cli.TASK_KINDS["all"]
    assert sorted(written["model"]) == ["1.png", "2.png"] + [f"model{k}.json" for k in kinds]
    for kind in kinds:
        entries = json.loads(written["model"][f"model{kind}.json"])
        if kind in ("", "_captions"):
            assert len(entries) >= len(files)  # at least one detection / one caption per image
        assert entries == json.loads(written["server"][f"server{kind}.json"])
    for picture in ("1.png", "2.png"):
        assert written["model"][picture] == written["server"][picture]


@pytest.mark.slow
def test_client_results_are_the_shared_results_of_the_in_process_call(real_server):
    from model import results

    in_process = real_server.manager.get().signatures
    images = [encode_image(11, size=(48, 40)), encode_image(12, size=(30, 64), fmt="PNG")]
    want = results.to_results(to_numpy_outputs(in_process["detect"](images=tf.constant(images))),
                              [{"image_id": 7, "height": 48, "width": 40}, {"image_id": 8, "height": 30, "width": 64}])
    with Pix2SeqClient(real_server.address) as client:
        got = client.predict_results("detect", images, image_ids=[7, 8])
    assert got == want and got[0]["objects"]
    assert all(0 <= o["box"][2] <= 48 and 0 <= o["box"][3] <= 40 for o in got[0]["objects"])
