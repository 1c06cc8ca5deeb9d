"""COCO metrics: the ground truth scores perfectly, perturbed results score exactly
as pycocotools run by hand, captions score as the COCO caption evaluation does."""
import copy
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from components import coco_metrics

SIGMAS = [0.05] * 5  # 5 keypoints in these hand-made persons


def _square(x, y, s):
    return [x, y, x + s, y, x + s, y + s, x, y + s]


@pytest.fixture(scope="module")
def ground_truth():
    """Three images: boxes/polygons of two classes, persons with keypoints, one crowd region."""
    rng = np.random.default_rng(0)
    images, anns = [], []
    ann_id = 1
    for image_id in (1, 2, 3):
        images.append({"id": image_id, "width": 200, "height": 160, "file_name": f"{image_id}.jpg"})
        for k in range(3):
            x, y = float(rng.uniform(5, 120)), float(rng.uniform(5, 90))
            s = float(rng.uniform(20, 60))
            cat = 1 if k == 0 else 3
            ann = {"id": ann_id, "image_id": image_id, "category_id": cat, "iscrowd": 0,
                   "bbox": [x, y, s, s], "area": s * s, "segmentation": [_square(x, y, s)]}
            if cat == 1:
                pts = []
                for j in range(5):
                    v = 2 if j < 4 else 0
                    pts += [x + s * (j + 1) / 6, y + s / 2, v] if v else [0, 0, 0]
                ann["keypoints"] = pts
                ann["num_keypoints"] = 4
            anns.append(ann)
            ann_id += 1
    # A crowd region on image 3 (RLE), which detections may hit without penalty.
    crowd = np.zeros((160, 200), np.uint8)
    crowd[100:150, 130:190] = 1
    anns.append({"id": ann_id, "image_id": 3, "category_id": 3, "iscrowd": 1,
                 "bbox": [130.0, 100.0, 60.0, 50.0], "area": 3000.0,
                 "segmentation": coco_metrics.mask_to_rle(crowd)})
    cats = [{"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(5)], "skeleton": []},
            {"id": 3, "name": "square"}]
    return {"images": images, "annotations": anns, "categories": cats}


def _gt_results(gt, kind):
    out = []
    for a in gt["annotations"]:
        if a["iscrowd"]:
            continue
        r = {"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0}
        if kind == "bbox":
            r["bbox"] = list(a["bbox"])
        elif kind == "segm":
            rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], 160, 200))
            r["segmentation"] = coco_metrics.mask_to_rle(mask_utils.decode(rle))
        else:
            if "keypoints" not in a:
                continue
            r["keypoints"] = [v if (i % 3) < 2 else 1.0 for i, v in enumerate(a["keypoints"])]
        out.append(r)
    return out


@pytest.mark.parametrize("kind", ["bbox", "segm", "keypoints"])
def test_ground_truth_as_predictions_scores_one(ground_truth, kind):
    gt = ground_truth
    if kind == "keypoints":
        gt = coco_metrics.keypoint_ground_truth(gt, [1])
    stats = coco_metrics.coco_ap(gt, _gt_results(ground_truth, kind), kind, kpt_oks_sigmas=SIGMAS)
    assert stats["AP"] == pytest.approx(1.0)
    assert stats["AP50"] == pytest.approx(1.0)
    assert stats["AP75"] == pytest.approx(1.0)


def test_perturbed_detections_match_pycocotools_directly(ground_truth, tmp_path):
    rng = np.random.default_rng(1)
    results = []
    for r in _gt_results(ground_truth, "bbox"):
        x, y, w, h = r["bbox"]
        jitter = rng.normal(0, 0.15 * w, 4)
        results.append({**r, "bbox": [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]),
                                      max(1.0, h + jitter[3])], "score": float(rng.uniform())})
    # A false positive, a wrong class, and a hit on the crowd region (ignored by COCO).
    results.append({"image_id": 1, "category_id": 3, "bbox": [0, 0, 30, 30], "score": 0.9})
    results.append({"image_id": 2, "category_id": 1, "bbox": [50, 50, 40, 40], "score": 0.7})
    results.append({"image_id": 3, "category_id": 3, "bbox": [135, 105, 50, 40], "score": 0.95})

    ours = coco_metrics.coco_ap(ground_truth, results, "bbox")

    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(ground_truth))
    coco_gt = COCO(str(gt_file))
    coco_dt = coco_gt.loadRes(copy.deepcopy(results))
    ev = COCOeval(coco_gt, coco_dt, "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    expected = dict(zip(coco_metrics.BOX_STAT_NAMES, ev.stats))
    for name in coco_metrics.BOX_STAT_NAMES:
        want = None if expected[name] < 0 else expected[name]
        assert ours[name] == pytest.approx(want), name
    assert 0.0 < ours["AP"] < 1.0


def test_crowd_region_hits_are_not_false_positives(ground_truth):
    perfect = _gt_results(ground_truth, "bbox")
    with_crowd_hit = perfect + [{"image_id": 3, "category_id": 3, "bbox": [135, 105, 50, 40],
                                 "score": 2.0}]
    with_miss = perfect + [{"image_id": 3, "category_id": 3, "bbox": [0, 120, 30, 30],
                            "score": 2.0}]
    assert coco_metrics.coco_ap(ground_truth, with_crowd_hit, "bbox")["AP"] == pytest.approx(1.0)
    assert coco_metrics.coco_ap(ground_truth, with_miss, "bbox")["AP"] < 1.0


def test_empty_results_and_missing_ground_truth(ground_truth):
    assert coco_metrics.coco_ap(ground_truth, [], "bbox")["AP"] == 0.0
    no_gt = {"images": ground_truth["images"], "annotations": [], "categories": ground_truth["categories"]}
    assert coco_metrics.coco_ap(no_gt, _gt_results(ground_truth, "bbox"), "bbox")["AP"] is None
    with pytest.raises(ValueError, match="iou_type"):
        coco_metrics.coco_ap(ground_truth, [], "boxes")


CAPTIONS = {
    11: ["A red square to the left of a blue circle.", "Two shapes: a red square and a blue circle",
         "a blue circle is right of the red square", "There's a small red square, and a big circle."],
    12: ["A person standing next to a green triangle", "one stick figure beside a triangle",
         "A green triangle and a person.", "a person and a triangle on a gradient background"],
    13: ["Three yellow circles.", "three circles, all yellow", "Some yellow circles (three of them)",
         "a picture with 3 yellow circles"],
}


def test_caption_scores_equal_the_coco_caption_evaluation(tmp_path, monkeypatch):
    """The first reference of each image is the prediction, scored against the others,
    through our function and through pycocoevalcap's COCOEvalCap on COCO objects."""
    import pycocoevalcap.eval as capeval

    class _Skipped:  # METEOR and SPICE are not reported by us (SPICE downloads models)
        def compute_score(self, gts, res):
            return 0.0, [0.0] * len(gts)

        def method(self):
            return "skipped"

    monkeypatch.setattr(capeval, "Meteor", _Skipped)
    monkeypatch.setattr(capeval, "Spice", _Skipped)

    refs = {i: c[1:] for i, c in CAPTIONS.items()}
    preds = {i: c[0] for i, c in CAPTIONS.items()}
    ours = coco_metrics.caption_scores(refs, preds)

    gt = {"images": [{"id": i} for i in refs], "annotations": [], "type": "captions",
          "info": {}, "licenses": []}
    for i, caps in refs.items():
        for c in caps:
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i, "caption": c})
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    coco = COCO(str(tmp_path / "gt.json"))
    res = coco.loadRes([{"image_id": i, "caption": c} for i, c in preds.items()])
    official = capeval.COCOEvalCap(coco, res)
    official.params["image_id"] = res.getImgIds()
    official.evaluate()

    assert ours["BLEU-4"] == pytest.approx(official.eval["Bleu_4"], abs=1e-12)
    assert ours["CIDEr-D"] == pytest.approx(official.eval["CIDEr"], abs=1e-12)
    assert ours["CIDEr-D"] > 0.1
    # A caption identical to its references beats the other image's caption.
    two = {1: ["a big red square on the left side"] * 2, 2: ["one small blue circle at the top"] * 2}
    same = coco_metrics.caption_scores(two, {1: two[1][0], 2: two[2][0]})
    other = coco_metrics.caption_scores(two, {1: two[2][0], 2: two[1][0]})
    assert same["BLEU-4"] > 0.99 and same["BLEU-4"] > other["BLEU-4"]


def test_regex_fallback_tokenizer_matches_ptb_on_typical_captions():
    captions = {i: [{"caption": c} for c in caps] for i, caps in CAPTIONS.items()}
    if not coco_metrics.java_available():
        pytest.skip("java is not installed; nothing to compare the fallback with")
    ptb, name = coco_metrics.tokenize_captions(captions)
    assert name == "ptb-stanford-corenlp"
    assert coco_metrics._regex_ptb_tokenize(captions) == ptb


def test_caption_errors_and_references_from_gt():
    with pytest.raises(ValueError, match="without references"):
        coco_metrics.caption_scores({1: ["a"]}, {2: "b"})
    refs = coco_metrics.references_from_gt(
        {"annotations": [{"image_id": 5, "caption": "x"}, {"image_id": 5, "caption": "y"}]})
    assert refs == {5: ["x", "y"]}
