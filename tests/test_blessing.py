"""Blessing: the rule, and what TFX's Pusher and LatestBlessedModelStrategy do with
the ModelBlessing the CocoEvaluator writes."""
import os

from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components.blessing import decide
from components.coco_evaluator import executor as evaluator_executor

METRICS = {"detection": {"AP": 0.4, "AP50": 0.7}, "captioning": {"CIDEr-D": 1.0}}


def test_thresholds_met_blesses():
    decision = decide(METRICS, {"detection": {"AP50": 0.5}, "captioning": {"CIDEr-D": 0.5}})
    assert decision.blessed and decision.reasons == []
    assert len(decision.checks) == 2 and all(c.startswith("PASS") for c in decision.checks)


def test_impossible_threshold_is_not_blessed():
    decision = decide(METRICS, {"detection": {"AP50": 1.01}})
    assert not decision.blessed
    assert decision.reasons == ["detection/AP50 = 0.7000 vs threshold 1.01"]


def test_missing_metric_with_a_threshold_is_not_blessed():
    decision = decide({"keypoints": {"AP": None}}, {"keypoints": {"AP": 0.0}})
    assert not decision.blessed and "missing" in decision.reasons[0]


def test_better_baseline_is_not_blessed_and_margin_allows_small_drops():
    baseline = {"detection": {"AP": 0.6}, "captioning": {"CIDEr-D": 1.0}}
    worse = decide(METRICS, {}, baseline, margin=0.05)
    assert not worse.blessed
    assert worse.reasons == ["detection/AP = 0.4000 vs baseline 0.6000 (allowed drop 0.05)"]
    assert decide(METRICS, {}, baseline, margin={"detection": 0.25}).blessed
    assert decide(METRICS, {}, METRICS, margin=0.0).blessed  # equal to the baseline is fine
    # A task the baseline could not score is skipped, not failed.
    skipped = decide(METRICS, {}, {"detection": {"AP": None}}, margin=0.0)
    assert skipped.blessed and any(c.startswith("SKIP") for c in skipped.checks)


def _model(tmp_path, name, artifact_id):
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / name)
    model.id = artifact_id
    serving = os.path.join(model.uri, "Format-Serving")
    os.makedirs(os.path.join(serving, "variables"))
    with open(os.path.join(serving, "saved_model.pb"), "w") as f:
        f.write(name)
    return model


def _blessing(tmp_path, name, decision, model, baseline=None):
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / name)
    os.makedirs(blessing.uri)
    evaluator_executor.write_blessing(blessing, decision, model, baseline)
    return blessing


def _push(tmp_path, model, blessing, serving_dir):
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / f"pushed_{blessing.uri.split('/')[-1]}")
    os.makedirs(pushed.uri)
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(serving_dir)))
    pusher_executor.Executor().Do(
        {"model": [model], "model_blessing": [blessing]}, {"pushed_model": [pushed]},
        {"push_destination": proto_utils.proto_to_json(destination)})
    return pushed


def test_pusher_pushes_nothing_when_not_blessed_and_keeps_the_previous_version(tmp_path):
    serving_dir = tmp_path / "serving"
    previous = serving_dir / "1700000000"
    previous.mkdir(parents=True)
    (previous / "saved_model.pb").write_text("previous model")
    before = sorted(os.listdir(serving_dir))

    candidate = _model(tmp_path, "candidate", 7)
    rejected = decide(METRICS, {"detection": {"AP50": 1.01}})
    blessing = _blessing(tmp_path, "blessing", rejected, candidate)
    assert os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED"))
    assert blessing.get_int_custom_property("blessed") == 0
    assert blessing.get_int_custom_property("current_model_id") == 7

    pushed = _push(tmp_path, candidate, blessing, serving_dir)
    assert pushed.get_int_custom_property("pushed") == 0
    assert sorted(os.listdir(serving_dir)) == before
    assert (previous / "saved_model.pb").read_text() == "previous model"

    accepted = _blessing(tmp_path, "blessing2", decide(METRICS, {}), candidate)
    assert os.path.exists(os.path.join(accepted.uri, "BLESSED"))
    pushed = _push(tmp_path, candidate, accepted, serving_dir)
    assert pushed.get_int_custom_property("pushed") == 1
    versions = sorted(os.listdir(serving_dir))
    assert len(versions) == 2 and versions[0] == "1700000000"
    new = serving_dir / versions[1]
    assert (new / "saved_model.pb").read_text() == "candidate"
    assert pushed.get_string_custom_property("pushed_destination") == str(new)


def test_resolver_picks_the_latest_blessed_model(tmp_path):
    old = _model(tmp_path, "old", 3)
    mid = _model(tmp_path, "mid", 5)
    new = _model(tmp_path, "new", 9)
    blessings = [
        _blessing(tmp_path, "b_old", decide(METRICS, {}), old),
        _blessing(tmp_path, "b_mid", decide(METRICS, {}), mid, baseline=old),
        _blessing(tmp_path, "b_new", decide(METRICS, {"detection": {"AP": 0.9}}), new, baseline=mid),
    ]
    assert blessings[1].get_int_custom_property("baseline_model_id") == 3
    result = LatestBlessedModelStrategy()._resolve(
        {"model": [old, mid, new], "model_blessing": blessings}, "model", "model_blessing")
    assert [m.id for m in result["model"]] == [5]  # `new` was not blessed
    assert blessings[2].get_string_custom_property("blessing_message") == \
        "detection/AP = 0.4000 vs threshold 0.9"


def test_comparison_runs_over_the_tasks_both_models_serve():
    """A baseline trained for detection only vs a detection + segmentation candidate (and
    the reverse): the shared task is compared, the other is a SKIP, not a failure."""
    candidate = {"detection": {"AP": 0.4}, "segmentation": {"AP": 0.1}}
    detection_only = {"detection": {"AP": 0.3}}
    newer_task = decide(candidate, {}, detection_only)
    assert newer_task.blessed
    assert "SKIP segmentation/AP: the baseline does not serve segmentation (thresholds only)" in newer_task.checks
    # ... judged by its thresholds only
    gated = decide(candidate, {"segmentation": {"AP": 0.2}}, detection_only)
    assert gated.reasons == ["segmentation/AP = 0.1000 vs threshold 0.2"]
    # the shared task still compares
    assert not decide(candidate, {}, {"detection": {"AP": 0.5}}).blessed
    dropped = decide({"detection": {"AP": 0.45}}, {}, candidate)  # the candidate no longer serves segmentation
    assert dropped.blessed and "SKIP segmentation/AP: the candidate does not serve segmentation" in dropped.checks
    assert not decide(detection_only, {}, candidate).blessed  # its detection dropped below the baseline's


def test_baseline_is_scored_on_the_tasks_both_serve():
    from components.coco_evaluator.evaluation import baseline_tasks

    assert baseline_tasks(("detection", "segmentation"), ["detection"]) == ("detection",)
    assert baseline_tasks(("detection",), ["detection", "keypoints", "captioning"]) == ("detection",)
    assert baseline_tasks(("captioning",), ["detection"]) == ()
