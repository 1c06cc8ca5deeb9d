"""Signature outputs -> per-image results -> COCO result JSON: the one conversion.

The evaluator (components/coco_evaluator), `pix2seq predict` / `pix2seq evaluate`
(in process or over gRPC) and the pictures all call this module, so a metric and a
picture mean the same wherever the model ran. Pure numpy + pycocotools.

Inputs are the serving signatures' outputs (docs/CONTRACTS.md "Serving
signatures"), batched, in image pixels:
  boxes [B,M,4] (ymin, xmin, ymax, xmax), classes [B,M], scores [B,M], num_detections [B];
  polygons [B,M,S,P,2] (y, x; one polygon per sample), polygon_parts [B,M,S,P] (-1 unused);
  keypoints [B,M,K,3] (x, y, point score), keypoint_scores [B,M]; captions [B].

The paper's rules (official pix2seq `tasks/instance_segmentation.py`,
`tasks/keypoint_detection.py`):
  * a detection is a row below num_detections with a class > 0; its box is clipped
    to the image and an empty clipped box is no detection;
  * a mask rasterizes each sampled polygon at full image resolution (pycocotools,
    parts merged), averages the S sample masks and keeps pixels >= mask_threshold;
    its score is the detection score;
  * a keypoint result exists for keypoint categories only; its score is the
    instance's keypoint score (mean token probability), every point visibility 2.

A per-image result (JSON-able; the evaluator writes them as JSON Lines):
  {"image_id", "height", "width", ["file"],
   "objects": [{"detection": row, "category_id", "score",
                "box": [ymin, xmin, ymax, xmax], "bbox": [x, y, w, h],
                "segmentation": RLE (compressed, `counts` str)        with polygons,
                "keypoints": [[x, y, point score]] * K, "keypoint_score"  with keypoints}],
   "caption": str                                                       with captions}
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from pycocotools import mask as mask_utils

from model.tasks import task_class

# COCO keypoint visibility written for every predicted point (OKS ignores it for results).
KEYPOINT_VISIBILITY = 2
# Result kinds of `coco_results`, in the evaluator's file names.
KINDS = ("bbox", "segm", "keypoints", "captions")


@dataclasses.dataclass(frozen=True)
class ResultOptions:
    """How outputs become results.

    Args:
      min_score: detections scoring below are left out (0: keep all, as AP wants).
      mask_threshold: fraction of the sampled polygons that must cover a pixel.
      keypoint_category_ids: categories that get keypoint results (COCO: person).
      tasks: the tasks to convert (masks only with "segmentation", keypoints only
        with "keypoints", the caption only with "captioning"); None: every task
        the outputs answer.
    """
    min_score: float = 0.0
    mask_threshold: float = 0.5
    keypoint_category_ids: Tuple[int, ...] = (1,)
    tasks: Optional[Tuple[str, ...]] = None

    def wants(self, task: str, outputs: Mapping) -> bool:
        """Whether `task` is converted: its signature output (`describe_output`) is there."""
        return task_class(task).describe_output in outputs and (self.tasks is None or task in self.tasks)


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def clip_box(box, height: int, width: int) -> Optional[List[float]]:
    """(ymin, xmin, ymax, xmax) clipped to the image; None when nothing is left."""
    ymin, xmin, ymax, xmax = [float(v) for v in box]
    ymin, ymax = min(max(ymin, 0.0), float(height)), min(max(ymax, 0.0), float(height))
    xmin, xmax = min(max(xmin, 0.0), float(width)), min(max(xmax, 0.0), float(width))
    if ymax <= ymin or xmax <= xmin:
        return None
    return [ymin, xmin, ymax, xmax]


def _part_arrays(points, parts) -> List[np.ndarray]:
    """One sampled polygon -> its parts as float64 [n, 2] (x, y) arrays, n >= 3."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    parts = np.asarray(parts).reshape(-1)
    keep = parts >= 0
    points, parts = points[keep], parts[keep]
    if not len(parts):
        return []
    starts = np.flatnonzero(np.concatenate([[True], parts[1:] != parts[:-1]]))
    return [run[:, ::-1] for run in np.split(points, starts[1:]) if len(run) >= 3]


def polygon_parts(points, parts) -> List[List[float]]:
    """One sampled polygon (points [P, 2] as (y, x) pixels, part index [P], negative =
    unused) -> COCO polygon parts (flat [x, y, ...] per run of one part index).
    Parts under 3 vertices enclose nothing and are left out."""
    return [run.reshape(-1).tolist() for run in _part_arrays(points, parts)]


def _union_mask(coco_parts, height: int, width: int) -> np.ndarray:
    """COCO polygon parts (flat x, y sequences) -> uint8 [height, width] as pycocotools
    rasterizes a polygon annotation (`frPyObjects`, parts merged)."""
    if not len(coco_parts) or height <= 0 or width <= 0:
        return np.zeros([max(height, 0), max(width, 0)], np.uint8)
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(list(coco_parts), height, width)))


def ensemble_mask(polygons, parts, height: int, width: int, threshold: float = 0.5) -> np.ndarray:
    """S sampled polygons (polygons [S, P, 2] (y, x) pixels, parts [S, P]) -> bool
    [height, width]: the pixels covered by at least `threshold` of the S samples.

    Rasterized inside the samples' bounding rows/columns only (shifted by whole
    pixels, which pycocotools' rasterization commutes with) and pasted back: the
    same mask as rasterizing at full size, for a fraction of the work."""
    samples = [_part_arrays(p, q) for p, q in zip(np.asarray(polygons), np.asarray(parts))]
    mask = np.zeros([height, width], bool, order="F")
    drawn = [run for sample in samples for run in sample]
    if not drawn:
        return mask
    xy = np.concatenate(drawn)
    x0, y0 = (int(min(max(np.floor(v), 0), limit)) for v, limit in zip(xy.min(0), (width, height)))
    x1, y1 = (int(min(max(np.ceil(v) + 1, 0), limit)) for v, limit in zip(xy.max(0), (width, height)))
    if x1 <= x0 or y1 <= y0:
        return mask
    votes = np.zeros([y1 - y0, x1 - x0], np.int32)
    offset = np.array([x0, y0], np.float64)
    for sample in samples:
        votes += _union_mask([(run - offset).reshape(-1) for run in sample], y1 - y0, x1 - x0)
    mask[y0:y1, x0:x1] = votes / len(samples) >= threshold
    return mask


def mask_to_rle(mask: np.ndarray) -> dict:
    """bool [H, W] -> COCO compressed RLE with a JSON-safe `counts` string."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_mask(obj: Mapping) -> np.ndarray:
    """The bool [H, W] mask of a result object (its `segmentation` RLE)."""
    rle = dict(obj["segmentation"])
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def _row_count(outputs: Mapping, row: int) -> int:
    count = outputs["boxes"].shape[1]
    if "num_detections" in outputs:
        count = min(count, int(outputs["num_detections"][row]))
    return count


def image_result(outputs: Mapping[str, np.ndarray], row: int, image_id: int, height: int, width: int,
                 options: ResultOptions = ResultOptions(), file: Optional[str] = None) -> dict:
    """Row `row` of batched signature outputs -> the per-image result of one
    `height` x `width` image (module docstring)."""
    height, width = int(height), int(width)
    result = {"image_id": int(image_id), "height": height, "width": width}
    if file is not None:
        result["file"] = file
    if "boxes" in outputs:
        result["objects"] = _objects(outputs, row, height, width, options)
    if options.wants("captioning", outputs):
        result["caption"] = _text(outputs["captions"][row])
    return result


def _objects(outputs, row, height, width, options):
    masks = options.wants("segmentation", outputs)
    points = options.wants("keypoints", outputs)
    keypoint_cats = {int(c) for c in options.keypoint_category_ids}
    objects = []
    for n in range(_row_count(outputs, row)):
        category = int(outputs["classes"][row, n])
        score = float(outputs["scores"][row, n])
        box = clip_box(outputs["boxes"][row, n], height, width)
        if category <= 0 or box is None or score < options.min_score:
            continue
        ymin, xmin, ymax, xmax = box
        obj = {"detection": n, "category_id": category, "score": score, "box": box,
               "bbox": [xmin, ymin, xmax - xmin, ymax - ymin]}
        if masks:
            obj["segmentation"] = mask_to_rle(ensemble_mask(
                outputs["polygons"][row, n], outputs["polygon_parts"][row, n], height, width,
                options.mask_threshold))
        if points and category in keypoint_cats:
            kp = np.asarray(outputs["keypoints"][row, n], np.float64).reshape(-1, 3)
            obj["keypoints"] = [[float(v) for v in p] for p in kp]
            obj["keypoint_score"] = float(outputs["keypoint_scores"][row, n])
        objects.append(obj)
    return objects


def to_results(outputs: Mapping[str, np.ndarray], images: Sequence[Mapping],
               options: ResultOptions = ResultOptions()) -> List[dict]:
    """Batched outputs -> one result per image; `images[b]` holds row b's `image_id`,
    `height`, `width` (and optionally `file`)."""
    return [image_result(outputs, b, info["image_id"], info["height"], info["width"], options,
                         info.get("file"))
            for b, info in enumerate(images)]


def coco_results(results: Iterable[Mapping]) -> Dict[str, List[dict]]:
    """Per-image results -> COCO result lists by kind (`KINDS`), ordered by image id,
    each list what `COCO.loadRes` / COCOeval take for its iou type (bbox entries for
    every object, segm for objects with masks, keypoints for objects with keypoints)."""
    out = {kind: [] for kind in KINDS}
    for result in sorted(results, key=lambda r: int(r["image_id"])):
        image_id = int(result["image_id"])
        for obj in result.get("objects") or []:
            head = {"image_id": image_id, "category_id": int(obj["category_id"])}
            out["bbox"].append({**head, "bbox": list(obj["bbox"]), "score": obj["score"]})
            if "segmentation" in obj:
                out["segm"].append({**head, "segmentation": dict(obj["segmentation"]), "score": obj["score"]})
            if "keypoints" in obj:
                flat = [v for x, y, _ in obj["keypoints"] for v in (x, y, KEYPOINT_VISIBILITY)]
                out["keypoints"].append({**head, "keypoints": flat, "score": obj["keypoint_score"]})
        if "caption" in result:
            out["captions"].append({"image_id": image_id, "caption": result["caption"]})
    return out


__all__ = ["ResultOptions", "KINDS", "KEYPOINT_VISIBILITY", "clip_box", "polygon_parts", "ensemble_mask",
           "mask_to_rle", "decode_mask", "image_result", "to_results", "coco_results"]
