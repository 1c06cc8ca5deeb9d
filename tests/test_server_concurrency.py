"""Concurrent clients get the serial answers; a pushed version is picked up mid-traffic
without a failed request."""
import os
import threading
import time
from concurrent import futures

import numpy as np
import pytest
import portpicker
import tensorflow as tf

from serving.client import Pix2SeqClient, to_numpy_outputs
from serving.server import ModelServer, ServerConfig
from serving_toy_model import encode_image, push_version, toy_model_dir

THREADS, PER_THREAD = 8, 25


def _server(base, **overrides):
    config = ServerConfig(base, port=portpicker.pick_unused_port(), workers=THREADS, **overrides)
    return ModelServer(config)


def _assert_same(got, want):
    assert sorted(got) == sorted(want)
    for alias in want:
        np.testing.assert_array_equal(got[alias], want[alias], err_msg=alias)


@pytest.mark.slow
def test_concurrent_clients_get_the_serial_results(tmp_path):
    base = str(tmp_path / "pix2seq")
    push_version(toy_model_dir(0), base, 1)
    images = [encode_image(i, size=(16 + i % 7, 20 + i % 5)) for i in range(THREADS * PER_THREAD)]
    with _server(base, poll_seconds=0) as server, Pix2SeqClient(server.address) as client:
        serial = [client.predict("detect", [image]) for image in images]

        def worker(t):
            with Pix2SeqClient(server.address) as own:  # one channel per thread, like separate clients
                return [own.predict("detect", [images[t * PER_THREAD + i]]) for i in range(PER_THREAD)]

        with futures.ThreadPoolExecutor(THREADS) as pool:
            parallel = [out for chunk in pool.map(worker, range(THREADS)) for out in chunk]
    assert len(parallel) == len(serial) == THREADS * PER_THREAD
    for got, want in zip(parallel, serial):
        _assert_same(got, want)


@pytest.mark.slow
def test_hot_reload_under_load(tmp_path):
    base = str(tmp_path / "pix2seq")
    push_version(toy_model_dir(0), base, 1)
    image = encode_image(7)
    expected = {
        version: to_numpy_outputs(tf.saved_model.load(toy_model_dir(seed)).signatures["detect"](
            images=tf.constant([image])))
        for version, seed in [(1, 0), (2, 1)]
    }
    assert not np.array_equal(expected[1]["scores"], expected[2]["scores"])  # versions tell apart

    stop = threading.Event()
    results, failures = [], []

    def traffic():
        with Pix2SeqClient(server.address) as own:
            seen = []
            while not stop.is_set():
                try:
                    seen.append(own.predict_with_version("detect", [image]))
                except Exception as e:  # any failure is the test's finding
                    failures.append(e)
            results.append(seen)

    with _server(base, poll_seconds=0.05) as server, Pix2SeqClient(server.address) as client:
        threads = [threading.Thread(target=traffic) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        push_version(toy_model_dir(1), base, 2)
        deadline = time.monotonic() + 60
        while client.predict_with_version("detect", [image])[1] != 2:
            assert time.monotonic() < deadline, "version 2 was never served"
            time.sleep(0.05)
        time.sleep(0.5)  # traffic keeps flowing on the new version
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        status = {s["version"]: s["state"] for s in client.status()}

    assert not failures, failures[:3]
    assert status == {1: "END", 2: "AVAILABLE"}
    for seen in results:
        versions = [v for _, v in seen]
        assert versions == sorted(versions), "a request went back to the old version after the swap"
        assert versions[0] == 1 and versions[-1] == 2
        for outputs, version in seen:
            _assert_same(outputs, expected[version])


def test_broken_push_keeps_the_served_version(tmp_path):
    base = str(tmp_path / "pix2seq")
    push_version(toy_model_dir(0), base, 1)
    broken = os.path.join(base, "2")
    os.makedirs(broken)
    with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
        f.write(b"half a copy")
    with _server(base, poll_seconds=0.05) as server, Pix2SeqClient(server.address) as client:
        outputs, version = client.predict_with_version("detect", [encode_image(8)])
        status = {s["version"]: s for s in client.status()}
    assert version == 1 and outputs["boxes"].shape == (1, 1, 4)
    assert status[1]["state"] == "AVAILABLE"
    assert status[2]["state"] == "END" and "not a SavedModel proto" in status[2]["error_message"]


def test_older_versions_stay_addressable_with_num_versions(tmp_path):
    base = str(tmp_path / "pix2seq")
    for version in (1, 2, 3):
        push_version(toy_model_dir(0), base, version)
    with _server(base, poll_seconds=0, num_versions=2) as server, Pix2SeqClient(server.address) as client:
        assert client.predict_with_version("detect", [encode_image(9)])[1] == 3
        assert client.predict_with_version("detect", [encode_image(9)], version=2)[1] == 2
        assert sorted(s["version"] for s in client.status()) == [2, 3]


def test_warm_up_runs_recorded_requests_else_image_only_signatures(tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    from serving import model_loader
    from serving.warmup import WARMUP_FILE, warm_up

    base = str(tmp_path / "pix2seq")
    path = push_version(toy_model_dir(0), base, 1)
    model = model_loader.load_version(base, 1)
    assert warm_up(model) == len(model.signatures)  # every toy signature takes only images

    os.makedirs(os.path.join(path, os.path.dirname(WARMUP_FILE)))
    with tf.io.TFRecordWriter(os.path.join(path, WARMUP_FILE)) as writer:
        for signature in ("caption", "no_such_signature"):
            entry = prediction_log_pb2.PredictionLog()
            request = entry.predict_log.request
            request.model_spec.name = "pix2seq"
            request.model_spec.signature_name = signature
            request.inputs["images"].CopyFrom(tf.make_tensor_proto([encode_image(3)], dtype=tf.string))
            writer.write(entry.SerializeToString())
    assert warm_up(model) == 1  # the recorded caption request; the unknown signature is skipped


def test_stop_lets_in_flight_requests_finish_and_refuses_new_ones(tmp_path):
    import dataclasses

    import grpc

    from serving import model_loader
    from serving.version_manager import VersionManager

    def slow_loader(base_path, version):  # every call takes a second: a request surely in flight
        model = model_loader.load_version(base_path, version)

        def slow(fn):
            return lambda **inputs: (time.sleep(1.0), fn(**inputs))[1]

        return dataclasses.replace(model, signatures={k: slow(f) for k, f in model.signatures.items()})

    base = str(tmp_path / "pix2seq")
    push_version(toy_model_dir(0), base, 1)
    config = ServerConfig(base, port=portpicker.pick_unused_port(), poll_seconds=0, warmup=False)
    server = ModelServer(config, manager=VersionManager(base, "pix2seq", poll_seconds=0, loader=slow_loader)).start()
    with Pix2SeqClient(server.address) as client, futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(client.predict, "detect", [encode_image(1)])
        time.sleep(0.3)
        server.stop(grace=10)
        assert in_flight.result()["boxes"].shape == (1, 1, 4)
        with pytest.raises(grpc.RpcError) as err:
            client.predict("detect", [encode_image(1)])
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_pusher_style_copy_is_served_once_saved_model_pb_is_complete(tmp_path):
    """The TFX Pusher copies saved_model.pb last; a half-written one must be retried, not given up."""
    import shutil

    from serving.version_manager import VersionManager

    base = str(tmp_path / "pix2seq")
    push_version(toy_model_dir(0), base, 1)
    manager = VersionManager(base, "pix2seq", poll_seconds=0)
    assert manager.poll_once() == [1]

    target = os.path.join(base, "2")
    shutil.copytree(toy_model_dir(0), target, ignore=shutil.ignore_patterns("saved_model.pb"))
    assert manager.poll_once() == [1]  # no saved_model.pb yet: not a version
    with open(os.path.join(toy_model_dir(0), "saved_model.pb"), "rb") as f:
        graph = f.read()
    with open(os.path.join(target, "saved_model.pb"), "wb") as f:
        f.write(graph[: len(graph) // 3])  # the copy is under way
    assert manager.poll_once() == [1]
    assert manager.states()[2].state == "END" and manager.states()[2].error
    with open(os.path.join(target, "saved_model.pb"), "wb") as f:
        f.write(graph)
    assert manager.poll_once() == [2]
    assert manager.states()[2].state == "AVAILABLE" and manager.states()[1].state == "END"
    assert manager.get().version == 2
