"""Bring your own COCO dataset: the class map, tasks inferred from the data, the keypoint
schema, and three datasets made from the synthetic one, each through ingest -> train (2
steps, no task flags) -> export -> `pix2seq predict` -> `pix2seq evaluate`:

- detection only, category ids 500.. and 300 categories (trained by `pix2seq train`);
- detection + masks, no persons, the COCO ids (identity class map);
- detection + a 20-keypoint "dog" schema with category id 120 (a dense class map).

Each model serves exactly the tasks its data fed, and every result speaks the dataset's
own category ids. Kept cheap: one ingest / train / export per dataset (module fixtures),
a micro model (tiny for the `pix2seq train` run), 1-2 steps, only the trained tasks'
signatures. Measured with 2 cores shared by ~8 busy processes: 150-165 s wall (70-80 s CPU of
the test process) per dataset, most of it tracing the augmentation, training-step and
decoding graphs.
"""
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from data import dataset_info as D
from data import synth_person
from data.synth_shapes import PERSON_ID
from model.tasks import check_tasks, supported_tasks, task_names

import own_datasets

# --- pure rules ------------------------------------------------------------------------


def test_class_map_identity_dense_and_too_many():
    assert D.class_category_ids([{"id": 1}, {"id": 90}, {"id": 3}]) == ()
    ids = D.class_category_ids([{"id": 507}, {"id": 500}, {"id": 91}])
    assert ids == (91, 500, 507)
    to_class = D.class_index(ids)
    assert [D.category_id(ids, to_class(c)) for c in (500, 507, 91)] == [500, 507, 91]
    assert D.category_id(ids, 0) == 0 and D.category_id(ids, 4) == 0
    with pytest.raises(D.DatasetError, match="900 categories.*899"):
        D.class_category_ids([{"id": i} for i in range(1, 901)])


def test_keypoint_schema_from_names():
    coco = D.keypoint_schema([{"id": 1, "name": "person", "keypoints": list(synth_person.KEYPOINT_NAMES)},
                              {"id": 2, "name": "cat"}])
    from model.vocab import COCO_KEYPOINT_FLIP_PAIRS

    assert coco["category_id"] == 1 and coco["num_keypoints"] == 17
    assert tuple(map(tuple, coco["flip_pairs"])) == COCO_KEYPOINT_FLIP_PAIRS
    names = ["nose", "tail"] + [f"{s}_paw_{i}" for i in range(9) for s in ("left", "right")]
    dog = D.keypoint_schema([{"id": 7, "name": "dog", "keypoints": names}])
    assert dog["num_keypoints"] == 20 and len(dog["flip_pairs"]) == 9
    assert all(names[a].replace("left", "right") == names[b] for a, b in dog["flip_pairs"])
    with pytest.raises(D.DatasetError, match="one keypoint category"):
        D.keypoint_schema([{"id": 1, "keypoints": ["a"]}, {"id": 2, "keypoints": ["b"]}])


def test_supported_tasks_and_clear_error():
    records = [{"objects": [{"category_id": 3, "polygons": [[0, 0, 1, 0, 1, 1]], "iscrowd": 0}],
                "captions": []}]
    assert supported_tasks(records) == ["detection", "segmentation"]
    with pytest.raises(D.DatasetError, match="keypoints needs a category with a `keypoints` list"):
        check_tasks(["detection", "keypoints"], ["detection", "segmentation"], "DIR")


def test_signatures_follow_the_tasks():
    from model import signatures as S

    assert S.signatures_for_tasks(["detection"]) == ["detect", "detect_with_options", "detect_examples",
                                                     "model_info"]
    both = S.signatures_for_tasks(["detection", "keypoints"])
    assert "detect_and_describe" in both and "segment" not in both and "caption" not in both
    assert S.signatures_for_tasks(["captioning"]) == ["caption", "caption_with_options", "model_info"]
    for tasks in (["detection"], ["detection", "segmentation"], ["captioning"], list(task_names())):
        assert S.tasks_of(S.signatures_for_tasks(tasks) + ["serving_default"]) == tasks
    # a model exported with detect_and_describe alone: its outputs tell the tasks
    describe = {"detect_and_describe": {"boxes", "classes", "scores", "num_detections", "keypoints"}}
    assert S.tasks_of(["detect_and_describe"], describe) == ["detection", "keypoints"]
    with pytest.raises(ValueError, match="non-empty subset"):
        S.signatures_for_tasks(["detection", "pose"])


def test_tasks_to_score_follow_model_and_data_and_name_what_is_missing():
    from components.coco_evaluator.evaluation import tasks_to_score
    from components.coco_evaluator.model_runner import MissingSignatureError

    model, data = ["detection", "segmentation"], ["detection", "keypoints"]
    assert tasks_to_score((), model, data, "M", "DATA") == ("detection",)
    assert tasks_to_score(("detection",), model, data, "M", "DATA") == ("detection",)
    with pytest.raises(D.DatasetError, match="segmentation needs segmentation polygons"):
        tasks_to_score(("segmentation",), model, data, "M", "DATA")
    with pytest.raises(MissingSignatureError, match="M was trained without keypoints: it serves only detection, "
                                                    "segmentation"):
        tasks_to_score(("keypoints",), model, data, "M", "DATA")
    with pytest.raises(D.DatasetError, match="nothing to evaluate"):
        tasks_to_score((), ["captioning"], data, "M", "DATA")


def test_train_config_required_tasks_need_a_weight():
    from model.train_config import TrainConfig, from_custom_config, to_custom_config

    config = TrainConfig(task_weights={"detection": 1.0}, required_tasks=("detection",))
    assert from_custom_config(to_custom_config(config), config.steps) == config
    with pytest.raises(ValueError, match=r"required_tasks \['keypoints'\] have no weight"):
        TrainConfig(task_weights={"detection": 1.0}, required_tasks=("keypoints",))


def test_dataset_mistake_is_one_paragraph_and_a_nonzero_exit(synth_coco_dir, tmp_path, capsys):
    from pix2seq import cli

    def two_keypoint_categories(kind, doc):
        for c in doc["categories"]:
            if c["id"] == 3:
                c["keypoints"] = ["tip"]

    coco_dir = own_datasets.rewrite(synth_coco_dir, str(tmp_path / "coco"), two_keypoint_categories)
    for argv in (["ingest", "--coco-dir", coco_dir, "--out", str(tmp_path / "ingest")],
                 ["tokens", "--coco-dir", coco_dir, "--split", "train", "--image-id", "1", "--task", "detection"]):
        assert cli.main(argv) != 0
        err = capsys.readouterr().err
        assert "1 (person), 3 (circle) all name keypoints" in err and "Remove the `keypoints` list" in err
        assert "Traceback" not in err  # --verbose shows it (tests/test_console.py)


# --- three datasets end to end -------------------------------------------------------------


def _ingest(cli, coco_dir, out):
    assert cli.main(["ingest", "--coco-dir", coco_dir, "--out", out, "--caption-vocab-size", "64"]) == 0
    return os.path.join(out, "examples")


def _train_and_export(examples, out):
    """`pix2seq train`'s call with no task weights given (the data decides), then the export
    of the trained tasks."""
    from model import train_data
    from model.export import export_saved_model
    from model.train_config import TrainConfig

    config = TrainConfig(model_overrides=own_datasets.MICRO, steps=2, batch_size=2, warmup_steps=1, checkpoint_every=2,
                         jit_compile=False)  # XLA compiling the step costs more than 2 steps save
    result = train_data.train_on_examples(config, examples, out, verbose=0)
    export = os.path.join(out, "export")
    export_saved_model(result.model, export, train_data.caption_model_file(examples), tasks=result.tasks,
                       warmup_batch_sizes=())
    return export


def _images(coco_dir, split="val", count=2):
    folder = os.path.join(coco_dir, "images", split)
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder))[:count]]


def _predict(cli, export, images, out, task="all"):
    """`pix2seq predict` on `export` (a SavedModel dir, or the source arguments as a list)."""
    source = export if isinstance(export, list) else ["--model", export]
    assert cli.main(["predict", *source, "--task", task, *images, "--json", out]) == 0
    with open(out) as f:
        return json.load(f)


def _evaluate(cli, export, coco_dir, out, *extra):
    code = cli.main(["evaluate", "--model", export, "--coco-dir", coco_dir, "--split", "val",
                     "--max-images", "2", "--batch-size", "2", "--json", out, *extra])
    if code:
        return code
    with open(out) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def detection_500s_dir(synth_coco_dir, tmp_path_factory):
    return own_datasets.rewrite(synth_coco_dir, str(tmp_path_factory.mktemp("own_detection_data") / "coco"),
                                own_datasets.detection_500s)


@pytest.fixture(scope="module")
def detection_500s(detection_500s_dir, tmp_path_factory):
    """`pix2seq train --coco-dir` with no task flags: ingests, trains and exports."""
    from pix2seq import cli

    root = tmp_path_factory.mktemp("own_detection")
    coco_dir = detection_500s_dir
    out, export = str(root / "run"), str(root / "export")
    assert cli.main(["train", "--coco-dir", coco_dir, "--out", out, "--model-preset", "tiny", "--steps", "1",
                     "--batch-size", "2", "--caption-vocab-size", "64", "--export", export]) == 0
    return SimpleNamespace(coco_dir=coco_dir, out=out, examples=os.path.join(out, "ingest", "examples"),
                           export=export)


def _own_dataset(synth_coco_dir, tmp_path_factory, name, rewrite):
    """The synthetic data rewritten by `rewrite`, ingested, trained a few steps and exported."""
    from pix2seq import cli

    root = tmp_path_factory.mktemp(name)
    coco_dir = own_datasets.rewrite(synth_coco_dir, str(root / "coco"), rewrite)
    examples = _ingest(cli, coco_dir, str(root / "ingest"))
    return SimpleNamespace(coco_dir=coco_dir, examples=examples, export=_train_and_export(examples, str(root / "run")))


@pytest.fixture(scope="module")
def masks_no_persons(synth_coco_dir, tmp_path_factory):
    return _own_dataset(synth_coco_dir, tmp_path_factory, "own_masks", own_datasets.masks_no_persons)


@pytest.fixture(scope="module")
def dog_keypoints(synth_coco_dir, tmp_path_factory):
    return _own_dataset(synth_coco_dir, tmp_path_factory, "own_dog", own_datasets.dog_keypoints)


@pytest.mark.slow  # trains (in its fixture, shared by the module's tests)
def test_detection_only_ids_in_the_500s(detection_500s, tmp_path, capsys):
    from model import signatures
    from pix2seq import cli

    run = detection_500s
    with open(os.path.join(run.examples, "dataset_info.json")) as f:
        info = json.load(f)
    declared = own_datasets.declared_ids(run.coco_dir)
    assert info["tasks"] == ["detection"] and info["keypoint_schema"] is None
    assert len(declared) == own_datasets.NUM_CATEGORIES and info["class_category_ids"] == sorted(declared)
    # trained without a task flag, the model serves detection only
    assert sorted(signatures.read_signature_defs(run.export)) == ["detect", "detect_examples",
                                                                  "detect_with_options", "model_info",
                                                                  "serving_default"]
    found = _predict(cli, run.export, _images(run.coco_dir), str(tmp_path / "bbox.json"))  # all -> detect
    assert found and {d["category_id"] for d in found} <= declared
    report = _evaluate(cli, run.export, run.coco_dir, str(tmp_path / "report.json"))
    assert report["tasks"] == ["detection"] and set(report["metrics"]) == {"detection"}
    capsys.readouterr()
    # asking for what the model or the data lacks: one paragraph, exit 2
    assert cli.main(["predict", "--model", run.export, "--task", "caption", _images(run.coco_dir)[0]]) == 2
    assert "was trained without captioning: it serves only detection" in capsys.readouterr().err
    assert _evaluate(cli, run.export, run.coco_dir, str(tmp_path / "x.json"), "--tasks", "segmentation") == 2
    assert "segmentation needs segmentation polygons" in capsys.readouterr().err
    assert cli.main(["train", "--examples", run.examples, "--out", run.out + "_x", "--steps", "1",
                     "--keypoints-weight", "1"]) == 2
    assert "keypoints needs a category with a `keypoints` list" in capsys.readouterr().err


@pytest.mark.slow  # trains (in its fixture, shared by the module's tests)
def test_keras_api_on_the_500s_data_with_no_task_settings(detection_500s):
    """The issue's scenario through the Keras API: from_preset sized for the ingested data,
    examples_dataset with no tasks (the data's: detection), fit a step, generate: the
    results carry the dataset's ids."""
    import keras

    from model import datasets
    from model.pix2seq_model import Pix2SeqModel

    run = detection_500s
    keras.utils.set_random_seed(0)
    model = Pix2SeqModel.from_preset("tiny", examples=run.examples, **own_datasets.MICRO)
    train = datasets.examples_dataset(run.examples, model, batch_size=2)
    assert set(train.element_spec) == {"detection"}
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(train, steps_per_epoch=1, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    results = model.generate(_images(run.coco_dir), task="detect")
    declared = own_datasets.declared_ids(run.coco_dir)
    found = {o["category_id"] for r in results for o in r["objects"]}
    assert found and found <= declared and min(found) >= own_datasets.FIRST_ID


@pytest.mark.slow  # trains (in its fixture, shared by the module's tests)
def test_pipeline_evaluator_scores_what_model_and_data_have(detection_500s, tmp_path):
    """The micro preset's EvalConfig (tasks left empty) on the detection-only run: the
    CocoEvaluator scores detection only, a captioning gate does not apply, naming a task
    the data lacks fails with what is missing."""
    import dataclasses

    from pipeline import presets
    from test_evaluate_cli import run_evaluator

    run = detection_500s
    config = dataclasses.replace(presets.get("micro").eval, thresholds={"captioning": {"CIDEr-D": 0.1}}).to_dict()
    assert config["tasks"] == []
    report = run_evaluator(run.examples, run.export, str(tmp_path / "default"), config)
    assert report["tasks"] == ["detection"] and set(report["candidate"]) == {"detection"}
    assert report["blessing"]["blessed"]
    with open(tmp_path / "default" / "evaluation" / "results" / "candidate" / "bbox.json") as f:
        assert {d["category_id"] for d in json.load(f)} <= own_datasets.declared_ids(run.coco_dir)
    with pytest.raises(D.DatasetError, match="keypoints needs a category"):
        run_evaluator(run.examples, run.export, str(tmp_path / "asked"), dict(config, tasks=["keypoints"]))


@pytest.mark.slow  # trains (in its fixture, shared by the module's tests)
def test_served_model_tells_its_tasks(detection_500s, tmp_path, capsys):
    import portpicker

    from pix2seq import cli
    from serving.client import Pix2SeqClient
    from serving.server import ModelServer, ServerConfig

    base = tmp_path / "serving"
    base.mkdir()
    os.symlink(detection_500s.export, base / "1")
    config = ServerConfig(str(base), host="127.0.0.1", port=portpicker.pick_unused_port(), poll_seconds=0)
    with ModelServer(config) as server, Pix2SeqClient(server.address) as client:
        assert client.metadata()["tasks"] == ["detection"]  # GetModelMetadata's signature names
        capsys.readouterr()
        image = _images(detection_500s.coco_dir)[0]
        assert cli.main(["predict", "--server", server.address, "--task", "segment", image]) == 2
        assert "was trained without segmentation: it serves only detection" in capsys.readouterr().err


@pytest.mark.slow
def test_tokens_speak_the_dataset_ids(detection_500s_dir, capsys):
    from pix2seq import cli

    run = SimpleNamespace(coco_dir=detection_500s_dir)
    with open(os.path.join(run.coco_dir, "annotations", "instances_val.json")) as f:
        doc = json.load(f)
    image_id = doc["annotations"][0]["image_id"]
    want = sorted(a["category_id"] for a in doc["annotations"] if a["image_id"] == image_id)
    assert cli.main(["tokens", "--coco-dir", run.coco_dir, "--image-id", str(image_id), "--task", "detection",
                     "--preset", "tiny", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(o["category_id"] for o in out["decoded"]["objects"]) == want
    names = {c["id"]: c["name"] for c in doc["categories"]}
    assert {f"<cls:{names[c]}>" for c in want} <= set(out["rendered"]["target"])


@pytest.mark.slow  # trains (in its fixture, shared by the module's tests)
def test_masks_without_persons(masks_no_persons, tmp_path):
    from model import signatures
    from pix2seq import cli

    run = masks_no_persons
    with open(os.path.join(run.examples, "dataset_info.json")) as f:
        info = json.load(f)
    assert info["tasks"] == ["detection", "segmentation"] and info["class_category_ids"] == []
    assert signatures.exported_tasks(run.export) == ["detection", "segmentation"]
    describe = signatures.read_signature_defs(run.export)["detect_and_describe"]
    assert {"boxes", "polygons"} <= set(describe.outputs) and not {"keypoints", "captions"} & set(describe.outputs)
    found = _predict(cli, run.export, _images(run.coco_dir), str(tmp_path / "bbox.json"))  # detect_and_describe
    with open(tmp_path / "bbox_segm.json") as f:
        masks = json.load(f)
    declared = own_datasets.declared_ids(run.coco_dir)
    assert PERSON_ID not in declared
    # the identity map (ids in [1, 90], COCO's layout): a class token is the category id, and
    # inference names only the ids the dataset declares (tests/test_declared_classes.py)
    assert info["category_ids"] == sorted(declared)
    assert found and {d["category_id"] for d in found + masks} <= declared
    assert len(masks) == len(found) and all(m["segmentation"]["counts"] for m in masks)
    report = _evaluate(cli, run.export, run.coco_dir, str(tmp_path / "report.json"))
    assert report["tasks"] == ["detection", "segmentation"]
    assert set(report["metrics"]) == {"detection", "segmentation"}


@pytest.mark.slow  # trains (in its fixtures, shared by the module's tests)
def test_evaluator_compares_over_the_tasks_both_models_serve(masks_no_persons, detection_500s, tmp_path):
    """The CocoEvaluator with a detection + segmentation candidate and a detection-only
    baseline (the blessed model of an earlier, detection-only run): the baseline is scored
    and compared on detection; segmentation is judged by its thresholds only."""
    from test_evaluate_cli import run_evaluator

    config = {"batch_size": 2, "max_examples": 2, "thresholds": {"segmentation": {"AP": 0.0}}}
    report = run_evaluator(masks_no_persons.examples, masks_no_persons.export, str(tmp_path / "eval"), config,
                           baseline_dir=detection_500s.export)
    assert set(report["candidate"]) == {"detection", "segmentation"}
    assert report["baseline_tasks"] == ["detection"] and set(report["baseline"]) == {"detection"}
    checks = report["blessing"]["checks"]
    assert any(c.startswith(("PASS detection/AP", "FAIL detection/AP")) and "vs baseline" in c for c in checks)
    assert "SKIP segmentation/AP: the baseline does not serve segmentation (thresholds only)" in checks
    assert "PASS segmentation/AP" in " ".join(checks)


@pytest.mark.slow  # trains (in its fixture, shared by the module's tests)
def test_twenty_keypoint_dog_schema(dog_keypoints, tmp_path):
    import tensorflow as tf

    from model import signatures
    from pix2seq import cli

    run = dog_keypoints
    with open(os.path.join(run.examples, "dataset_info.json")) as f:
        info = json.load(f)
    assert info["tasks"] == ["detection", "keypoints"]
    schema = info["keypoint_schema"]
    assert schema["category_id"] == own_datasets.DOG_ID
    assert schema["num_keypoints"] == 20 and len(schema["flip_pairs"]) == 8
    assert own_datasets.DOG_ID in info["class_category_ids"]
    assert signatures.exported_tasks(run.export) == ["detection", "keypoints"]
    assert signatures.keypoint_category_id(run.export) == own_datasets.DOG_ID
    images = _images(run.coco_dir)
    found = _predict(cli, run.export, images, str(tmp_path / "bbox.json"))
    assert found and {d["category_id"] for d in found} <= own_datasets.declared_ids(run.coco_dir)
    with open(tmp_path / "bbox_keypoints.json") as f:
        points = json.load(f)
    assert all(p["category_id"] == own_datasets.DOG_ID and len(p["keypoints"]) == 60 for p in points)
    with open(images[0], "rb") as f:
        data = f.read()
    keypoints = tf.saved_model.load(run.export).signatures["keypoints"]
    out = keypoints(images=tf.constant([data]), boxes=tf.constant([[[10.0, 10.0, 120.0, 90.0]]]))
    assert out["keypoints"].shape == (1, 1, 20, 3) and np.isfinite(out["keypoints"].numpy()).all()
    report = _evaluate(cli, run.export, run.coco_dir, str(tmp_path / "report.json"))
    assert report["tasks"] == ["detection", "keypoints"] and set(report["metrics"]) == {"detection", "keypoints"}



@pytest.mark.slow  # trains (in its fixture, shared by the module's tests)
def test_served_dog_model_tells_its_keypoint_category(dog_keypoints, tmp_path):
    """Over real gRPC, the served model's `model_info` names the dog (category 120), not COCO's
    person 1, as the category `pix2seq predict --server` decodes keypoints for, and the
    categories it may report (the predict path itself: tests/test_declared_classes.py)."""
    import portpicker

    from model import generate
    from serving.client import Pix2SeqClient
    from serving.server import ModelServer, ServerConfig

    base = tmp_path / "serving"
    base.mkdir()
    os.symlink(dog_keypoints.export, base / "1")
    config = ServerConfig(str(base), host="127.0.0.1", port=portpicker.pick_unused_port(), poll_seconds=0)
    with ModelServer(config) as server, Pix2SeqClient(server.address) as client:
        assert generate.keypoint_category(client) == own_datasets.DOG_ID
        info = client.predict("model_info", None)
        assert set(info["category_ids"].tolist()) == own_datasets.declared_ids(dog_keypoints.coco_dir)
