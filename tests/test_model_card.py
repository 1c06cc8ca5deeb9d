"""Model cards: built from the evaluator's report and artifacts, published next to the
pushed version (never inside it), readable as JSON and Markdown."""
import json
import os

import pytest

REPORT = {
    "eval_split": "eval", "num_images": 6, "tasks": ["detection", "captioning"],
    "candidate": {"detection": {"AP": 0.25, "AP50": 0.5}, "captioning": {"CIDEr-D": 0.75, "tokenizer": "ptb"}},
    "baseline": {"detection": {"AP": 0.2, "AP50": 0.4}, "captioning": {"CIDEr-D": 0.7, "tokenizer": "ptb"}},
    "blessing": {"blessed": True, "reasons": [], "checks": ["detection AP 0.25 >= 0.1"]},
}


def _artifact(kind, uri, artifact_id):
    from tfx.types import standard_artifacts

    artifact = getattr(standard_artifacts, kind)()
    artifact.uri, artifact.id = uri, artifact_id
    return artifact


@pytest.fixture
def card(tmp_path):
    from components import model_card
    from model.export import MODEL_CONFIG_FILE

    saved_model = tmp_path / "model" / "Format-Serving"
    os.makedirs(saved_model / os.path.dirname(MODEL_CONFIG_FILE))
    (saved_model / MODEL_CONFIG_FILE).write_text(json.dumps({"image_size": 64, "tokens": {"num_bins": 64}}))
    return model_card.build(
        REPORT, _artifact("Model", str(tmp_path / "model"), 7), _artifact("Examples", "/ex", 3),
        _artifact("Model", "/old", 5), _artifact("ModelEvaluation", "/ev", 9), _artifact("ModelBlessing", "/bl", 10),
        str(saved_model), [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}], "run-1")


def test_card_records_data_config_metrics_blessing_and_lineage(card):
    assert card["model"]["config"] == {"image_size": 64, "tokens": {"num_bins": 64}}  # the export's config
    assert card["data"] == {"examples_uri": "/ex", "examples_id": 3, "eval_split": "eval", "num_images": 6,
                            "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]}
    assert card["metrics"] == REPORT["candidate"] and card["baseline"]["metrics"] == REPORT["baseline"]
    assert card["blessing"]["blessed"] is True
    assert card["lineage"] == {"model_id": 7, "examples_id": 3, "baseline_model_id": 5, "evaluation_id": 9,
                               "blessing_id": 10, "pipeline_run_id": "run-1"}
    json.dumps(card)  # JSON-able as it is


def test_markdown_shows_the_same_facts(card):
    from components import model_card

    pushed = model_card.with_push(card, "/serving/pix2seq/1700000000", 12, "run-2", {"learning_rate": 0.001})
    page = model_card.to_markdown(pushed)
    assert page.startswith("# Model card: pix2seq version 1700000000\n")
    assert "**BLESSED**" in page and "| detection | AP | 0.2500 |" in page and "| captioning | tokenizer | ptb |" in page
    assert "person, car" in page and "| blessing_id | 10 |" in page and "detection AP 0.25 >= 0.1" in page
    assert '"learning_rate": 0.001' in page and '"num_bins": 64' in page
    not_blessed = dict(card, blessing={"blessed": False, "reasons": ["detection AP below 0.5"], "checks": []})
    assert "**NOT BLESSED**: detection AP below 0.5" in model_card.to_markdown(not_blessed)


def test_published_card_sits_beside_the_version_which_stays_a_pure_saved_model(card, tmp_path):
    from components import model_card
    from serving import model_loader

    base = tmp_path / "serving"
    version = base / "1700000000"
    os.makedirs(version)
    (version / "saved_model.pb").write_bytes(b"")
    path = model_card.publish_next_to(model_card.with_push(card, str(version), 12, "run-2"), str(version))
    assert path == str(base / "1700000000.model_card.json")
    assert sorted(os.listdir(base)) == ["1700000000", "1700000000.model_card.json", "1700000000.model_card.md"]
    assert os.listdir(version) == ["saved_model.pb"]
    assert model_loader.scan_versions(str(base)) == [1700000000]  # servers see no extra version
    back = model_card.read(path)
    assert back["push"] == {"version": "1700000000", "destination": str(version), "pushed_model_id": 12,
                            "pipeline_run_id": "run-2"}
    assert back["lineage"] == card["lineage"]


def test_push_fills_the_lineage_ids_the_evaluator_could_not_know(card):
    from components import model_card

    # While the evaluator runs, its own outputs have no MLMD ids yet.
    partial = dict(card, lineage=dict(card["lineage"], evaluation_id=None, blessing_id=None))
    pushed = model_card.with_push(partial, "/serving/17", 12, "run-2", lineage={"evaluation_id": 21, "blessing_id": 22,
                                                                               "model_id": 99})
    assert pushed["lineage"] == dict(card["lineage"], evaluation_id=21, blessing_id=22)  # known ids stay


def test_runner_publishes_the_evaluators_card_only_for_a_push(card, tmp_path):
    from components import model_card
    from pipeline.runner_local import RunSummary, publish_model_card

    evaluation = tmp_path / "evaluation"
    model_card.write(card, str(evaluation / model_card.CARD_DIR / model_card.JSON_FILE),
                     str(evaluation / model_card.CARD_DIR / model_card.MARKDOWN_FILE))
    destination = tmp_path / "serving" / "17"

    def summary(pushed):
        return RunSummary("p", "run-3", [], REPORT, str(evaluation), True, "", pushed,
                          str(destination) if pushed else None, None, None, None, pushed_model_id=4)

    assert publish_model_card(summary(False)) is None
    path = publish_model_card(summary(True), {"steps": 3})
    published = model_card.read(path)
    assert published["push"]["pushed_model_id"] == 4 and published["push"]["pipeline_run_id"] == "run-3"
    assert published["model"]["train_config"] == {"steps": 3}
    assert os.path.exists(str(destination) + ".model_card.md")
