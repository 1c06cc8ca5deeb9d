"""The whole TFX pipeline, micro preset, LocalDagRunner + SQLite MLMD: every artifact
is checked; a second run with an impossible threshold reuses the cached upstream
outputs, is not blessed and pushes nothing."""
import dataclasses
import glob
import json
import os

import pytest

from pipeline import cli, presets, runner_local
from pipeline import pipeline as pipeline_lib

SIGNATURES = {"serving_default", "detect", "segment", "keypoints", "caption", "detect_and_describe"}
UPSTREAM = (pipeline_lib.EXAMPLE_GEN, pipeline_lib.STATISTICS_GEN, pipeline_lib.SCHEMA_GEN,
            pipeline_lib.EXAMPLE_VALIDATOR, pipeline_lib.TRAINER)


@pytest.fixture(scope="module")
def runs(synth_coco_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    config = presets.get(
        "micro", coco_dir=synth_coco_dir, pipeline_root=str(root / "root"),
        serving_dir=str(root / "serving"), metadata_path=str(root / "root" / "metadata.sqlite"),
        output_dir=str(root / "pictures"))
    first = runner_local.run(config)
    versions_after_first = sorted(os.listdir(config.serving_dir))
    impossible = dataclasses.replace(config.eval, thresholds={"detection": {"AP50": 1.01}})
    second = runner_local.run(config.replace(eval=impossible))
    third = runner_local.run(config.replace(eval=impossible))  # nothing changed
    return config, first, versions_after_first, second, third


def _states(summary):
    return {c.component: c.state for c in summary.components}


def test_every_component_ran(runs):
    _, first, _, _, _ = runs
    states = _states(first)
    for component in pipeline_lib.COMPONENT_IDS:
        assert states.get(component) == "COMPLETE", (component, states)


def test_examples_and_schema(runs):
    _, first, _, _, _ = runs
    for split in ("train", "eval"):
        assert glob.glob(os.path.join(first.examples_uri, f"Split-{split}", "*.gz")), split
    schema = open(os.path.join(first.schema_uri, "schema.pbtxt")).read()
    for key in ("image/encoded", "object/bbox", "caption/text"):
        assert f'name: "{key}"' in schema


def test_model_has_the_serving_signatures(runs):
    from tensorflow.python.tools import saved_model_utils

    _, first, _, _, _ = runs
    serving = os.path.join(first.model_uri, "Format-Serving")
    meta = saved_model_utils.get_meta_graph_def(serving, "serve")
    assert SIGNATURES <= set(meta.signature_def.keys())


def test_metrics_json_has_every_task_metric(runs):
    _, first, _, _, _ = runs
    metrics = first.metrics["candidate"]
    for task, names in cli.TABLE_METRICS:
        for name in names:
            value = metrics[task][name]
            if value is None:  # pycocotools' -1: e.g. no large objects in 6 images
                assert name in ("APs", "APm", "APl"), (task, name)
                continue
            assert isinstance(value, float) and 0.0 <= value <= (1.0 if task != "captioning" else 10.0), \
                (task, name, value)
        headline = "CIDEr-D" if task == "captioning" else "AP"
        assert isinstance(metrics[task][headline], float), (task, metrics[task])
    assert first.metrics["num_images"] == 6
    results = os.path.join(first.evaluation_uri, "results", "candidate")
    for kind in ("bbox", "segm", "keypoints", "captions"):
        with open(os.path.join(results, f"{kind}.json")) as f:
            assert isinstance(json.load(f), list)
    with open(os.path.join(results, "captions.json")) as f:
        assert len(json.load(f)) == 6  # one caption per eval image
    assert first.pictures and all(os.path.exists(p) for p in first.pictures)


def test_first_run_is_blessed_and_pushed(runs):
    config, first, versions, _, _ = runs
    assert first.blessed is True
    assert first.pushed and len(versions) == 1
    pushed = os.path.join(config.serving_dir, versions[0])
    assert first.pushed_destination == pushed
    assert os.path.exists(os.path.join(pushed, "saved_model.pb"))
    assert os.path.isdir(os.path.join(pushed, "variables"))


def test_rerun_reuses_cache_and_impossible_threshold_pushes_nothing(runs):
    config, first, versions, second, third = runs
    states = _states(second)
    for component in UPSTREAM:
        assert states[component] == "CACHED", (component, states)
    assert second.model_uri == first.model_uri  # the cached model
    assert second.blessed is False and "AP50" in second.blessing_message
    assert not second.pushed
    assert sorted(os.listdir(config.serving_dir)) == versions
    # The baseline was the latest blessed model (the first run's, i.e. this same model).
    assert second.metrics["baseline_model"] == first.model_uri
    # A rerun with nothing changed reuses every output.
    for component, state in _states(third).items():
        if component != pipeline_lib.RESOLVER:
            assert state == "CACHED", (component, state)
    assert third.evaluation_uri == second.evaluation_uri and third.blessed is False


def test_table_reports_everything(runs):
    _, first, _, second, _ = runs
    table = cli.format_table(first)
    assert "BLESSED" in table and first.pushed_destination in table
    for component in pipeline_lib.COMPONENT_IDS:
        assert component in table
    assert "NOT BLESSED" in cli.format_table(second)


def test_ground_truth_rebuilt_from_examples_equals_the_source(runs, synth_coco_dir):
    """What the evaluator scores against is the source annotation file, read back from the
    ingested eval examples (ids, classes, crowd flags, boxes, keypoints, captions)."""
    from components.coco_evaluator import ground_truth as gt_lib
    from data import features

    _, first, _, _, _ = runs
    decoded = [features.decode_example(r)
               for r in gt_lib.read_examples(os.path.join(first.examples_uri, "Split-eval", "*"))]
    categories = gt_lib.load_categories(first.examples_uri)
    gt = gt_lib.build_ground_truth(decoded, categories, gt_lib.keypoint_categories(categories, ()))
    with open(os.path.join(synth_coco_dir, "annotations", "instances_val.json")) as f:
        source = json.load(f)
    with open(os.path.join(synth_coco_dir, "annotations", "captions_val.json")) as f:
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
