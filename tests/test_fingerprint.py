"""Input and code fingerprints (the pipeline's cache keys) change with every change
that matters and with nothing else; the ExampleGen driver and the Pusher use them."""
import json
import os
import shutil
import time

import pytest

from data import fingerprint


@pytest.fixture
def coco(tmp_path):
    """A small COCO-like tree: two images, one annotation file."""
    root = tmp_path / "coco"
    (root / "images" / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    for name in ("1.jpg", "2.jpg"):
        (root / "images" / "val" / name).write_bytes(b"\xff\xd8 image " + name.encode())
    (root / "annotations" / "instances_val.json").write_text(json.dumps({"annotations": [{"id": 1, "area": 4}]}))
    return root


def test_same_files_same_fingerprint_and_what_it_counts(coco, tmp_path):
    first = fingerprint.input_fingerprint(str(coco))
    assert fingerprint.input_fingerprint(str(coco)) == first
    assert first.num_files == 3
    assert first.num_bytes == sum(p.stat().st_size for p in coco.rglob("*") if p.is_file())
    assert str(first).startswith("3 files, ") and f"sha256:{first.sha256}" in str(first)


def test_an_annotation_edit_is_seen_even_with_size_and_mtime_kept(coco):
    before = fingerprint.input_fingerprint(str(coco))
    path = coco / "annotations" / "instances_val.json"
    stat = path.stat()
    path.write_text(path.read_text().replace('"area": 4', '"area": 5'))  # same length
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert fingerprint.input_fingerprint(str(coco)) != before


def test_an_added_removed_or_rewritten_image_is_seen(coco):
    before = fingerprint.input_fingerprint(str(coco))
    (coco / "images" / "val" / "3.jpg").write_bytes(b"\xff\xd8 new")
    added = fingerprint.input_fingerprint(str(coco))
    assert added != before and added.num_files == 4
    (coco / "images" / "val" / "3.jpg").unlink()
    assert fingerprint.input_fingerprint(str(coco)) == before  # back to the same files
    image = coco / "images" / "val" / "1.jpg"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # rewritten in place
    assert fingerprint.input_fingerprint(str(coco)) != before
    (coco / "images" / "val" / "2.jpg").unlink()
    assert fingerprint.input_fingerprint(str(coco)).num_files == 2


def test_missing_directory_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        fingerprint.input_fingerprint(str(tmp_path / "nope"))


def test_code_fingerprint_follows_the_source(tmp_path, monkeypatch):
    package = tmp_path / "fp_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "layer.py").write_text("WIDTH = 1\n")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "layer.cpython-310.pyc").write_bytes(b"compiled")
    (package / "notes.txt").write_text("not code")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = fingerprint.code_fingerprint(("fp_pkg",))
    assert first.num_files == 2  # .py only, __pycache__ skipped
    (package / "notes.txt").write_text("still not code")
    assert fingerprint.code_fingerprint(("fp_pkg",)) == first
    (package / "layer.py").write_text("WIDTH = 2\n")
    assert fingerprint.code_fingerprint(("fp_pkg",)) != first
    # a single module counts as its file
    assert fingerprint.code_fingerprint(("fp_pkg.layer",)).num_files == 1
    with pytest.raises(ModuleNotFoundError):
        fingerprint.code_fingerprint(("no_such_module_here",))


def test_driver_puts_the_fingerprint_into_exec_properties(coco):
    from tfx.orchestration.portable import data_types

    from components.coco_example_gen import driver

    info = data_types.ExecutionInfo(exec_properties={"coco_dir": str(coco), "num_shards": 0})
    output = driver.InputFingerprintDriver(None).run(info)
    value = output.exec_properties[driver.INPUT_FINGERPRINT].string_value
    assert value == str(fingerprint.input_fingerprint(str(coco)))


def test_component_declares_the_driver_and_the_properties():
    from components.coco_example_gen import component, driver

    gen = component.CocoExampleGen(coco_dir="gs://bucket/coco", code_fingerprint="abc")
    assert gen.driver_class is driver.InputFingerprintDriver
    assert gen.exec_properties["code_fingerprint"] == "abc"
    assert driver.INPUT_FINGERPRINT in component.CocoExampleGenSpec.PARAMETERS


def test_pusher_finds_the_newest_served_version_and_compares_bytes(tmp_path):
    from components import pusher

    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"graph")
    (model / "variables" / "variables.index").write_bytes(b"weights")
    serving = tmp_path / "serving"
    assert pusher.newest_version(str(serving)) is None
    shutil.copytree(model, serving / "99")
    shutil.copytree(model, serving / "100")
    (serving / "100" / "variables" / "variables.index").write_bytes(b"other weights")
    (serving / "tmp-not-a-version").mkdir()
    assert pusher.newest_version(str(serving)) == str(serving / "100")
    assert not pusher.same_files(str(model), str(serving / "100"))
    assert pusher.same_files(str(model), str(serving / "99"))


def test_pusher_executor_pushes_a_new_model_once(tmp_path):
    """Blessed twice with the same model: one version directory; a different model: a new one."""
    from tfx.proto import pusher_pb2
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from components import pusher

    def model_artifact(name, weights):
        model = standard_artifacts.Model()
        model.uri = str(tmp_path / name)
        serving_model = tmp_path / name / "Format-Serving"
        (serving_model / "variables").mkdir(parents=True)
        (serving_model / "saved_model.pb").write_bytes(b"graph")
        (serving_model / "variables" / "variables.index").write_bytes(weights)
        return model

    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "blessing")
    blessing.set_int_custom_property("blessed", 1)
    serving = tmp_path / "serving"
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(serving)))
    properties = {"push_destination": proto_utils.proto_to_json(destination), "custom_config": "null"}

    def push(model, run):
        pushed = standard_artifacts.PushedModel()
        pushed.uri = str(tmp_path / f"pushed{run}")
        pusher.Executor().Do({"model": [model], "model_blessing": [blessing]}, {"pushed_model": [pushed]},
                             dict(properties))
        return pushed

    first = push(model_artifact("m1", b"weights"), 1)
    assert first.get_int_custom_property("pushed") == 1 and not first.get_int_custom_property("already_served")
    versions = sorted(os.listdir(serving))
    assert len(versions) == 1
    again = push(model_artifact("m1-again", b"weights"), 2)  # same bytes, another artifact
    assert sorted(os.listdir(serving)) == versions
    assert again.get_int_custom_property("pushed") == 1 and again.get_int_custom_property("already_served") == 1
    assert again.get_string_custom_property("pushed_destination") == str(serving / versions[0])
    assert os.path.exists(os.path.join(again.uri, "saved_model.pb"))  # archived like a push
    (serving / str(int(versions[0]) - 5)).mkdir()  # an older version does not matter
    time.sleep(1.1)  # TFX versions are unix seconds
    newer = push(model_artifact("m2", b"new weights"), 3)
    assert not newer.get_int_custom_property("already_served")
    assert len(os.listdir(serving)) == 3
