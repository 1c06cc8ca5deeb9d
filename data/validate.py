"""Validation rules for COCO records, with quarantine reasons (pure Python).

Every rule returns the cleaned value or None plus report entries; nothing here
raises on bad data. A report entry is one JSON Lines row of the error report:
`{"file", "image_id", "annotation_id", "field", "reason", "action", "detail"}`.

Actions:
- `dropped`:  the record (image, annotation, caption) or, for keypoints, that
  field was removed. These count towards `max_error_fraction`.
- `repaired`: the record was kept after a lossless or clearly-safe fix (box
  clipped to the image, identical duplicate image entry merged, grey/CMYK/alpha
  converted to RGB, EXIF orientation applied). Reported, never counted.

Policies (docs/CONTRACTS.md, "Ingestion"):
- An invalid bbox / segmentation / category / image reference drops that
  annotation; the image and its other annotations are kept.
- Invalid keypoints clear the keypoints only (num_keypoints becomes 0, which
  COCO keypoint evaluation ignores); the person's box and mask stay ground truth.
- Crowd objects keep an RLE segmentation (polygons of a crowd object are turned
  into RLE) for evaluation; they never carry polygon training targets.
"""
import math

DROPPED = "dropped"
REPAIRED = "repaired"

# reason -> what it means (the report's vocabulary)
REASONS = {
    "image_entry_malformed": "image entry lacks an int id, a file_name or positive width/height",
    "duplicate_image_id": "the same image id appears more than once in one file",
    "conflicting_image_entry": "files disagree on an image id's file_name or size",
    "image_missing": "the image file does not exist",
    "image_undecodable": "the bytes are not an image PIL can decode",
    "image_truncated": "the image file ends early",
    "image_path_escapes": "file_name is absolute or leaves the image directory",
    "image_size_mismatch": "decoded size differs from the declared width/height",
    "image_converted_to_rgb": "grey, CMYK, palette or alpha image converted to RGB",
    "image_exif_transposed": "EXIF orientation applied to the pixels",
    "unknown_image": "annotation or caption names an image id not in the file set",
    "image_rejected": "annotation or caption of an image that was rejected",
    "unknown_category": "annotation names a category id not in the categories",
    "duplicate_annotation_id": "the same annotation id appears twice in one file",
    "annotation_malformed": "annotation is not an object with an int id",
    "bbox_malformed": "bbox is not 4 finite numbers",
    "bbox_nonpositive_size": "bbox width or height <= 0",
    "bbox_outside_image": "bbox lies wholly outside the image",
    "bbox_clipped": "bbox partly outside the image, clipped",
    "iscrowd_malformed": "iscrowd is not 0 or 1",
    "polygon_odd_coordinates": "a polygon has an odd number of coordinates",
    "polygon_too_few_points": "a polygon has fewer than 3 points",
    "polygon_malformed": "segmentation polygons are not lists of finite numbers",
    "rle_malformed": "RLE segmentation lacks counts or its size is not the image size",
    "keypoints_length": "keypoints is not 3 numbers per keypoint of the category",
    "keypoint_visibility": "a keypoint visibility is not 0, 1 or 2",
    "area_malformed": "area missing or not a finite number >= 0; bbox area used",
    "caption_empty": "caption is empty or whitespace",
    "caption_malformed": "caption is not a string",
}


def entry(file, reason, field, action, image_id=None, annotation_id=None, detail=""):
    """One error-report row."""
    assert reason in REASONS, reason
    return {"file": file, "image_id": image_id, "annotation_id": annotation_id,
            "field": field, "reason": reason, "action": action, "detail": str(detail)}


def _finite_numbers(values):
    return (isinstance(values, (list, tuple)) and
            all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in values))


def check_image_entry(image):
    """True when a COCO `images` entry has what ingestion needs."""
    return (isinstance(image, dict) and isinstance(image.get("id"), int)
            and isinstance(image.get("file_name"), str) and image["file_name"] != ""
            and isinstance(image.get("width"), int) and image["width"] > 0
            and isinstance(image.get("height"), int) and image["height"] > 0)


def check_bbox(bbox, height, width):
    """COCO [x, y, w, h] -> (box clipped to the image or None, reason or None)."""
    if not (_finite_numbers(bbox) and len(bbox) == 4):
        return None, "bbox_malformed"
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return None, "bbox_nonpositive_size"
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w), min(float(height), y + h)
    if x1 <= x0 or y1 <= y0:
        return None, "bbox_outside_image"
    clipped = [x0, y0, x1 - x0, y1 - y0]
    if (x0, y0, x1, y1) != (x, y, x + w, y + h):
        return clipped, "bbox_clipped"
    return clipped, None


def check_polygons(segmentation):
    """COCO polygon list -> (list of flat [x, y, ...] parts or None, reason or None)."""
    if not isinstance(segmentation, list) or not all(_finite_numbers(p) for p in segmentation):
        return None, "polygon_malformed"
    for part in segmentation:
        if len(part) % 2:
            return None, "polygon_odd_coordinates"
        if len(part) < 6:
            return None, "polygon_too_few_points"
    return [[float(v) for v in part] for part in segmentation], None


def _compress_rle(rle_or_polygons, height, width):
    """Polygons or uncompressed RLE -> COCO RLE with compressed (string) counts."""
    from pycocotools import mask as mask_utils

    rles = mask_utils.frPyObjects(rle_or_polygons, height, width)
    rle = mask_utils.merge(rles) if isinstance(rles, list) else rles
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def check_rle(segmentation, height, width):
    """COCO RLE dict -> (RLE with compressed counts or None, reason or None)."""
    counts, size = segmentation.get("counts"), segmentation.get("size")
    if counts is None or list(size or []) != [height, width]:
        return None, "rle_malformed"
    if isinstance(counts, str):
        return {"size": [height, width], "counts": counts}, None
    if not (_finite_numbers(counts) and sum(counts) == height * width):
        return None, "rle_malformed"
    return _compress_rle(segmentation, height, width), None


def check_keypoints(keypoints, num_keypoints):
    """Flat COCO [x, y, v] * K -> (float list or None, reason or None)."""
    if not (_finite_numbers(keypoints) and len(keypoints) == 3 * num_keypoints):
        return None, "keypoints_length"
    if any(v not in (0, 1, 2) for v in keypoints[2::3]):
        return None, "keypoint_visibility"
    return [float(v) for v in keypoints], None


def validate_annotation(ann, image, categories, file, num_keypoints):
    """One instances / person_keypoints annotation of a known image.

    Args:
      ann: the raw COCO annotation dict.
      image: the (validated) image entry it names.
      categories: {category_id: category dict}.
      file: annotation file name, for the report.
      num_keypoints: default keypoint count (categories may name their own).
    Returns:
      (object dict for data/features.py or None, list of report entries)
    """
    ann_id, image_id = ann.get("id"), ann.get("image_id")
    issues = []

    def report(reason, field, action=DROPPED, detail=""):
        issues.append(entry(file, reason, field, action, image_id, ann_id, detail))

    category_id = ann.get("category_id")
    category = categories.get(category_id) if isinstance(category_id, int) else None
    if category is None:
        report("unknown_category", "category_id", detail=category_id)
        return None, issues
    height, width = image["height"], image["width"]
    box, reason = check_bbox(ann.get("bbox"), height, width)
    if box is None:
        report(reason, "bbox", detail=ann.get("bbox"))
        return None, issues
    if reason:
        report(reason, "bbox", REPAIRED, detail=ann.get("bbox"))
    iscrowd = ann.get("iscrowd", 0)
    if iscrowd not in (0, 1):
        report("iscrowd_malformed", "iscrowd", detail=iscrowd)
        return None, issues
    polygons, rle = [], None
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, dict):
        rle, reason = check_rle(segmentation, height, width)
    elif segmentation is not None:
        polygons, reason = check_polygons(segmentation)
        if polygons and iscrowd:
            rle, polygons = _compress_rle(polygons, height, width), []
    else:
        reason = None
    if reason:
        report(reason, "segmentation")
        return None, issues
    area = ann.get("area")
    if not (_finite_numbers([area]) and area >= 0):
        report("area_malformed", "area", REPAIRED, detail=area)
        area = box[2] * box[3]
    keypoints = None
    if ann.get("keypoints") is not None:
        k = len(category.get("keypoints") or []) or num_keypoints
        keypoints, reason = check_keypoints(ann["keypoints"], k)
        if reason:
            report(reason, "keypoints")
    obj = {"id": ann_id, "category_id": ann["category_id"], "bbox": box, "area": float(area),
           "iscrowd": iscrowd, "polygons": polygons, "rle": rle, "keypoints": keypoints}
    return obj, issues


def validate_caption(ann, file):
    """One captions annotation -> (stripped text or None, report entries)."""
    text = ann.get("caption")
    if not isinstance(text, str):
        return None, [entry(file, "caption_malformed", "caption", DROPPED, ann.get("image_id"),
                            ann.get("id"), detail=type(text).__name__)]
    if not text.strip():
        return None, [entry(file, "caption_empty", "caption", DROPPED, ann.get("image_id"),
                            ann.get("id"), detail=repr(text))]
    return text.strip(), []


def summarize(issues, total_records):
    """Counts by action and reason, and the dropped fraction of all input records."""
    dropped, repaired = {}, {}
    for issue in issues:
        counts = dropped if issue["action"] == DROPPED else repaired
        counts[issue["reason"]] = counts.get(issue["reason"], 0) + 1
    num_dropped = sum(dropped.values())
    return {"total_records": total_records, "dropped": num_dropped,
            "error_fraction": num_dropped / max(total_records, 1),
            "dropped_by_reason": dict(sorted(dropped.items())),
            "repaired_by_reason": dict(sorted(repaired.items()))}
