"""Signature outputs -> per-image results -> COCO result JSON: the one conversion.

The evaluator (components/coco_evaluator), `pix2seq predict` / `pix2seq evaluate`
(in process or over gRPC) and the pictures all call this module, so a metric and a
picture mean the same wherever the model ran. numpy + pycocotools: this module keeps
the detections as result objects and loops over the task classes (model/tasks), whose
`object_fields` / `image_fields` add what each task answers (mask, keypoints, caption)
and whose `coco_object_entry` / `coco_image_entry` make its COCO result list.

Inputs are the serving signatures' outputs (docs/CONTRACTS.md "Serving
signatures"), batched, in image pixels:
  boxes [B,M,4] (ymin, xmin, ymax, xmax), classes [B,M], scores [B,M], num_detections [B];
  polygons [B,M,S,P,2] (y, x; one polygon per sample), polygon_parts [B,M,S,P] (-1 unused);
  keypoints [B,M,K,3] (x, y, point score), keypoint_scores [B,M]; captions [B].

The paper's rules (official pix2seq `tasks/instance_segmentation.py`,
`tasks/keypoint_detection.py`; the mask and keypoint ones in their task classes):
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

from model.pixels import _union_mask, clip_box, decode_mask, ensemble_mask, mask_to_rle, polygon_parts  # noqa: F401
from model.tasks import task_class, task_names
from model.tasks.keypoints import KEYPOINT_VISIBILITY

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
    wanted = [task_class(t) for t in task_names() if options.wants(t, outputs)]
    if "boxes" in outputs:
        result["objects"] = _objects(outputs, row, height, width, options, wanted)
    for cls in wanted:  # e.g. the caption
        result.update(cls.image_fields(outputs, row, options))
    return result


def _objects(outputs, row, height, width, options, wanted):
    """The detections kept, each described by the `wanted` task classes (mask, keypoints)."""
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
        for cls in wanted:
            obj.update(cls.object_fields(outputs, row, n, category, height, width, options))
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
    classes = [task_class(t) for t in task_names()]  # each task's entries (coco_kind)
    for result in sorted(results, key=lambda r: int(r["image_id"])):
        image_id = int(result["image_id"])
        for obj in result.get("objects") or []:
            head = {"image_id": image_id, "category_id": int(obj["category_id"])}
            for cls in classes:
                entry = cls.coco_object_entry(obj, head)
                if entry is not None:
                    out[cls.coco_kind].append(entry)
        for cls in classes:
            entry = cls.coco_image_entry(result)
            if entry is not None:
                out[cls.coco_kind].append(entry)
    return out


__all__ = ["ResultOptions", "KINDS", "KEYPOINT_VISIBILITY", "clip_box", "polygon_parts", "ensemble_mask",
           "mask_to_rle", "decode_mask", "image_result", "to_results", "coco_results"]
