"""docs/KERAS.md's quick start is examples/quickstart.py, and it runs: synthetic data ->
Beam ingestion -> from_preset -> fit with the project's AdamW and the three callbacks ->
.keras save/load -> generate + COCO AP + a picture -> export. A few steps, a micro model,
one trained task."""
import importlib.util
import os
import re

import numpy as np
import pytest
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "examples", "quickstart.py")
MICRO = dict(image_size=32, max_instances=2, max_polygon_points=4, max_caption_len=8, encoder_depth=1,
             decoder_depth=1, encoder_dim=32, decoder_dim=32, encoder_mlp_dim=64, decoder_mlp_dim=64)


def _lines(text):
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_the_docs_show_the_example_code():
    with open(os.path.join(REPO, "docs", "KERAS.md")) as f:
        doc = f.read()
    with open(EXAMPLE) as f:
        example = _lines(f.read())
    blocks = re.findall(r"```python\n(.*?)```", doc.split("## Quick start")[1].split("\n## ")[0], re.S)
    assert len(blocks) == 2
    for block in blocks:
        lines = _lines(block)
        starts = [i for i, line in enumerate(example) if line == lines[0]]
        assert any(example[i:i + len(lines)] == lines for i in starts), block
    with open(os.path.join(REPO, "README.md")) as f:
        assert "docs/KERAS.md" in f.read()


@pytest.mark.slow
def test_quickstart_runs(tmp_path):
    spec = importlib.util.spec_from_file_location("quickstart", EXAMPLE)
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    # One trained task keeps the input pipelines few; generate and the export still run every task.
    model, results = quickstart.main(str(tmp_path), steps=2, images=8, tasks=["detection"], **MICRO)
    for name in ("best.keras", "model.keras", "first.png", os.path.join("export", "saved_model.pb")):
        assert os.path.exists(tmp_path / name), name
    assert any(files for _, _, files in os.walk(tmp_path / "logs"))
    assert len(results) == 2 and all(r["width"] > 0 and "objects" in r for r in results)
    assert model.optimizer.iterations.numpy() >= 1
    exported = tf.saved_model.load(str(tmp_path / "export"))
    with open(results[0]["file"], "rb") as f:
        out = exported.signatures["caption"](images=tf.constant([f.read()]))
    assert out["captions"].dtype == tf.string and np.shape(out["captions"]) == (1,)
