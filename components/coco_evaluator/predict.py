"""Run the exported SavedModel on batches of eval examples (a Beam DoFn) and turn
its signature outputs into COCO result entries, one JSON-able dict per image.

The SavedModel contract is docs/CONTRACTS.md "Serving signatures": every
signature takes `images` (encoded bytes [B]) and answers in image pixels.
Workers do the heavy part (model calls, mask RLE encoding), the driver only
concatenates.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np

from components import coco_metrics
from data import features as F


@dataclasses.dataclass(frozen=True)
class PredictOptions:
    tasks: Tuple[str, ...]
    batch_size: int = 8
    keypoint_category_ids: Tuple[int, ...] = (1,)
    score_threshold: float = 0.0
    mask_threshold: float = 0.5
    # decoding options for detect_and_describe_with_options; empty: the paper's defaults
    decoding: Tuple[Tuple[str, float], ...] = ()


def _np(value):
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _decode_text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def image_results(image_id: int, height: int, width: int, outputs: Mapping[str, np.ndarray], row: int,
                  options: PredictOptions) -> dict:
    """COCO result entries of one image from one row of the signature outputs.

    Boxes come as (ymin, xmin, ymax, xmax) pixels; COCO wants [x, y, w, h]. Every
    entry also keeps `detection`, the index of the detection it came from (COCO
    tools ignore it; the pictures use it to draw box, mask and keypoints together).
    Masks, when present, are [M, G, G] fractions of the sampled masks covering
    each cell of a grid laid over the instance's box (model/export.py); the
    cells >= mask_threshold are pasted into an image-size mask. Keypoints are
    [M, K, 3] (x, y, score) in pixels.
    """
    out = {"image_id": int(image_id), "bbox": [], "segm": [], "keypoints": [], "caption": None}
    if "num_detections" in outputs:
        n = int(outputs["num_detections"][row])
        boxes = outputs["boxes"][row][:n]
        classes = outputs["classes"][row][:n]
        scores = outputs["scores"][row][:n]
        masks = outputs.get("masks")
        kps = outputs.get("keypoints")
        for i in range(n):
            score = float(scores[i])
            if score < options.score_threshold:
                continue
            ymin, xmin, ymax, xmax = [float(v) for v in boxes[i]]
            xmin, xmax = max(0.0, xmin), min(float(width), xmax)
            ymin, ymax = max(0.0, ymin), min(float(height), ymax)
            cat = int(classes[i])
            if xmax <= xmin or ymax <= ymin:
                continue  # an empty box is no detection (and has no mask)
            if "detection" in options.tasks:
                out["bbox"].append({"image_id": int(image_id), "category_id": cat, "score": score,
                                    "bbox": [xmin, ymin, xmax - xmin, ymax - ymin], "detection": i})
            if "segmentation" in options.tasks and masks is not None:
                mask = paste_box_mask(masks[row][i] >= options.mask_threshold,
                                      (ymin, xmin, ymax, xmax), height, width)
                out["segm"].append({"image_id": int(image_id), "category_id": cat, "score": score,
                                    "segmentation": coco_metrics.mask_to_rle(mask), "detection": i})
            if ("keypoints" in options.tasks and kps is not None
                    and cat in options.keypoint_category_ids):
                points = np.asarray(kps[row][i], np.float64).reshape(-1, 3)
                flat = []
                for x, y, _ in points:
                    flat += [float(x), float(y), 1.0]
                # person score x mean keypoint confidence, as the paper's keypoint AP does
                kp_score = score * float(np.mean(points[:, 2])) if len(points) else score
                out["keypoints"].append({"image_id": int(image_id), "category_id": cat,
                                         "score": kp_score, "keypoints": flat, "detection": i})
    if "captioning" in options.tasks and "captions" in outputs:
        out["caption"] = _decode_text(outputs["captions"][row])
    return out


def paste_box_mask(grid: np.ndarray, box, height: int, width: int) -> np.ndarray:
    """A [G, G] boolean grid over `box` (ymin, xmin, ymax, xmax pixels) -> [H, W] mask:
    each pixel whose centre lies in the box takes the value of the grid cell under it."""
    grid = np.asarray(grid, bool)
    gh, gw = grid.shape
    ymin, xmin, ymax, xmax = box
    mask = np.zeros((height, width), bool)
    if ymax <= ymin or xmax <= xmin:
        return mask
    ys = np.arange(height) + 0.5
    xs = np.arange(width) + 0.5
    rows = np.nonzero((ys >= ymin) & (ys < ymax))[0]
    cols = np.nonzero((xs >= xmin) & (xs < xmax))[0]
    if rows.size == 0 or cols.size == 0:
        return mask
    gy = np.minimum(((ys[rows] - ymin) / (ymax - ymin) * gh).astype(int), gh - 1)
    gx = np.minimum(((xs[cols] - xmin) / (xmax - xmin) * gw).astype(int), gw - 1)
    mask[np.ix_(rows, cols)] = grid[np.ix_(gy, gx)]
    return mask


def merge_results(per_image: Iterable[Mapping]) -> Dict[str, List[dict]]:
    """Per-image dicts -> COCO result lists by kind (bbox, segm, keypoints, captions)."""
    merged = {"bbox": [], "segm": [], "keypoints": [], "captions": []}
    for image in sorted(per_image, key=lambda r: r["image_id"]):
        for kind in ("bbox", "segm", "keypoints"):
            merged[kind].extend(image.get(kind) or [])
        if image.get("caption") is not None:
            merged["captions"].append({"image_id": image["image_id"], "caption": image["caption"]})
    return merged


class PredictDoFn(beam.DoFn):
    """Batch of serialized tf.Examples -> per-image COCO results from the SavedModel."""

    def __init__(self, model_dir: str, options: PredictOptions):
        self._model_dir = model_dir
        self._options = options
        self._runner = None

    def setup(self):
        from components.coco_evaluator import model_runner

        self._runner = model_runner.ModelRunner(self._model_dir, self._options.tasks,
                                                dict(self._options.decoding))

    def process(self, batch: Sequence[bytes]):
        decoded = [F.decode_example(b) for b in batch]
        images = [d[F.IMAGE_ENCODED] for d in decoded]
        outputs = self._runner(images)
        for row, d in enumerate(decoded):
            yield image_results(d[F.IMAGE_ID], d[F.IMAGE_HEIGHT], d[F.IMAGE_WIDTH], outputs, row, self._options)


def write_pictures(decoded: Sequence[Mapping], per_image: Sequence[Mapping], out_dir: str,
                   categories: Optional[Sequence[Mapping]], count: int, min_score: Optional[float] = None) -> List[str]:
    """Draw the candidate's predictions (score >= `min_score`, default pictures.MIN_SCORE)
    on the first `count` eval images (PNG files)."""
    if count <= 0 or not per_image:
        return []
    from components.coco_evaluator import pictures

    if min_score is None:
        min_score = pictures.MIN_SCORE
    return pictures.write(decoded, per_image, out_dir, categories, count, min_score)


__all__ = ["PredictOptions", "PredictDoFn", "image_results", "merge_results", "write_pictures"]
