"""The whole TFX pipeline, micro preset, LocalDagRunner + SQLite MLMD, on one pipeline root.

1. A user's own detection-only dataset (category ids 500.. and 300 categories, no captions,
   no keypoints): every component runs; the model trains and serves detection only, and
   every result speaks the dataset's ids.
2. A changed training-code file (run with an impossible threshold) reruns the Trainer and
   what follows on the cached Examples, is not blessed and pushes nothing.
3. The same run again is fully cached.
4. The data under the same `coco_dir` becomes the four-task synthetic dataset (half of the
   non-person val annotations dropped, an image added): everything reruns, and every
   artifact of a four-task run is checked (schema, signatures, every task's metrics, the
   ground truth read back from the Examples), scored against run 1's detection-only model.
The order keeps the four-task Trainer to one run. (Blessing an already served model again
pushes no new version: tests/test_fingerprint.py, on the Pusher's executor.)"""
import dataclasses
import glob
import json
import os
import shutil
import sys
import types

import pytest

from model.tasks import task_class, task_names
from pipeline import presets, report, runner_local
from pipeline import pipeline as pipeline_lib

import own_datasets
from data.synth_shapes import PERSON_ID

SIGNATURES = {"serving_default", "detect", "segment", "keypoints", "caption", "detect_and_describe"}
# What a change reruns: the Resolver runs every time (it only queries MLMD).
FROM_TRAINER = (pipeline_lib.TRAINER, pipeline_lib.EVALUATOR, pipeline_lib.PUSHER)
FROM_INGESTION = tuple(c for c in pipeline_lib.COMPONENT_IDS if c != pipeline_lib.RESOLVER)
EXTRA_CODE = "e2e_training_code"  # stands in for a file under model/: hashed with the training code


@pytest.fixture(scope="module")
def runs(synth_coco_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    coco_dir = str(root / "coco")  # this test edits it
    own_datasets.rewrite(synth_coco_dir, coco_dir, own_datasets.detection_500s)
    code = root / "code"
    code.mkdir()
    (code / f"{EXTRA_CODE}.py").write_text("STEPS = 1\n")
    sys.path.insert(0, str(code))
    train_code = pipeline_lib.TRAIN_CODE
    pipeline_lib.TRAIN_CODE = train_code + (EXTRA_CODE,)
    try:
        config = presets.get(
            "micro", coco_dir=coco_dir, pipeline_root=str(root / "root"),
            serving_dir=str(root / "serving"), metadata_path=str(root / "root" / "metadata.sqlite"),
            output_dir=str(root / "pictures"))
        r = types.SimpleNamespace(config=config)
        r.first = runner_local.run(config)
        r.versions_after_first = _versions(config.serving_dir)
        r.own_categories, r.own_files = own_datasets.declared_ids(coco_dir), _files(coco_dir)
        (code / f"{EXTRA_CODE}.py").write_text("STEPS = 2\n")
        impossible = config.replace(eval=dataclasses.replace(config.eval, thresholds={"detection": {"AP50": 1.01}}))
        r.code_changed = runner_local.run(impossible)
        r.versions_after_code_changed = _versions(config.serving_dir)
        # The same again (the first run's model is the baseline of both): nothing to do.
        r.unchanged = runner_local.run(impossible)
        r.versions_after_unchanged = _versions(config.serving_dir)
        shutil.rmtree(coco_dir)
        shutil.copytree(synth_coco_dir, coco_dir)
        with open(os.path.join(coco_dir, "annotations", "instances_val.json")) as f:
            instances = json.load(f)
        instances["annotations"] = [a for i, a in enumerate(instances["annotations"])
                                    if a["category_id"] == PERSON_ID or i % 2]
        with open(os.path.join(coco_dir, "annotations", "instances_val.json"), "w") as f:
            json.dump(instances, f)
        image = sorted(glob.glob(os.path.join(coco_dir, "images", "train", "*")))[0]
        shutil.copy(image, os.path.join(os.path.dirname(image), "added.jpg"))
        # One run for all (each change alone changes the fingerprint: tests/test_fingerprint.py).
        r.input_changed = runner_local.run(config)
        r.versions_after_input_changed = _versions(config.serving_dir)
        return r
    finally:
        pipeline_lib.TRAIN_CODE = train_code
        sys.path.remove(str(code))


def _versions(serving_dir):
    """The version directories, as TF Serving sees them (model cards lie beside them)."""
    from serving.model_loader import scan_versions

    return [str(v) for v in scan_versions(serving_dir)]


def _states(summary):
    return {c.component: c.state for c in summary.components}


def test_every_component_ran(runs):
    for summary in (runs.first, runs.input_changed):
        states = _states(summary)
        for component in pipeline_lib.COMPONENT_IDS:
            assert states.get(component) == "COMPLETE", (component, states)


def test_examples_and_schema(runs):
    four = runs.input_changed
    for split in ("train", "eval"):
        assert glob.glob(os.path.join(four.examples_uri, f"Split-{split}", "*.gz")), split
    schema = open(os.path.join(four.schema_uri, "schema.pbtxt")).read()
    for key in ("image/encoded", "object/bbox", "caption/text"):
        assert f'name: "{key}"' in schema


def test_model_has_the_serving_signatures(runs):
    from tensorflow.python.tools import saved_model_utils

    serving = os.path.join(runs.input_changed.model_uri, "Format-Serving")
    meta = saved_model_utils.get_meta_graph_def(serving, "serve")
    assert SIGNATURES <= set(meta.signature_def.keys())


def test_metrics_json_has_every_task_metric(runs):
    four = runs.input_changed
    metrics = four.metrics["candidate"]
    for task in task_names():
        for name in task_class(task).table_metrics:
            value = metrics[task][name]
            if value is None:  # pycocotools' -1: e.g. no large objects in 6 images
                assert name in ("APs", "APm", "APl"), (task, name)
                continue
            assert isinstance(value, float) and 0.0 <= value <= (1.0 if task != "captioning" else 10.0), \
                (task, name, value)
        headline = "CIDEr-D" if task == "captioning" else "AP"
        assert isinstance(metrics[task][headline], float), (task, metrics[task])
    assert four.metrics["num_images"] == 6
    results = {}
    for kind in ("bbox", "segm", "keypoints", "captions"):
        with open(os.path.join(four.evaluation_uri, "results", "candidate", f"{kind}.json")) as f:
            results[kind] = json.load(f)
        assert isinstance(results[kind], list), kind
    assert results["bbox"] and len(results["segm"]) == len(results["bbox"])  # a mask per detection
    assert len(results["captions"]) == 6  # one caption per eval image
    # Keypoints go to detected persons only: one entry per person detection.
    assert len(results["keypoints"]) == sum(d["category_id"] == PERSON_ID for d in results["bbox"])
    assert four.pictures and all(os.path.exists(p) for p in four.pictures)


def test_first_run_is_blessed_and_pushed(runs):
    config, first, versions = runs.config, runs.first, runs.versions_after_first
    assert first.blessed is True
    assert first.pushed and len(versions) == 1
    pushed = os.path.join(config.serving_dir, versions[0])
    assert first.pushed_destination == pushed
    assert os.path.exists(os.path.join(pushed, "saved_model.pb"))
    assert os.path.isdir(os.path.join(pushed, "variables"))
    assert os.path.exists(os.path.join(pushed, "assets.extra", "tf_serving_warmup_requests"))
    # The model card beside the version: the evaluation's facts plus the push's ids.
    assert first.model_card == pushed + ".model_card.json" and os.path.exists(pushed + ".model_card.md")
    with open(first.model_card) as f:
        card = json.load(f)
    assert card["blessing"]["blessed"] is True and card["metrics"] == first.metrics["candidate"]
    assert card["push"]["version"] == versions[0] and card["push"]["pushed_model_id"]
    assert card["model"]["uri"] == first.model_uri and card["model"]["config"]["tokens"]["image_size"] > 0
    assert card["model"]["train_config"]["steps"] == config.train.steps
    assert card["lineage"]["model_id"] and card["lineage"]["examples_id"]
    assert (card["lineage"]["evaluation_id"], card["lineage"]["blessing_id"]) == (first.evaluation_id, first.blessing_id)
    assert first.evaluation_id and first.blessing_id
    assert card["push"]["pipeline_run_id"] == first.run_id == card["lineage"]["pipeline_run_id"]


def test_rerun_with_nothing_changed_reuses_every_output_and_pushes_nothing(runs):
    for component, state in _states(runs.unchanged).items():
        if component != pipeline_lib.RESOLVER:
            assert state == "CACHED", (component, state)
    assert runs.unchanged.model_uri == runs.code_changed.model_uri
    assert runs.unchanged.evaluation_uri == runs.code_changed.evaluation_uri and runs.unchanged.blessed is False
    assert runs.versions_after_unchanged == runs.versions_after_first


def test_impossible_threshold_is_not_blessed_and_pushes_nothing(runs):
    changed = runs.code_changed
    assert changed.blessed is False and "AP50" in changed.blessing_message
    assert not changed.pushed
    assert runs.versions_after_code_changed == runs.versions_after_first
    # The baseline was the latest blessed model: the first run's.
    assert changed.metrics["baseline_model"] == runs.first.model_uri


def test_table_reports_everything(runs):
    first = runs.first
    table = report.format_table(first)
    assert "BLESSED" in table and first.pushed_destination in table
    for component in pipeline_lib.COMPONENT_IDS:
        assert component in table
    assert "NOT BLESSED" in report.format_table(runs.code_changed)


def test_ground_truth_rebuilt_from_examples_equals_the_source(runs):  # the four-task run's data
    """What the evaluator scores against is the source annotation file, read back from the
    ingested eval examples (ids, classes, crowd flags, boxes, keypoints, captions)."""
    from components.coco_evaluator import ground_truth as gt_lib
    from data import features

    four, coco_dir = runs.input_changed, runs.config.coco_dir
    decoded = [features.decode_example(r)
               for r in gt_lib.read_examples(os.path.join(four.examples_uri, "Split-eval", "*"))]
    categories = gt_lib.load_categories(four.examples_uri)
    gt = gt_lib.build_ground_truth(decoded, categories, gt_lib.keypoint_categories(categories, ()))
    with open(os.path.join(coco_dir, "annotations", "instances_val.json")) as f:
        source = json.load(f)
    with open(os.path.join(coco_dir, "annotations", "captions_val.json")) as f:
        captions = json.load(f)
    assert sorted(i["id"] for i in gt["instances"]["images"]) == sorted(i["id"] for i in source["images"])
    rebuilt = {a["id"]: a for a in gt["instances"]["annotations"]}
    assert set(rebuilt) == {a["id"] for a in source["annotations"]}
    for ann in source["annotations"]:
        got = rebuilt[ann["id"]]
        assert (got["image_id"], got["category_id"], got["iscrowd"]) == \
            (ann["image_id"], ann["category_id"], ann["iscrowd"])
        assert got["bbox"] == pytest.approx(ann["bbox"], abs=0.01)
        assert got["area"] == pytest.approx(ann["area"])
    assert gt["keypoints"]["annotations"], "the eval split has persons"
    assert {c["name"] for c in gt["instances"]["categories"]} >= {"person"}
    assert sorted(c["caption"] for c in gt["captions"]["annotations"]) == \
        sorted(c["caption"] for c in captions["annotations"])


def _rerun(summary):
    return sorted(c for c, state in _states(summary).items() if state != "CACHED" and c != pipeline_lib.RESOLVER)


def test_changed_training_code_reruns_the_trainer_and_what_follows(runs):
    assert _rerun(runs.code_changed) == sorted(FROM_TRAINER)
    assert runs.code_changed.code_fingerprint != runs.first.code_fingerprint
    assert runs.code_changed.input_fingerprint == runs.first.input_fingerprint
    assert runs.code_changed.model_uri != runs.first.model_uri
    assert "input fingerprint: " in report.format_table(runs.code_changed)


def _files(coco_dir):
    return sum(len(files) for _, _, files in os.walk(coco_dir))


def test_changed_annotation_and_added_image_rerun_ingestion_and_everything_after(runs):
    assert runs.first.input_fingerprint.startswith(f"{runs.own_files} files, ")
    assert runs.input_changed.input_fingerprint.startswith(f"{_files(runs.config.coco_dir)} files, ")
    assert runs.unchanged.input_fingerprint == runs.first.input_fingerprint
    assert _rerun(runs.input_changed) == sorted(FROM_INGESTION)
    assert runs.input_changed.examples_uri != runs.first.examples_uri
    # Half of the non-person eval annotations went: the new Examples (which the evaluator scores) lost them too.
    def annotation_ids(summary):
        from components.coco_evaluator import ground_truth as gt_lib
        from data import features

        decoded = [features.decode_example(r) for r in gt_lib.read_examples(
            os.path.join(summary.examples_uri, "Split-eval", "*"))]
        categories = gt_lib.load_categories(summary.examples_uri)
        gt = gt_lib.build_ground_truth(decoded, categories, gt_lib.keypoint_categories(categories, ()))
        return {a["id"] for a in gt["instances"]["annotations"]}

    with open(os.path.join(runs.config.coco_dir, "annotations", "instances_val.json")) as f:
        kept = {a["id"] for a in json.load(f)["annotations"]}
    before, after = annotation_ids(runs.first), annotation_ids(runs.input_changed)
    assert kept <= after < before


def test_own_detection_dataset_trains_serves_and_scores_detection_in_its_own_ids(runs):
    """Tasks follow the data through the pipeline: on the user's own detection-only data the
    Trainer trained detection only, the pushed model serves detection only, the evaluator
    scored detection only, and every result and category speaks the dataset's ids."""
    from model import signatures

    first = runs.first
    with open(os.path.join(first.examples_uri, "dataset_info.json")) as f:
        info = json.load(f)
    declared = runs.own_categories
    assert info["tasks"] == ["detection"] and len(declared) == own_datasets.NUM_CATEGORIES
    assert min(declared) == own_datasets.FIRST_ID and info["class_category_ids"] == sorted(declared)
    assert signatures.exported_tasks(os.path.join(first.model_uri, "Format-Serving")) == ["detection"]
    assert set(first.metrics["candidate"]) == {"detection"}
    with open(os.path.join(first.evaluation_uri, "results", "candidate", "bbox.json")) as f:
        found = json.load(f)
    assert found and {d["category_id"] for d in found} <= declared
    pushed = os.path.join(runs.config.serving_dir, runs.versions_after_first[0])
    assert signatures.exported_tasks(pushed) == ["detection"]


def test_four_task_model_is_scored_against_the_detection_only_baseline_and_pushed(runs):
    """The candidate serves every task; the baseline (run 1's model) is scored on the one task
    it serves, and the candidate's other tasks are judged by their thresholds alone."""
    from model import signatures

    four = runs.input_changed
    with open(os.path.join(four.examples_uri, "dataset_info.json")) as f:
        assert json.load(f)["tasks"] == list(task_names())
    assert set(four.metrics["candidate"]) == set(task_names())
    assert four.metrics["baseline_model"] == runs.first.model_uri
    assert four.metrics["baseline_tasks"] == ["detection"]
    assert four.blessed is True and four.pushed  # the micro preset's gate: no threshold
    assert len(runs.versions_after_input_changed) == 2
    pushed = os.path.join(runs.config.serving_dir, runs.versions_after_input_changed[-1])
    assert signatures.exported_tasks(pushed) == list(task_names())


def test_table_shows_the_fingerprints_and_what_was_cached(runs):
    table = report.format_table(runs.unchanged)
    assert f"input fingerprint: {runs.unchanged.input_fingerprint.split('sha256:')[0]}" in table
    assert "code fingerprint: " in table and "(unchanged: cached)" in table
    assert "(unchanged: cached)" not in report.format_table(runs.input_changed)
