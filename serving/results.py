"""Signature outputs -> per-image result dicts -> COCO result JSON.

The serving signatures (model/export.py) return batched, padded arrays; callers
want one dict per image. The same conversion serves every backend (the in-process
SavedModel, the gRPC client), so results do not depend on where the model ran.

A result dict:
  {"file", "image_id", "height", "width",
   "objects": [{"bbox": [x, y, w, h] (COCO, pixels), "box": [ymin, xmin, ymax, xmax],
                "category_id", "score",
                "mask": bool [H, W] (when masks were asked for), "mask_probability": [G, G],
                "keypoints": float [K, 3] (x, y, score) (persons, when asked for)}],
   "caption": str (when asked for)}
"""
import numpy as np


def paste_box_mask(cells, box, height, width, threshold=0.5):
    """A box-relative grid (G x G fractions over `box` = ymin, xmin, ymax, xmax pixels)
    -> bool [height, width] image mask: a pixel is in when the cell under its centre
    reaches `threshold` (the paper's 0.5 vote of the sampled masks)."""
    cells = np.asarray(cells, np.float32)
    g_h, g_w = cells.shape
    ymin, xmin, ymax, xmax = [float(v) for v in box]
    mask = np.zeros([height, width], bool)
    if ymax <= ymin or xmax <= xmin:
        return mask
    ys = np.arange(height) + 0.5
    xs = np.arange(width) + 0.5
    in_y = (ys >= ymin) & (ys < ymax)
    in_x = (xs >= xmin) & (xs < xmax)
    rows = np.clip(((ys - ymin) / (ymax - ymin) * g_h).astype(int), 0, g_h - 1)
    cols = np.clip(((xs - xmin) / (xmax - xmin) * g_w).astype(int), 0, g_w - 1)
    grid = cells[rows[:, None], cols[None, :]] >= threshold
    mask[:] = grid & in_y[:, None] & in_x[None, :]
    return mask


def to_results(outputs, images, min_score=0.0):
    """Signature outputs (dict of arrays, batch B) -> B result dicts.

    `images`: list of dicts with `file`, `image_id`, `height`, `width` per image.
    Detections under `min_score` and padding rows are left out.
    """
    results = []
    for b, info in enumerate(images):
        result = dict(info)
        if "boxes" in outputs:
            result["objects"] = _objects(outputs, b, info, min_score)
        if "captions" in outputs:
            caption = outputs["captions"][b]
            result["caption"] = caption.decode("utf-8") if isinstance(caption, bytes) else str(caption)
        results.append(result)
    return results


def _objects(outputs, b, info, min_score):
    objects = []
    for n in range(outputs["boxes"].shape[1]):
        category = int(outputs["classes"][b, n])
        score = float(outputs["scores"][b, n])
        if category <= 0 or score < min_score:
            continue
        ymin, xmin, ymax, xmax = [float(v) for v in outputs["boxes"][b, n]]
        obj = {"box": [ymin, xmin, ymax, xmax], "bbox": [xmin, ymin, xmax - xmin, ymax - ymin],
               "category_id": category, "score": score}
        if "masks" in outputs:
            obj["mask_probability"] = outputs["masks"][b, n]
            obj["mask"] = paste_box_mask(outputs["masks"][b, n], obj["box"], info["height"], info["width"])
        if "keypoints" in outputs and np.any(outputs["keypoints"][b, n]):
            obj["keypoints"] = np.asarray(outputs["keypoints"][b, n], np.float32)
        objects.append(obj)
    return objects


def coco_instances(results):
    """COCO result list (bbox; segmentation RLE and keypoints where present) that
    `pycocotools.coco.COCO.loadRes` accepts."""
    from pycocotools import mask as mask_util

    entries = []
    for result in results:
        for obj in result.get("objects", []):
            entry = {"image_id": int(result["image_id"]), "category_id": obj["category_id"],
                     "bbox": [round(v, 2) for v in obj["bbox"]], "score": round(obj["score"], 5)}
            if "mask" in obj:
                rle = mask_util.encode(np.asfortranarray(obj["mask"].astype(np.uint8)))
                entry["segmentation"] = {"size": [int(s) for s in rle["size"]],
                                         "counts": rle["counts"].decode("ascii")}
            if "keypoints" in obj:
                kp = obj["keypoints"]
                flat = np.stack([kp[:, 0], kp[:, 1], np.full(len(kp), 2.0)], axis=1).reshape(-1)
                entry["keypoints"] = [round(float(v), 2) for v in flat]
            entries.append(entry)
    return entries


def coco_captions(results):
    """COCO caption results: [{"image_id", "caption"}]."""
    return [{"image_id": int(r["image_id"]), "caption": r["caption"]} for r in results if "caption" in r]
