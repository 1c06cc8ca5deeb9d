"""Result geometry in image pixels (numpy + pycocotools): boxes clipped to the image,
sampled polygons -> one ensemble mask, masks <-> COCO RLE.

Shared by the task classes' result fields (model/tasks) and model/results.py, which
re-exports these names.
"""
from __future__ import annotations

from typing import List, Mapping, Optional

import numpy as np
from pycocotools import mask as mask_utils


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
