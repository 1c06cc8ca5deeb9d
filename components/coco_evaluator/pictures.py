"""Prediction pictures for a few eval images (model/visualize.py draws them):
boxes with class names and scores, mask overlays, keypoint skeletons, the caption."""
from __future__ import annotations

import io
import os
from typing import Dict, List, Mapping, Optional, Sequence

import tensorflow as tf
from PIL import Image

from data import features as F
from model import visualize

# Detections under this score are left out of the pictures (they still count for AP).
MIN_SCORE = 0.3


def write(decoded: Sequence[Mapping], per_image: Sequence[Mapping], out_dir: str,
          categories: Optional[Sequence[Mapping]], count: int, min_score: Optional[float] = None) -> List[str]:
    """PNG per image for the first `count` eval images (by image id) with the per-image
    results (model/results.py) scoring >= `min_score` (default MIN_SCORE); returns the paths."""
    if count <= 0 or not per_image:
        return []
    min_score = MIN_SCORE if min_score is None else float(min_score)
    names: Dict[int, str] = {int(c["id"]): c.get("name", str(c["id"])) for c in categories or []}
    by_id = {int(r["image_id"]): r for r in per_image}
    tf.io.gfile.makedirs(out_dir)
    paths = []
    for example in sorted(decoded, key=lambda d: d[F.IMAGE_ID])[:count]:
        image_id = int(example[F.IMAGE_ID])
        if image_id not in by_id:
            continue
        image = Image.open(io.BytesIO(example[F.IMAGE_ENCODED]))
        picture = visualize.draw_result(image, visualize.above(by_id[image_id], min_score), names)
        path = os.path.join(out_dir, f"image_{image_id}.png")
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(buffer.getvalue())
        paths.append(path)
    return paths
