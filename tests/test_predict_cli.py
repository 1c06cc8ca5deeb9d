"""`pix2seq predict` on synth images: COCO JSON that pycocotools loads and that equals
the evaluator's result entries, pictures, and the backend seam (any object with
`predict(signature, images, **inputs)`)."""
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from pix2seq import cli
from components.coco_evaluator import evaluation, model_runner
from model import results
from pix2seq import evaluate as evaluate_cli
from pix2seq import predict_cli
import tiny_export


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return tiny_export.exported_tiny(tmp_path_factory)


@pytest.fixture(scope="module")
def val_images(synth_coco_dir):
    folder = os.path.join(synth_coco_dir, "images", "val")
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder))[:2]]


def _coco(synth_coco_dir, kind):
    return COCO(os.path.join(synth_coco_dir, "annotations", f"{kind}_val.json"))


def _kind_files(out_json):
    root = str(out_json)[:-len(".json")]
    return {"bbox": str(out_json), **{k: f"{root}_{k}.json" for k in ("segm", "keypoints", "captions")}}


@pytest.mark.slow
def test_predict_all_writes_coco_json_and_pictures(export_dir, val_images, synth_coco_dir, tmp_path, capsys):
    out_json = tmp_path / "results.json"
    annotations = os.path.join(synth_coco_dir, "annotations", "instances_val.json")
    rc = cli.main(["predict", "--model", export_dir, "--task", "all", *val_images, "--json", str(out_json),
                   "--viz", str(tmp_path / "viz"), "--annotations", annotations])
    assert rc == 0
    printed = capsys.readouterr().out
    assert all(os.path.basename(p) in printed for p in val_images) and "caption:" in printed
    files = _kind_files(out_json)
    assert all(f"wrote {path}" in printed for path in files.values())
    entries = json.loads(out_json.read_text())
    assert entries and all(set(e) == {"image_id", "category_id", "bbox", "score"} for e in entries)
    gt = _coco(synth_coco_dir, "instances")
    assert len(gt.loadRes(files["bbox"]).getAnnIds()) == len(entries)
    with open(files["segm"]) as f:
        masks = json.load(f)
    assert len(masks) == len(entries)  # one mask per detection, rasterized at each image's own size
    for e in masks:
        img = gt.loadImgs(e["image_id"])[0]
        assert e["segmentation"]["size"] == [img["height"], img["width"]]
    gt.loadRes(files["segm"])
    with open(files["captions"]) as f:
        captions = json.load(f)
    assert {c["image_id"] for c in captions} == {e for e in gt.getImgIds() if any(
        gt.loadImgs(e)[0]["file_name"] == os.path.basename(p) for p in val_images)}
    _coco(synth_coco_dir, "captions").loadRes(files["captions"])
    for path in val_images:
        picture = Image.open(tmp_path / "viz" / (os.path.splitext(os.path.basename(path))[0] + ".png"))
        original = Image.open(path)
        assert picture.width == original.width and picture.height > original.height  # caption strip


@pytest.mark.slow
def test_predict_json_equals_the_evaluators_results(export_dir, val_images, synth_coco_dir, tmp_path):
    """The same images in the same batch: `pix2seq predict --task all --json` writes
    exactly the COCO entries the evaluator scores (one results path, model/results.py)."""
    out_json = tmp_path / "results.json"
    annotations = os.path.join(synth_coco_dir, "annotations", "instances_val.json")
    assert cli.main(["predict", "--model", export_dir, "--task", "all", *val_images, "--json", str(out_json),
                     "--annotations", annotations]) == 0
    records, image_dir, categories, num_keypoints = evaluate_cli.load_split(synth_coco_dir, "val")
    names = [os.path.basename(p) for p in val_images]
    chosen = sorted((r for r in records if r["file_name"] in names), key=lambda r: names.index(r["file_name"]))
    decoded, skipped = evaluate_cli.decode_images(chosen, image_dir, num_keypoints)
    assert not skipped and len(decoded) == len(val_images)
    tasks = ("detection", "segmentation", "keypoints", "captioning")
    runner = model_runner.ModelRunner(export_dir, tasks)
    per_image = evaluation.predict_batch(runner, decoded, evaluation.EvalOptions(tasks=tasks))
    expected = results.coco_results(per_image)
    for kind, path in _kind_files(out_json).items():
        with open(path) as f:
            assert json.load(f) == json.loads(json.dumps(expected[kind])), kind


@pytest.mark.slow
def test_predict_detect_with_options(export_dir, val_images, synth_coco_dir, tmp_path):
    out_json = tmp_path / "det.json"
    rc = cli.main(["predict", "--model", export_dir, "--task", "detect", *val_images, "--json", str(out_json),
                   "--max-objects", "1", "--seed", "0"])  # sampled: greedy random weights give empty boxes
    assert rc == 0
    entries = json.loads(out_json.read_text())
    per_image = {}
    for e in entries:
        per_image[e["image_id"]] = per_image.get(e["image_id"], 0) + 1
        assert set(e) == {"image_id", "category_id", "bbox", "score"}
    assert 1 <= len(entries) and max(per_image.values()) == 1
    _coco(synth_coco_dir, "instances").loadRes(str(out_json))


class PersonBackend:
    """The real SavedModel, but every detection is relabelled a person (random
    weights rarely emit class 1), so the keypoints path runs end to end."""

    def __init__(self, model_dir):
        self.inner = predict_cli.SavedModelBackend(model_dir)
        self.signature_names = self.inner.signature_names
        self.calls = []

    def predict(self, signature, images, **inputs):
        self.calls.append(signature)
        out = self.inner.predict(signature, images, **inputs)
        if signature.startswith("detect"):
            out["classes"] = np.where(out["classes"] > 0, 1, 0).astype(np.int32)
        return out


@pytest.mark.slow
def test_keypoints_task_through_a_backend_object(export_dir, val_images, synth_coco_dir, tmp_path):
    backend = PersonBackend(export_dir)
    args = SimpleNamespace(task="keypoints", images=val_images, json_out=str(tmp_path / "kp.json"),
                           viz=str(tmp_path / "viz"), annotations=None, min_score=0.0, person_class=1,
                           max_objects=None, temperature=None, top_p=None, num_samples=None, seed=None)
    found = predict_cli.run(backend, args)
    assert backend.calls == ["detect", "keypoints"]
    entries = json.loads((tmp_path / "kp.json").read_text())
    assert entries and all(len(e["keypoints"]) == 51 and e["category_id"] == 1 for e in entries)
    assert all(e["keypoints"][2::3] == [results.KEYPOINT_VISIBILITY] * 17 for e in entries)
    _coco(synth_coco_dir, "person_keypoints").loadRes(str(tmp_path / "kp.json"))
    objects = [obj for r in found for obj in r["objects"]]
    assert sorted(e["score"] for e in entries) == sorted(obj["keypoint_score"] for obj in objects)
    assert all(np.asarray(obj["keypoints"]).shape == (17, 3) for obj in objects)
    assert json.loads((tmp_path / "kp_bbox.json").read_text())  # the persons' boxes beside them
    assert len(os.listdir(tmp_path / "viz")) == len(val_images)


@pytest.mark.slow
def test_missing_image_is_an_error(export_dir, tmp_path, capsys):
    rc = cli.main(["predict", "--model", export_dir, str(tmp_path / "nope.jpg")])
    assert rc == 2 and "nope.jpg" in capsys.readouterr().err


@pytest.mark.slow
def test_model_base_dir_resolves_to_highest_version(export_dir, tmp_path):
    for v in ("1", "12", "3"):
        os.symlink(export_dir, tmp_path / v)
    (tmp_path / "tmp-99").mkdir()
    assert predict_cli.resolve_model_dir(str(tmp_path)) == str(tmp_path / "12")
    with pytest.raises(FileNotFoundError, match="no saved_model.pb"):
        predict_cli.resolve_model_dir(str(tmp_path / "tmp-99"))
