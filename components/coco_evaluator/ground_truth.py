"""Rebuild COCO ground truth (instances, person keypoints, captions) from the
ingested tf.train.Examples of the eval split.

The Examples hold everything COCOeval needs: image size and id, normalized
boxes, COCO `area`, `iscrowd`, polygons, the crowd regions' RLE and
keypoints (data/features.py). Converting back to pixels here, instead of
re-reading the source JSON, evaluates exactly the data the pipeline ingested,
and works the same when the source lives elsewhere (GCS, another cluster).
"""
from __future__ import annotations

import json
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import tensorflow as tf

from data import dataset_info as data_info
from model.tasks import task_names
from data import features as F


def _scaled(points_yx, height, width):
    """Flat normalized (y, x) pairs -> flat pixel [x, y, ...] (COCO order)."""
    out = []
    for y, x in zip(points_yx[0::2], points_yx[1::2]):
        out += [float(x) * width, float(y) * height]
    return out


def image_ground_truth(example: Mapping, keypoint_category_ids: Sequence[int],
                       first_annotation_id: int, class_category_ids: Sequence[int] = ()
                       ) -> tuple[dict, List[dict], List[str]]:
    """One decoded example (`data.features.decode_example`) -> (image, annotations, captions);
    `object/class` goes back to category ids through the class map (data/dataset_info.py)."""
    image_id = int(example[F.IMAGE_ID])
    height, width = int(example[F.IMAGE_HEIGHT]), int(example[F.IMAGE_WIDTH])
    image = {"id": image_id, "height": height, "width": width,
             "file_name": example.get(F.IMAGE_FILE_NAME, "")}
    boxes = example.get(F.OBJECT_BBOX, [])
    classes = example.get(F.OBJECT_CLASS, [])
    num = len(classes)
    if len(boxes) != 4 * num:
        raise ValueError(f"image {image_id}: {F.OBJECT_BBOX} has {len(boxes)} values for {num} objects")
    crowd = example.get(F.OBJECT_IS_CROWD) or [0] * num
    areas = example.get(F.OBJECT_AREA) or [None] * num
    ids = example.get(F.OBJECT_ID) or [None] * num
    rles = example.get(F.OBJECT_RLE) or [None] * num
    kps = example.get(F.OBJECT_KEYPOINTS) or []
    k = len(kps) // (3 * num) if num and kps else 0
    # polygon parts per instance, in order
    parts: Dict[int, Dict[int, List[float]]] = {}
    pts = example.get(F.POLYGON_POINTS, [])
    for j, (inst, part) in enumerate(zip(example.get(F.POLYGON_INSTANCE, []),
                                         example.get(F.POLYGON_PART, []))):
        parts.setdefault(int(inst), {}).setdefault(int(part), []).extend(pts[2 * j:2 * j + 2])

    annotations = []
    kp_cats = {int(c) for c in keypoint_category_ids}
    for i in range(num):
        ymin, xmin, ymax, xmax = boxes[4 * i:4 * i + 4]
        bbox = [xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height]
        ann = {
            "id": int(ids[i]) if ids[i] is not None else first_annotation_id + i,
            "image_id": image_id,
            "category_id": data_info.category_id(class_category_ids, classes[i]),
            "iscrowd": int(crowd[i]),
            "bbox": [float(v) for v in bbox],
            "area": float(areas[i]) if areas[i] is not None else float(bbox[2] * bbox[3]),
        }
        if rles[i]:
            ann["segmentation"] = dict(rles[i])
        elif i in parts:
            ann["segmentation"] = [_scaled(parts[i][p], height, width) for p in sorted(parts[i])
                                   if len(parts[i][p]) >= 6]
        if not ann.get("segmentation"):
            # No mask annotated: the box outline stands in, as COCO's loadRes does for boxes.
            x, y, w, h = ann["bbox"]
            ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        if k and int(classes[i]) in kp_cats:
            flat = []
            for y, x, v in zip(*[iter(kps[3 * k * i:3 * k * (i + 1)])] * 3):
                flat += [float(x) * width, float(y) * height, int(v)] if v > 0 else [0.0, 0.0, 0]
            ann["keypoints"] = flat
            ann["num_keypoints"] = sum(1 for v in flat[2::3] if v > 0)
        annotations.append(ann)
    return image, annotations, list(example.get(F.CAPTION_TEXT, []))


def build_ground_truth(examples: Iterable[Mapping], categories: Optional[Sequence[Mapping]] = None,
                       keypoint_category_ids: Sequence[int] = (1,),
                       class_category_ids: Sequence[int] = ()) -> dict:
    """Decoded examples -> {"instances", "keypoints", "captions"} COCO dataset dicts.

    `categories` (COCO category dicts) name the classes; without them every class
    seen gets a placeholder name `class_<id>`.
    """
    images, annotations, captions = [], [], []
    seen_ids = set()
    next_id = 1
    for example in examples:
        image, anns, caps = image_ground_truth(example, keypoint_category_ids, next_id, class_category_ids)
        if image["id"] in seen_ids:
            raise ValueError(f"duplicate image id {image['id']} in the eval examples")
        seen_ids.add(image["id"])
        next_id += len(anns)
        images.append(image)
        annotations.extend(anns)
        for text in caps:
            captions.append({"id": len(captions) + 1, "image_id": image["id"], "caption": text})
    if categories is None:
        cat_ids = sorted({a["category_id"] for a in annotations})
        categories = [{"id": c, "name": f"class_{c}"} for c in cat_ids]
    categories = [dict(c) for c in categories]
    kp_cats = {int(c) for c in keypoint_category_ids}
    instances = {"images": images, "annotations": annotations, "categories": categories}
    keypoints = {
        "images": images,
        "categories": [c for c in categories if int(c["id"]) in kp_cats],
        "annotations": [a for a in annotations if "keypoints" in a],
    }
    return {"instances": instances, "keypoints": keypoints,
            "captions": {"images": images, "annotations": captions}}


def read_examples(file_pattern: str) -> Iterable[bytes]:
    """Serialized examples from gzipped TFRecord shards matching a glob."""
    files = sorted(tf.io.gfile.glob(file_pattern))
    if not files:
        raise FileNotFoundError(f"no example shards match {file_pattern}")
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        yield record


def load_dataset_info(examples_dir: str) -> dict:
    """What ingestion recorded in `dataset_info.json` next to the shards
    (components/beam_ingest.py); {} when the file is missing."""
    from components.beam_ingest import DATASET_INFO

    path = os.path.join(examples_dir, DATASET_INFO)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def load_categories(examples_dir: str) -> Optional[List[dict]]:
    """COCO categories (names, keypoint names, skeleton) ingestion recorded, when present."""
    return list(load_dataset_info(examples_dir).get("categories") or []) or None


def load_class_map(examples_dir: str) -> tuple:
    """The class map ingestion recorded (() = identity)."""
    return tuple(load_dataset_info(examples_dir).get("class_category_ids") or ())


def split_size(examples_dir: str, split: str) -> Optional[int]:
    """How many examples ingestion wrote to `split`; None when not recorded."""
    sizes = load_dataset_info(examples_dir).get("num_images")
    return int(sizes[split]) if isinstance(sizes, dict) and split in sizes else None


def load_tasks(examples_dir: str) -> List[str]:
    """The tasks the ingested data has ground truth for (every task for data ingested
    before ingestion recorded them)."""
    return list(load_dataset_info(examples_dir).get("tasks") or task_names())


def keypoint_categories(categories: Optional[Sequence[Mapping]], default: Sequence[int]) -> List[int]:
    """Ids of the categories that have keypoints (COCO: person), else `default`."""
    ids = [int(c["id"]) for c in categories or [] if c.get("keypoints")]
    return ids or [int(c) for c in default]


__all__ = ["build_ground_truth", "image_ground_truth", "read_examples", "load_dataset_info", "load_categories",
           "load_class_map", "load_tasks", "split_size", "keypoint_categories"]
