"""Prediction pictures for a few eval images (serving/visualize.py draws them):
boxes with class names and scores, mask overlays, keypoint skeletons, the caption."""
from __future__ import annotations

import io
import os
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
from PIL import Image
from pycocotools import mask as mask_utils

from data import features as F
from serving import visualize

# Detections under this score are left out of the pictures (they still count for AP).
MIN_SCORE = 0.3


def to_visual_result(per_image: Mapping, min_score: float = MIN_SCORE) -> dict:
    """COCO result entries of one image -> the result dict serving/visualize.py draws."""
    masks = {e["detection"]: e for e in per_image.get("segm") or []}
    keypoints = {e["detection"]: e for e in per_image.get("keypoints") or []}
    objects = []
    for det in sorted(per_image.get("bbox") or [], key=lambda e: -e["score"]):
        if det["score"] < min_score:
            continue
        x, y, w, h = det["bbox"]
        obj = {"box": (y, x, y + h, x + w), "category_id": det["category_id"], "score": det["score"]}
        if det["detection"] in masks:
            obj["mask"] = mask_utils.decode(masks[det["detection"]]["segmentation"]).astype(bool)
        if det["detection"] in keypoints:
            obj["keypoints"] = np.asarray(keypoints[det["detection"]]["keypoints"], np.float32).reshape(-1, 3)
        objects.append(obj)
    result = {"objects": objects}
    if per_image.get("caption") is not None:
        result["caption"] = per_image["caption"]
    return result


def write(decoded: Sequence[Mapping], per_image: Sequence[Mapping], out_dir: str,
          categories: Optional[Sequence[Mapping]], count: int, min_score: float = MIN_SCORE) -> List[str]:
    """PNG per image for the first `count` eval images (by image id); returns the paths."""
    names: Dict[int, str] = {int(c["id"]): c.get("name", str(c["id"])) for c in categories or []}
    by_id = {int(r["image_id"]): r for r in per_image}
    tf.io.gfile.makedirs(out_dir)
    paths = []
    for example in sorted(decoded, key=lambda d: d[F.IMAGE_ID])[:count]:
        image_id = int(example[F.IMAGE_ID])
        if image_id not in by_id:
            continue
        image = Image.open(io.BytesIO(example[F.IMAGE_ENCODED]))
        picture = visualize.draw_result(image, to_visual_result(by_id[image_id], min_score), names)
        path = os.path.join(out_dir, f"image_{image_id}.png")
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(buffer.getvalue())
        paths.append(path)
    return paths
