"""model/results.py on hand-built signature outputs: the paper's rules for boxes, masks
(sampled polygons rasterized at image resolution, averaged, >= 0.5), keypoints
(instance score = keypoint_scores, persons only, visibility 2), captions and ids."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from components import coco_metrics
from model import results

H, W = 60, 80


def _polygon(yx, parts=None, size=8):
    """(y, x) vertices -> padded ([size, 2] points, [size] parts) of one sample."""
    yx = np.asarray(yx, np.float32)
    points = np.zeros([size, 2], np.float32)
    part = np.full([size], -1, np.int32)
    points[:len(yx)] = yx
    part[:len(yx)] = 0 if parts is None else parts
    return points, part


def _outputs(samples_per_detection, keypoint_scores=(0.7, 0.2, 0.4)):
    """One image, three detections (a person, a clipped square, an empty box) + a padding row."""
    polygons = np.zeros([1, 4, 3, 8, 2], np.float32)
    parts = np.full([1, 4, 3, 8], -1, np.int32)
    for n, samples in enumerate(samples_per_detection):
        for s, (yx, part) in enumerate(samples):
            polygons[0, n, s], parts[0, n, s] = _polygon(yx, part)
    keypoints = np.zeros([1, 4, 2, 3], np.float32)
    keypoints[0, 0] = [[12.0, 15.0, 0.8], [14.0, 30.0, 0.4]]
    keypoints[0, 1] = [[50.0, 25.0, 0.9], [55.0, 26.0, 0.9]]
    return {
        "boxes": np.array([[[10, 5, 40, 25], [20, 40, 100, 120], [30, 30, 30, 50], [1, 1, 5, 5]]], np.float32),
        "classes": np.array([[1, 5, 5, 3]], np.int32),
        "scores": np.array([[0.9, 0.6, 0.5, 0.4]], np.float32),
        "num_detections": np.array([3], np.int32),
        "polygons": polygons,
        "polygon_parts": parts,
        "keypoints": keypoints,
        "keypoint_scores": np.array([[*keypoint_scores, 0.0]], np.float32),
        "captions": np.array([b"a person next to a square"]),
    }


SQUARE = [[10, 10], [10, 30], [30, 30], [30, 10]]  # (y, x): rows 10..30, columns 10..30
WIDE = [[10, 10], [10, 50], [30, 50], [30, 10]]
SAMPLES = [
    [(SQUARE, None), (SQUARE, None), (WIDE, None)],  # person: 2 of 3 samples say the square
    [(WIDE, None), (WIDE, None), (SQUARE, None)],  # square: the wide box wins
    [(SQUARE, None)] * 3,  # empty box: no detection at all
]


def _coco_mask(flat_xy_parts, height=H, width=W):
    """The mask pycocotools makes of a polygon annotation (COCO.annToMask)."""
    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "height": height, "width": width}], "categories": [{"id": 1}],
                  "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 1.0,
                                   "bbox": [0, 0, 1, 1], "segmentation": flat_xy_parts}]}
    gt.createIndex()
    return gt.annToMask(gt.anns[1]).astype(bool)


def test_boxes_are_clipped_and_padding_and_empty_boxes_dropped():
    out = results.image_result(_outputs(SAMPLES), 0, 7, H, W)
    objects = out["objects"]
    assert [o["detection"] for o in objects] == [0, 1]  # row 2 empty, row 3 past num_detections
    assert objects[0]["box"] == [10.0, 5.0, 40.0, 25.0] and objects[0]["bbox"] == [5.0, 10.0, 20.0, 30.0]
    assert objects[1]["box"] == [20.0, 40.0, 60.0, 80.0] and objects[1]["bbox"] == [40.0, 20.0, 40.0, 40.0]
    assert results.clip_box([-5, -5, -1, 10], H, W) is None
    assert out["image_id"] == 7 and out["caption"] == "a person next to a square"
    above = results.image_result(_outputs(SAMPLES), 0, 7, H, W, results.ResultOptions(min_score=0.7))
    assert [o["detection"] for o in above["objects"]] == [0]


def test_mask_is_the_vote_of_the_samples_at_image_resolution():
    out = results.image_result(_outputs(SAMPLES), 0, 7, H, W)
    person, square = (results.decode_mask(o) for o in out["objects"])
    square_mask = _coco_mask([[10, 10, 30, 10, 30, 30, 10, 30]])
    wide_mask = _coco_mask([[10, 10, 50, 10, 50, 30, 10, 30]])
    assert person.shape == (H, W)
    np.testing.assert_array_equal(person, square_mask)
    np.testing.assert_array_equal(square, wide_mask)
    # threshold is configurable: with 0.9 only what all three samples cover survives
    strict = results.image_result(_outputs(SAMPLES), 0, 7, H, W, results.ResultOptions(mask_threshold=0.9))
    np.testing.assert_array_equal(results.decode_mask(strict["objects"][1]), square_mask)
    # the mask's score is the detection's
    segm = results.coco_results([out])["segm"]
    assert [e["score"] for e in segm] == pytest.approx([0.9, 0.6])


def test_a_perfect_polygon_gives_the_ground_truth_mask_and_segm_ap_1():
    rng = np.random.RandomState(3)
    for trial in range(20):
        # an irregular two-part polygon, partly outside the image
        centre = rng.uniform([0, 0], [H, W])
        angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
        radii = rng.uniform(5, 30, 7)
        outer = centre + np.stack([np.sin(angles), np.cos(angles)], 1) * radii[:, None]
        inner = rng.uniform([0, 0], [H, W]) + rng.uniform(-6, 6, [3, 2])
        yx = np.concatenate([outer, inner])
        part = np.array([0] * 7 + [1] * 3)
        points, parts = _polygon(yx, part, size=12)
        coco_parts = [list(outer[:, ::-1].reshape(-1)), list(inner[:, ::-1].reshape(-1))]
        expected = _coco_mask(coco_parts)
        got = results.ensemble_mask(np.stack([points] * 8), np.stack([parts] * 8), H, W)
        np.testing.assert_array_equal(got, expected, err_msg=f"trial {trial}")


def test_ensemble_mask_equals_full_size_rasterization():
    """The bounding-region shortcut gives exactly the full-image average of the samples."""
    rng = np.random.RandomState(0)
    for trial in range(40):
        s, p = 5, 10
        points = rng.uniform([-10, -10], [H + 10, W + 10], [s, p, 2]).astype(np.float32)
        points = np.where(rng.rand(s, 1, 1) < 0.5, points * 0.3 + rng.uniform(0, 40, [s, 1, 2]), points)
        parts = np.sort(rng.randint(0, 3, [s, p]), axis=1)
        parts[rng.rand(s, p) < 0.2] = -1
        reference = np.zeros([H, W], np.float64)
        for q, r in zip(points, parts):
            reference += results._union_mask(results.polygon_parts(q, r), H, W)
        expected = reference / s >= 0.5
        got = results.ensemble_mask(points, parts, H, W)
        np.testing.assert_array_equal(got, expected, err_msg=f"trial {trial}")


def test_polygon_parts_follow_runs_and_drop_degenerate_parts():
    points = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [1, 1], [0, 0]], np.float32)
    parts = np.array([0, 0, 0, 1, 1, -1, -1])
    assert results.polygon_parts(points, parts) == [[1.0, 0.0, 3.0, 2.0, 5.0, 4.0]]
    assert results.polygon_parts(points, np.full(7, -1)) == []
    assert not results.ensemble_mask(np.zeros([2, 4, 2]), np.full([2, 4], -1), 5, 6).any()


def test_keypoints_only_for_keypoint_categories_scored_by_keypoint_scores():
    out = results.image_result(_outputs(SAMPLES), 0, 7, H, W)
    person, square = out["objects"]
    assert person["keypoints"] == [[12.0, 15.0, pytest.approx(0.8)], [14.0, 30.0, pytest.approx(0.4)]]
    assert person["keypoint_score"] == pytest.approx(0.7)
    assert "keypoints" not in square  # category 5 has no keypoints
    entries = results.coco_results([out])["keypoints"]
    assert len(entries) == 1 and entries[0]["score"] == pytest.approx(0.7)  # not 0.9 * mean(points)
    assert entries[0]["keypoints"] == [12.0, 15.0, 2, 14.0, 30.0, 2]
    other = results.image_result(_outputs(SAMPLES), 0, 7, H, W,
                                 results.ResultOptions(keypoint_category_ids=(5,)))
    assert [("keypoints" in o) for o in other["objects"]] == [False, True]


def test_tasks_select_what_is_converted():
    only = results.ResultOptions(tasks=("detection",))
    out = results.image_result(_outputs(SAMPLES), 0, 7, H, W, only)
    assert "caption" not in out and all(set(o) == {"detection", "category_id", "score", "box", "bbox"}
                                        for o in out["objects"])
    detect_only = {k: v for k, v in _outputs(SAMPLES).items()
                   if k in ("boxes", "classes", "scores", "num_detections")}
    assert set(results.coco_results([results.image_result(detect_only, 0, 7, H, W)])["bbox"][0]) == {
        "image_id", "category_id", "bbox", "score"}


def test_coco_results_are_json_ordered_by_image_and_score_as_coco():
    outputs = _outputs(SAMPLES)
    batch = {k: np.concatenate([v, v]) for k, v in outputs.items()}
    per_image = results.to_results(batch, [{"image_id": np.int64(9), "height": H, "width": W, "file": "b.png"},
                                           {"image_id": 3, "height": H, "width": W}])
    assert per_image[0]["file"] == "b.png" and "file" not in per_image[1]
    merged = results.coco_results(json.loads(json.dumps(per_image)))  # survives JSON (the evaluator's JSONL)
    assert [e["image_id"] for e in merged["bbox"]] == [3, 3, 9, 9]
    assert [c["image_id"] for c in merged["captions"]] == [3, 9]
    assert all(type(e["image_id"]) is int and type(e["category_id"]) is int for e in merged["bbox"])
    # Perfect predictions score AP 1: ground truth made of the same boxes and masks.
    gt = {"images": [{"id": i, "height": H, "width": W} for i in (3, 9)],
          "categories": [{"id": 1, "name": "person"}, {"id": 5, "name": "square"}], "annotations": []}
    for e in merged["segm"]:
        rle = dict(e["segmentation"])
        x, y, w, h = mask_utils.toBbox({**rle, "counts": rle["counts"].encode()}).tolist()
        gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": e["image_id"],
                                  "category_id": e["category_id"], "iscrowd": 0, "segmentation": rle,
                                  "area": float(mask_utils.area({**rle, "counts": rle["counts"].encode()})),
                                  "bbox": [x, y, w, h]})
    assert coco_metrics.coco_ap(gt, merged["segm"], "segm")["AP"] == pytest.approx(1.0)
