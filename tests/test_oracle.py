"""The whole post-processing chain on perfect tokens: an oracle model (tests/oracle_model.py)
emits the ground-truth sequences of a few synthetic images; they go through the exported
signatures (grammar, sampling, the tasks' decode rules, canvas and crop geometry),
`pix2seq evaluate` (model/results.py, the evaluator's scoring) and pycocotools. Any
coordinate, crop, paste or scoring mistake shows as AP below ~1 — no training needed.
"""
import glob
import json
import os

import pytest

import oracle_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def oracle_export(synth_coco_dir, tmp_path_factory):
    """The synth val split ingested as the pipeline does, and the oracle SavedModel over it."""
    import apache_beam as beam
    import keras

    from components import beam_ingest
    from model import export
    from model.config import preset
    from model.pix2seq_model import Pix2SeqModel

    out = tmp_path_factory.mktemp("oracle")
    dirs = [str(out / d) for d in ("examples", "vocabulary", "report")]
    beam_ingest.run_ingest(synth_coco_dir, *dirs, make_pipeline=beam.Pipeline, caption_vocab_size=500)
    with open(os.path.join(dirs[0], "dataset_info.json")) as f:
        info = json.load(f)
    keras.utils.set_random_seed(0)
    # The paper's polygon budget: a stick-figure person needs more than tiny's 32 points.
    model = Pix2SeqModel(preset("tiny", caption_vocab_size=info["caption_vocab_size"], max_polygon_points=128))
    model.build()
    table = oracle_model.make_oracle(model, sorted(glob.glob(os.path.join(dirs[0], "Split-eval", "*"))))
    model_dir = str(out / "model")
    caption_model = os.path.join(dirs[0], info["caption_model"]) if info.get("caption_model") else None
    export.export_saved_model(model, model_dir, caption_vocab_file=caption_model)
    return model_dir, table


def test_ground_truth_tokens_score_perfectly_through_the_served_chain(oracle_export, synth_coco_dir, tmp_path):
    from pix2seq import cli

    model_dir, table = oracle_export
    assert len(table["prompt"]) > 12  # images, instances, persons and captions all have entries
    report = tmp_path / "metrics.json"
    rc = cli.main(["evaluate", "--model", model_dir, "--coco-dir", synth_coco_dir, "--split", "val",
                   "--json", str(report)])
    assert rc == 0
    metrics = json.loads(report.read_text())["metrics"]
    assert metrics["detection"]["AP"] >= 0.99, metrics["detection"]
    assert metrics["keypoints"]["AP"] >= 0.99, metrics["keypoints"]
    assert metrics["segmentation"]["AP"] >= 0.95, metrics["segmentation"]
    # Captions: the oracle says each image's first reference caption.
    assert metrics["captioning"]["BLEU-4"] >= 0.5, metrics["captioning"]
