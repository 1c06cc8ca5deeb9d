"""`pix2seq predict` on synth images: COCO JSON that pycocotools loads, pictures, and
the backend seam (any object with `predict(signature, images, **inputs)`)."""
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from pix2seq import cli
from serving import predict_cli, results
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


def test_predict_all_writes_coco_json_and_pictures(export_dir, val_images, synth_coco_dir, tmp_path, capsys):
    out_json = tmp_path / "results.json"
    annotations = os.path.join(synth_coco_dir, "annotations", "instances_val.json")
    rc = cli.main(["predict", "--model", export_dir, "--task", "all", *val_images, "--json", str(out_json),
                   "--viz", str(tmp_path / "viz"), "--annotations", annotations])
    assert rc == 0
    printed = capsys.readouterr().out
    assert all(os.path.basename(p) in printed for p in val_images) and "caption:" in printed
    entries = json.loads(out_json.read_text())
    assert entries and all("segmentation" in e and "bbox" in e for e in entries)
    gt = _coco(synth_coco_dir, "instances")
    loaded = gt.loadRes(str(out_json))
    assert len(loaded.getAnnIds()) == len(entries)
    for e in entries:  # masks are rasterized at each image's own size
        img = gt.loadImgs(e["image_id"])[0]
        assert e["segmentation"]["size"] == [img["height"], img["width"]]
    captions = json.loads((tmp_path / "results_captions.json").read_text())
    assert {c["image_id"] for c in captions} == {e for e in gt.getImgIds() if any(
        gt.loadImgs(e)[0]["file_name"] == os.path.basename(p) for p in val_images)}
    _coco(synth_coco_dir, "captions").loadRes(str(tmp_path / "results_captions.json"))
    for path in val_images:
        picture = Image.open(tmp_path / "viz" / (os.path.splitext(os.path.basename(path))[0] + ".png"))
        original = Image.open(path)
        assert picture.width == original.width and picture.height > original.height  # caption strip


def test_predict_detect_with_options(export_dir, val_images, synth_coco_dir, tmp_path):
    out_json = tmp_path / "det.json"
    rc = cli.main(["predict", "--model", export_dir, "--task", "detect", *val_images, "--json", str(out_json),
                   "--max-objects", "1", "--temperature", "0"])
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
        self.calls = []

    def predict(self, signature, images, **inputs):
        self.calls.append(signature)
        out = self.inner.predict(signature, images, **inputs)
        if signature.startswith("detect"):
            out["classes"] = np.where(out["classes"] > 0, 1, 0).astype(np.int32)
        return out


def test_keypoints_task_through_a_backend_object(export_dir, val_images, synth_coco_dir, tmp_path):
    backend = PersonBackend(export_dir)
    args = SimpleNamespace(task="keypoints", images=val_images, json_out=str(tmp_path / "kp.json"),
                           viz=str(tmp_path / "viz"), annotations=None, min_score=0.0, person_class=1,
                           max_objects=None, temperature=None, top_p=None, num_samples=None, seed=None)
    found = predict_cli.run(backend, args)
    assert backend.calls == ["detect", "keypoints"]
    entries = json.loads((tmp_path / "kp.json").read_text())
    assert entries and all(len(e["keypoints"]) == 51 and e["category_id"] == 1 for e in entries)
    _coco(synth_coco_dir, "person_keypoints").loadRes(str(tmp_path / "kp.json"))
    for r in found:
        for obj in r["objects"]:
            kp = obj["keypoints"]
            assert kp.shape == (17, 3) and np.all((kp[:, 2] > 0) & (kp[:, 2] <= 1))
    assert len(os.listdir(tmp_path / "viz")) == len(val_images)


def test_missing_image_is_an_error(export_dir, tmp_path, capsys):
    rc = cli.main(["predict", "--model", export_dir, str(tmp_path / "nope.jpg")])
    assert rc == 2 and "nope.jpg" in capsys.readouterr().err


def test_model_base_dir_resolves_to_highest_version(export_dir, tmp_path):
    for v in ("1", "12", "3"):
        os.symlink(export_dir, tmp_path / v)
    (tmp_path / "tmp-99").mkdir()
    assert predict_cli.resolve_model_dir(str(tmp_path)) == str(tmp_path / "12")
    with pytest.raises(FileNotFoundError, match="no saved_model.pb"):
        predict_cli.resolve_model_dir(str(tmp_path / "tmp-99"))


def test_paste_box_mask_places_cells_at_pixel_centres():
    cells = np.zeros([4, 4], np.float32)
    cells[:2, :] = 1.0  # top half of the box
    cells[2:, :2] = 0.5  # bottom-left quarter at exactly the threshold
    mask = results.paste_box_mask(cells, (2, 4, 10, 12), 12, 16)
    expected = np.zeros([12, 16], bool)
    expected[2:6, 4:12] = True
    expected[6:10, 4:8] = True
    np.testing.assert_array_equal(mask, expected)
    assert not results.paste_box_mask(cells, (5, 5, 5, 9), 12, 16).any()  # empty box
