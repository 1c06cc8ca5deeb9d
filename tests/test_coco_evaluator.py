"""CocoEvaluator pieces without a model: signature outputs -> COCO result entries,
box-grid masks pasted into the image, entries regrouped for the pictures."""
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from components.coco_evaluator import pictures, predict

OPTIONS = predict.PredictOptions(tasks=("detection", "segmentation", "keypoints", "captioning"),
                                 keypoint_category_ids=(1,))


def _outputs():
    """One image (60 x 80), three detections: a person, a square, and an empty box."""
    grid = np.zeros((3, 4, 4), np.float32)
    grid[0] = 1.0  # the person's whole box
    grid[1, :2, :] = 0.75  # top half of the square's box
    grid[1, 2:, :] = 0.25
    keypoints = np.zeros((1, 3, 2, 3), np.float32)
    keypoints[0, 0] = [[12.0, 15.0, 0.8], [14.0, 30.0, 0.4]]
    return {
        "boxes": np.array([[[10, 5, 40, 25], [20, 40, 100, 120], [30, 30, 30, 50]]], np.float32),
        "classes": np.array([[1, 5, 5]], np.int32),
        "scores": np.array([[0.9, 0.6, 0.5]], np.float32),
        "num_detections": np.array([3], np.int32),
        "masks": grid[np.newaxis],
        "keypoints": keypoints,
        "captions": np.array([b"a person next to a square"]),
    }


def test_image_results_are_coco_entries():
    out = predict.image_results(7, 60, 80, _outputs(), 0, OPTIONS)
    assert out["image_id"] == 7 and out["caption"] == "a person next to a square"
    # boxes: (ymin, xmin, ymax, xmax) -> [x, y, w, h], clipped to the 60 x 80 image; the empty box dropped
    assert [b["bbox"] for b in out["bbox"]] == [[5.0, 10.0, 20.0, 30.0], [40.0, 20.0, 40.0, 40.0]]
    assert [b["detection"] for b in out["bbox"]] == [0, 1]
    person, square = (mask_utils.decode(s["segmentation"]) for s in out["segm"])
    assert person.shape == (60, 80) and person.sum() == 30 * 20 and person[10:40, 5:25].all()
    assert square.sum() == 20 * 40 and square[20:40, 40:80].all()  # the top half (cells >= 0.5)
    # keypoints only for the person category: (x, y, score) -> COCO (x, y, v=1)
    assert len(out["keypoints"]) == 1
    assert out["keypoints"][0]["keypoints"] == [12.0, 15.0, 1.0, 14.0, 30.0, 1.0]
    assert out["keypoints"][0]["score"] == pytest.approx(0.9 * 0.6)


def test_score_threshold_and_task_selection():
    only_boxes = predict.PredictOptions(tasks=("detection",), score_threshold=0.7)
    out = predict.image_results(7, 60, 80, _outputs(), 0, only_boxes)
    assert len(out["bbox"]) == 1 and out["segm"] == [] and out["keypoints"] == [] and out["caption"] is None


def test_paste_box_mask_follows_the_grid():
    grid = np.array([[1, 0], [0, 1]], bool)
    mask = predict.paste_box_mask(grid, (2.0, 4.0, 6.0, 8.0), 10, 10)
    assert mask.sum() == 8
    assert mask[2:4, 4:6].all() and mask[4:6, 6:8].all() and not mask[2:4, 6:8].any()
    assert not predict.paste_box_mask(grid, (5.0, 5.0, 5.0, 9.0), 10, 10).any()


def test_merge_results_and_visual_result_link_the_detections():
    images = [predict.image_results(i, 60, 80, _outputs(), 0, OPTIONS) for i in (9, 3)]
    merged = predict.merge_results(images)
    assert [b["image_id"] for b in merged["bbox"]] == [3, 3, 9, 9]
    assert [c["image_id"] for c in merged["captions"]] == [3, 9]
    visual = pictures.to_visual_result(images[0], min_score=0.55)
    assert [o["category_id"] for o in visual["objects"]] == [1, 5]
    person = visual["objects"][0]
    assert person["box"] == (10.0, 5.0, 40.0, 25.0) and person["mask"].sum() == 600
    assert person["keypoints"].shape == (2, 3) and "keypoints" not in visual["objects"][1]
    assert visual["caption"] == "a person next to a square"
