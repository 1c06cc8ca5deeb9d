"""`pix2seq evaluate`: the CocoEvaluator's metrics, from a COCO directory, for any
exported model; clear errors for a missing split, a missing signature and bad images."""
import json
import os
import shutil

import pytest

from components.coco_evaluator import eval_examples, executor as executor_lib
from pix2seq import cli
import serving_toy_model
import tiny_export

ALL_TASKS = ("detection", "segmentation", "keypoints", "captioning")


@pytest.fixture(scope="module")
def ingested(synth_coco_dir, tmp_path_factory):
    """The synth dir ingested as the pipeline's CocoExampleGen does."""
    import apache_beam as beam

    from components import beam_ingest

    out = tmp_path_factory.mktemp("evaluate_ingested")
    dirs = [str(out / d) for d in ("examples", "vocabulary", "report")]
    beam_ingest.run_ingest(synth_coco_dir, *dirs, make_pipeline=beam.Pipeline, caption_vocab_size=500)
    return dirs[0]


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("toy") / "model")
    serving_toy_model.export_toy_model(path)
    return path


def run_evaluator(examples_dir, model_dir, out_dir, eval_config, baseline_dir=None):
    """The CocoEvaluator executor on ingested examples and a SavedModel (and a baseline
    SavedModel, as the resolver would give); its metrics.json."""
    from tfx.types import artifact_utils, standard_artifacts

    examples = standard_artifacts.Examples()
    examples.uri = examples_dir
    examples.split_names = artifact_utils.encode_split_names(["train", "eval"])

    def model_artifact(name, path, artifact_id):
        model = standard_artifacts.Model()
        model.uri = os.path.join(out_dir, name)
        model.id = artifact_id
        os.makedirs(model.uri)
        os.symlink(path, os.path.join(model.uri, "Format-Serving"))
        return model

    model = model_artifact("model", model_dir, 2)
    inputs = {"model": [model], "examples": [examples]}
    if baseline_dir:
        inputs["baseline_model"] = [model_artifact("baseline", baseline_dir, 1)]
    evaluation = standard_artifacts.ModelEvaluation()
    evaluation.uri = os.path.join(out_dir, "evaluation")
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = os.path.join(out_dir, "blessing")
    executor_lib.Executor().Do(inputs,
                               {"evaluation": [evaluation], "blessing": [blessing]},
                               {"eval_config": json.dumps(eval_config), "eval_split": "eval"})
    with open(os.path.join(evaluation.uri, executor_lib.METRICS_FILE)) as f:
        return json.load(f)


def _assert_same_metrics(ours, theirs, tasks):
    assert set(ours) == set(theirs) == set(tasks)
    for task in tasks:
        for name, value in theirs[task].items():
            if isinstance(value, float):
                assert ours[task][name] == pytest.approx(value, abs=1e-6), (task, name)
            else:
                assert ours[task][name] == value, (task, name)


@pytest.mark.slow
def test_evaluate_equals_the_coco_evaluator(ingested, synth_coco_dir, tmp_path_factory, tmp_path, capsys):
    """Same tiny export, same images, batches of one (sampling then does not depend on
    how images are grouped): the same metrics for every task."""
    export_dir = tiny_export.exported_tiny(tmp_path_factory)
    config = {"tasks": list(ALL_TASKS), "batch_size": 1, "num_pictures": 1}
    report = run_evaluator(ingested, export_dir, str(tmp_path / "evaluator"), config)
    out = tmp_path / "metrics.json"
    rc = cli.main(["evaluate", "--model", export_dir, "--coco-dir", synth_coco_dir, "--split", "val",
                   "--batch-size", "1", "--json", str(out)])
    assert rc == 0
    captured = capsys.readouterr()
    ours = json.loads(out.read_text())
    assert ours["num_images"] == report["num_images"] == 6 and ours["skipped"] == []
    _assert_same_metrics(ours["metrics"], report["candidate"], ALL_TASKS)
    assert "evaluating: 6/6 images" in captured.out  # progress (pix2seq/progress.py)
    assert "task          metric      value" in captured.out and "keypoints     AP" in captured.out
    assert report["pictures"] and os.path.exists(report["pictures"][0])


@pytest.mark.slow
def test_missing_split_is_a_clear_error(toy_model, synth_coco_dir, capsys):
    rc = cli.main(["evaluate", "--model", toy_model, "--coco-dir", synth_coco_dir, "--split", "test2017"])
    err = capsys.readouterr().err
    assert rc == 2 and "split 'test2017'" in err and "found eval (val), train (train)" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_model_without_the_needed_signature_is_a_clear_error(toy_model, synth_coco_dir, capsys):
    # the toy model has the plain signatures only, not detect_and_describe_with_options
    rc = cli.main(["evaluate", "--model", toy_model, "--coco-dir", synth_coco_dir, "--temperature", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "detect_and_describe_with_options" in err and "Traceback" not in err


def test_missing_model_is_a_clear_error(synth_coco_dir, tmp_path, capsys):
    rc = cli.main(["evaluate", "--model", str(tmp_path), "--coco-dir", synth_coco_dir])
    assert rc == 2 and "no saved_model.pb" in capsys.readouterr().err


@pytest.mark.slow
def test_undecodable_images_are_reported_and_skipped(toy_model, synth_coco_dir, tmp_path, capsys):
    coco_dir = tmp_path / "coco"
    shutil.copytree(synth_coco_dir, coco_dir)
    with open(coco_dir / "annotations" / "instances_val.json") as f:
        names = sorted(image["file_name"] for image in json.load(f)["images"])
    (coco_dir / "images" / "val" / names[0]).write_bytes(b"not an image at all")
    out = tmp_path / "metrics.json"
    rc = cli.main(["evaluate", "--model", toy_model, "--coco-dir", str(coco_dir), "--tasks", "detection",
                   "--json", str(out)])
    captured = capsys.readouterr()
    assert rc == 0 and f"skipped {names[0]}: image_undecodable" in captured.err
    report = json.loads(out.read_text())
    assert report["num_images"] == len(names) - 1 and report["skipped"][0]["file_name"] == names[0]
    assert isinstance(report["metrics"]["detection"]["AP"], float)
    assert "detection     AP50" in captured.out and "5 images, 1 skipped" in captured.out


@pytest.mark.slow
def test_max_examples_scores_the_first_images_by_id_as_evaluate_does(ingested, synth_coco_dir, toy_model,
                                                                      tmp_path):
    """The evaluator's `max_examples` and `pix2seq evaluate --max-images` pick the same images
    (the smallest ids, whatever the shard order) and so agree; the pictures are the first
    `num_pictures` of those."""
    import tensorflow as tf

    from components.coco_evaluator import ground_truth as gt_lib

    # the eval split rewritten largest id first: "first 4 in file order" would pick other images
    examples = tmp_path / "examples"
    shutil.copytree(ingested, examples, ignore=shutil.ignore_patterns("Split-eval"))
    records = sorted(gt_lib.read_examples(os.path.join(ingested, "Split-eval", "*")), key=eval_examples.image_id)
    os.makedirs(examples / "Split-eval")
    with tf.io.TFRecordWriter(str(examples / "Split-eval" / "data.gz"), options="GZIP") as writer:
        for record in reversed(records):
            writer.write(record)
    config = {"tasks": ["detection"], "batch_size": 2, "max_examples": 4, "num_pictures": 2}
    report = run_evaluator(str(examples), toy_model, str(tmp_path / "evaluator"), config)
    with open(tmp_path / "evaluator" / "evaluation" / "ground_truth" / "instances.json") as f:
        scored_ids = sorted(image["id"] for image in json.load(f)["images"])
    with open(os.path.join(synth_coco_dir, "annotations", "instances_val.json")) as f:
        all_ids = sorted(image["id"] for image in json.load(f)["images"])
    assert report["num_images"] == 4 and scored_ids == all_ids[:4]
    assert sorted(os.path.basename(p) for p in report["pictures"]) == [f"image_{i}.png" for i in all_ids[:2]]
    out = tmp_path / "metrics.json"
    assert cli.main(["evaluate", "--model", toy_model, "--coco-dir", synth_coco_dir, "--tasks", "detection",
                     "--max-images", "4", "--json", str(out)]) == 0
    ours = json.loads(out.read_text())
    assert ours["num_images"] == 4
    _assert_same_metrics(ours["metrics"], report["candidate"], ["detection"])
