"""The CocoEvaluator's evaluation (components/coco_evaluator/evaluation.py) without a
model: a runner that answers with the ground truth itself, as the signatures would,
must score AP 1 for boxes, masks and keypoints through the shared results code."""
import numpy as np
import pytest
from PIL import Image

from components.coco_evaluator import evaluation, pictures
from data import features as F
import example_records

TASKS = ("detection", "segmentation", "keypoints", "captioning")
SAMPLES = 3


def _decoded(num_images=3):
    return [F.decode_example(example_records.serialized(*example_records.make_record(i, seed=i)))
            for i in range(1, num_images + 1)]


def _truth_outputs(example, max_objects=6, max_points=8, num_keypoints=17):
    """What a perfect model's detect_and_describe would answer for one decoded example."""
    h, w = example[F.IMAGE_HEIGHT], example[F.IMAGE_WIDTH]
    out = {"boxes": np.zeros([max_objects, 4], np.float32), "classes": np.zeros([max_objects], np.int32),
           "scores": np.zeros([max_objects], np.float32),
           "polygons": np.zeros([max_objects, SAMPLES, max_points, 2], np.float32),
           "polygon_parts": np.full([max_objects, SAMPLES, max_points], -1, np.int32),
           "keypoints": np.zeros([max_objects, num_keypoints, 3], np.float32),
           "keypoint_scores": np.zeros([max_objects], np.float32)}
    boxes = np.reshape(example[F.OBJECT_BBOX], [-1, 4])
    points = np.reshape(example[F.POLYGON_POINTS], [-1, 2]) * [h, w]
    keypoints = np.reshape(example[F.OBJECT_KEYPOINTS], [len(boxes), -1, 3])
    n = 0
    for i, box in enumerate(boxes):
        if example[F.OBJECT_IS_CROWD][i]:
            continue
        out["boxes"][n] = box * [h, w, h, w]
        out["classes"][n] = example[F.OBJECT_CLASS][i]
        out["scores"][n] = 1.0 - 0.01 * n
        mine = np.asarray(example[F.POLYGON_INSTANCE]) == i
        out["polygons"][n, :, :mine.sum()] = points[mine]
        out["polygon_parts"][n, :, :mine.sum()] = np.asarray(example[F.POLYGON_PART])[mine]
        out["keypoints"][n] = np.stack([keypoints[i, :, 1] * w, keypoints[i, :, 0] * h,
                                        (keypoints[i, :, 2] > 0).astype(np.float32)], 1)
        out["keypoint_scores"][n] = 0.9
        n += 1
    out["num_detections"] = np.int32(n)
    out["captions"] = example[F.CAPTION_TEXT][0].encode()
    return out


class TruthRunner:
    """Stands in for ModelRunner: batched outputs of `_truth_outputs`."""

    def __init__(self, decoded):
        self.by_bytes = {d[F.IMAGE_ENCODED]: _truth_outputs(d) for d in decoded}
        self.batches = []

    def __call__(self, images):
        self.batches.append(len(images))
        rows = [self.by_bytes[b] for b in images]
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def test_perfect_outputs_score_ap_1_through_the_shared_results_code():
    decoded = _decoded()
    gt = evaluation.ground_truth(decoded, None, (1,))
    runner = TruthRunner(decoded)
    options = evaluation.EvalOptions(tasks=TASKS, batch_size=2)
    seen = []
    per_image = evaluation.predict(runner, decoded, options, progress=seen.append)
    assert runner.batches == [2, 1] and seen == [2, 1]
    assert [r["image_id"] for r in per_image] == [1, 2, 3]
    metrics, coco = evaluation.score(gt, per_image, TASKS[:3])  # caption scoring: test_coco_metrics
    assert set(metrics) == set(TASKS[:3])
    assert metrics["detection"]["AP"] == pytest.approx(1.0)
    assert metrics["segmentation"]["AP"] == pytest.approx(1.0)
    assert metrics["keypoints"]["AP"] == pytest.approx(1.0)
    assert coco["captions"] == [{"image_id": i, "caption": "a red triangle"} for i in (1, 2, 3)]
    assert len(coco["keypoints"]) == 3 and all(e["score"] == pytest.approx(0.9) for e in coco["keypoints"])


def test_eval_options_from_config_and_task_selection():
    config = {"batch_size": 4, "score_threshold": 0.5, "decoding": {"top_p": 0.4, "seed": 3}}
    options = evaluation.EvalOptions.from_config(config, ("detection",), [1])
    assert options.batch_size == 4 and options.decoding == (("seed", 3), ("top_p", 0.4))
    decoded = _decoded(1)
    per_image = evaluation.predict_batch(TruthRunner(decoded), decoded, options)
    objects = per_image[0]["objects"]
    assert len(objects) == 3 and all("segmentation" not in o and "keypoints" not in o for o in objects)
    assert "caption" not in per_image[0]


def test_pictures_draw_results_above_the_score(tmp_path):
    decoded = _decoded(2)
    per_image = evaluation.predict(TruthRunner(decoded), decoded, evaluation.EvalOptions(tasks=TASKS))
    paths = pictures.write(decoded, per_image, str(tmp_path), [{"id": 1, "name": "person"}], count=1,
                           min_score=0.995)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["image_1.png"]
    picture = np.asarray(Image.open(paths[0]).convert("RGB"))
    assert picture.shape[1] == 160 and picture.shape[0] > 120  # the caption strip below the image
    assert pictures.write(decoded, per_image, str(tmp_path / "none"), None, count=0) == []
