"""`pix2seq tokens` on `pix2seq synth` data: all four tasks, decoded == ground truth."""
import json
import os

import numpy as np
import pytest

from pix2seq import cli

HALF_BIN = 0.5 / 999


def run_tokens(capsys, coco_dir, *extra):
    code = cli.main(["tokens", "--coco-dir", coco_dir, "--split", "val", "--preset", "tiny", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def load(coco_dir, kind):
    with open(os.path.join(coco_dir, "annotations", f"{kind}_val.json")) as f:
        return json.load(f)


def tolerance(out):
    return HALF_BIN * np.asarray(out["pixels_per_canvas"])[::-1] + 1e-3  # (x, y) pixels


def first_image_with(annotations, predicate):
    for ann in annotations:
        if predicate(ann):
            return ann
    raise AssertionError("synthetic val split lacks a needed annotation")


def test_detection_json_and_text(capsys, synth_coco_dir):
    instances = load(synth_coco_dir, "instances")
    image_id = instances["images"][0]["id"]
    code, stdout, _ = run_tokens(capsys, synth_coco_dir, "--image-id", str(image_id), "--task", "detection", "--json")
    assert code == 0
    out = json.loads(stdout)
    assert {"prompt", "input", "target", "weights", "decoded"} <= set(out)
    assert out["prompt"] == [10] and len(out["input"]) == len(out["target"]) == len(out["weights"])
    gt = sorted((a["category_id"], a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3])
                for a in instances["annotations"] if a["image_id"] == image_id and not a["iscrowd"])
    got = sorted((o["category_id"], o["bbox"][0], o["bbox"][1], o["bbox"][0] + o["bbox"][2],
                  o["bbox"][1] + o["bbox"][3]) for o in out["decoded"]["objects"])
    assert [g[0] for g in got] == [g[0] for g in gt] and gt
    tol = np.tile(tolerance(out), 2)
    assert np.all(np.abs(np.array(got)[:, 1:] - np.array(gt)[:, 1:]) <= tol + 1e-3)
    code, text, _ = run_tokens(capsys, synth_coco_dir, "--image-id", str(image_id), "--task", "detection")
    assert code == 0 and "<det>" in text and "<cls:" in text and "y=" in text and "weight" in text


def test_segmentation_decoded_polygon_matches(capsys, synth_coco_dir):
    instances = load(synth_coco_dir, "instances")
    ann = first_image_with(instances["annotations"], lambda a: not a["iscrowd"] and isinstance(a["segmentation"], list))
    code, stdout, _ = run_tokens(capsys, synth_coco_dir, "--image-id", str(ann["image_id"]), "--task", "segmentation",
                                 "--json")
    assert code == 0
    out = json.loads(stdout)
    target = next(a for a in instances["annotations"] if a["id"] == out["annotation_id"])
    assert out["prompt"][0] == 11 and out["prompt"][5] == 100 + target["category_id"]
    tol = tolerance(out)
    gt_vertices = np.concatenate([np.reshape(p, (-1, 2)) for p in target["segmentation"]])
    got_vertices = np.concatenate([np.reshape(p["polygon"], (-1, 2)) for p in out["decoded"]["parts"]])
    assert len(out["decoded"]["parts"]) == len(target["segmentation"])
    dist = np.abs(got_vertices[:, None] - gt_vertices[None])  # [got, gt, 2]
    close = np.all(dist <= tol, axis=2)
    assert close.any(axis=1).all() and close.any(axis=0).all()


def test_keypoints_decoded_points_match(capsys, synth_coco_dir):
    people = load(synth_coco_dir, "person_keypoints")
    ann = first_image_with(people["annotations"], lambda a: a["num_keypoints"] > 0 and not a["iscrowd"])
    code, stdout, _ = run_tokens(capsys, synth_coco_dir, "--image-id", str(ann["image_id"]), "--task", "keypoints",
                                 "--json")
    assert code == 0
    out = json.loads(stdout)
    target = next(a for a in people["annotations"] if a["id"] == out["annotation_id"])
    assert out["prompt"][0] == 12 and out["prompt"][5] == 101
    gt = np.reshape(target["keypoints"], (-1, 3))
    got = out["decoded"]["keypoints"]
    assert len(got) == len(gt)
    labeled = gt[:, 2] > 0
    visible = np.array([k["visible"] for k in got])
    np.testing.assert_array_equal(visible, labeled)
    xy = np.array([k["xy"] for k in got])[visible]
    assert np.all(np.abs(xy - gt[labeled, :2]) <= tolerance(out))


def test_captioning_round_trips_text(capsys, synth_coco_dir):
    captions = load(synth_coco_dir, "captions")
    ann = captions["annotations"][0]
    image_captions = [a for a in captions["annotations"] if a["image_id"] == ann["image_id"]]
    code, stdout, err = run_tokens(capsys, synth_coco_dir, "--image-id", str(ann["image_id"]), "--task", "captioning",
                                 "--json")
    assert code == 0, err
    out = json.loads(stdout)
    assert out["prompt"] == [13]
    assert out["decoded"]["text"] == out["caption"] == image_captions[0]["caption"].strip()
    n = len(out["decoded"]["caption_ids"])
    assert out["target"][n] == 3001 and out["weights"][n] == 0.1 and out["weights"][:n] == [1.0] * n


@pytest.mark.parametrize("extra,message", [
    (["--image-id", "999999", "--task", "detection"], "not in the eval split"),
    (["--image-id", "1", "--task", "detection", "--split", "test"], "--split"),
])
def test_errors_are_clear(capsys, synth_coco_dir, extra, message):
    args = ["tokens", "--coco-dir", synth_coco_dir, "--preset", "tiny", *extra]
    if "--split" not in extra:
        args += ["--split", "val"]
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err
