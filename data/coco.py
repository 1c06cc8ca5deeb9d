"""Read a COCO-format directory and join its annotations per image (pure Python).

Layout: annotation files `instances_<suffix>.json`, `person_keypoints_<suffix>.json`,
`captions_<suffix>.json` (any subset) in `<dir>/annotations/` or `<dir>/`;
images in the first existing of `<dir>/images/<suffix>/`, `<dir>/<suffix>/`,
`<dir>/images/`, `<dir>/`. A suffix starting with `train` is the `train` split,
one starting with `val` or `minival` the `eval` split (Split-train / Split-eval).

Each annotation file is parsed once, here, in the ingestion driver. The result
is one JSON-serializable record per image (validated, see data/validate.py):

    {"image_id", "file_name", "height", "width", "source_file",
     "objects": [{"id", "category_id", "bbox" [x, y, w, h] clipped, "area", "iscrowd",
                  "polygons", "rle", "keypoints"}],
     "captions": [{"id", "text"}]}

Objects keep file order; an annotation present in both `instances_*` and
`person_keypoints_*` (same id, as in COCO) is one object with the keypoints of
the latter.
"""
import json
import os
import re
from dataclasses import dataclass, field

from data import validate as V

KINDS = ("instances", "person_keypoints", "captions")
DEFAULT_NUM_KEYPOINTS = 17
_FILE_RE = re.compile(r"^(instances|person_keypoints|captions)_(.+)\.json$")


@dataclass
class SplitSource:
    name: str  # "train" or "eval"
    suffix: str  # e.g. "train2017"
    files: dict  # kind -> path
    image_dir: str


@dataclass
class CocoData:
    splits: dict  # split name -> list of per-image records
    image_dirs: dict  # split name -> image directory
    categories: list  # merged category dicts, sorted by id
    num_keypoints: int
    issues: list = field(default_factory=list)  # report entries (data/validate.py)
    total_records: int = 0  # images + annotations + captions read


def _remote():
    """Beam's FileSystems (gs://, s3://, hdfs://), imported only for remote paths."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def _join(*parts):
    return _remote().join(*parts) if "://" in parts[0] else os.path.join(*parts)


def _listdir(path):
    if "://" in path:
        matched = _remote().match([_join(path, "*")])[0].metadata_list
        return sorted({m.path[len(path.rstrip("/")) + 1:].split("/")[0] for m in matched})
    return os.listdir(path) if os.path.isdir(path) else []


def _isdir(path):
    if "://" in path:
        return bool(_remote().match([_join(path, "*")], limits=[1])[0].metadata_list)
    return os.path.isdir(path)


def _read_json(path):
    try:
        if "://" in path:
            with _remote().open(path) as f:
                return json.load(f)
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def split_for_suffix(suffix):
    """`train2017` -> "train", `val2017` / `minival2014` -> "eval", else None."""
    if suffix.startswith("train"):
        return "train"
    if suffix.startswith(("val", "minival")):
        return "eval"
    return None


def find_splits(coco_dir):
    """{split name: SplitSource} for the annotation files of a COCO directory."""
    ann_dir = _join(coco_dir, "annotations")
    ann_dir = ann_dir if _isdir(ann_dir) else coco_dir
    sources = {}
    for name in sorted(_listdir(ann_dir)):
        m = _FILE_RE.match(name)
        if not m:
            continue
        kind, suffix = m.groups()
        split = split_for_suffix(suffix)
        if split is None:
            continue
        src = sources.setdefault(split, SplitSource(split, suffix, {}, ""))
        if src.suffix != suffix:
            raise ValueError(f"{coco_dir}: two annotation sets for split '{split}': "
                             f"'{src.suffix}' and '{suffix}'; keep one")
        src.files[kind] = _join(ann_dir, name)
    if not sources:
        raise ValueError(f"{coco_dir}: no instances_*/person_keypoints_*/captions_* JSON "
                         f"for a train* or val* split in {ann_dir}")
    for src in sources.values():
        candidates = [_join(coco_dir, "images", src.suffix), _join(coco_dir, src.suffix),
                      _join(coco_dir, "images"), coco_dir]
        src.image_dir = next(c for c in candidates if _isdir(c))
    return sources


def _merge_categories(docs, categories):
    for _, doc in docs:
        for cat in doc.get("categories") or []:
            if not (isinstance(cat, dict) and isinstance(cat.get("id"), int)):
                continue
            merged = categories.setdefault(cat["id"], {})
            for key, value in cat.items():
                merged.setdefault(key, value)


def _join_images(docs, issues):
    """{image_id: image entry} over all files, plus ids rejected as duplicates/conflicts."""
    images, origin, bad_ids, count = {}, {}, set(), 0
    for file, doc in docs:
        in_file = {}
        for image in doc.get("images") or []:
            if not V.check_image_entry(image):
                count += 1
                image_id = image.get("id") if isinstance(image, dict) else None
                issues.append(V.entry(file, "image_entry_malformed", "images", V.DROPPED, image_id))
                continue
            key = (image["file_name"], image["width"], image["height"])
            image_id = image["id"]
            if image_id in in_file:
                same = in_file[image_id] == key
                issues.append(V.entry(file, "duplicate_image_id", "id", V.REPAIRED if same else V.DROPPED,
                                      image_id, detail="identical entry merged" if same else
                                      f"{in_file[image_id]} vs {key}"))
                if not same:
                    bad_ids.add(image_id)
                continue
            in_file[image_id] = key
            if image_id in images:
                first = images[image_id]
                if (first["file_name"], first["width"], first["height"]) != key:
                    issues.append(V.entry(file, "conflicting_image_entry", "images", V.DROPPED, image_id,
                                          detail=f"{origin[image_id]} says {first['file_name']} "
                                                 f"{first['width']}x{first['height']}"))
                    bad_ids.add(image_id)
                continue
            count += 1
            images[image_id], origin[image_id] = image, file
    for image_id in bad_ids:
        images.pop(image_id, None)
    return images, origin, bad_ids, count


def _image_check(ann, images, bad_ids, file, issues):
    image_id = ann.get("image_id")
    if not isinstance(image_id, int):
        image_id = repr(image_id)  # unhashable or not an id: reported as unknown
    if image_id in bad_ids:
        issues.append(V.entry(file, "image_rejected", "image_id", V.DROPPED, image_id, ann.get("id")))
        return False
    if image_id not in images:
        issues.append(V.entry(file, "unknown_image", "image_id", V.DROPPED, image_id, ann.get("id")))
        return False
    return True


def read_split(source):
    """[(file base name, parsed JSON)] of a split, each file read once, in KINDS order."""
    return [(os.path.basename(source.files[k]), _read_json(source.files[k]))
            for k in KINDS if k in source.files]


def join_split(docs, categories, num_keypoints):
    """Validate a split's parsed files and join them per image.

    Returns (records, issues, total_records)."""
    issues = []
    images, origin, bad_ids, total = _join_images(docs, issues)
    objects, captions = {i: {} for i in images}, {i: [] for i in images}
    for file, doc in docs:
        if not file.startswith(("instances_", "person_keypoints_")):
            continue
        seen = set()
        for ann in doc.get("annotations") or []:
            total += 1
            if not (isinstance(ann, dict) and isinstance(ann.get("id"), int)):
                issues.append(V.entry(file, "annotation_malformed", "id", V.DROPPED,
                                      ann.get("image_id") if isinstance(ann, dict) else None))
                continue
            if ann["id"] in seen:
                issues.append(V.entry(file, "duplicate_annotation_id", "id", V.DROPPED,
                                      ann.get("image_id"), ann["id"]))
                continue
            seen.add(ann["id"])
            if not _image_check(ann, images, bad_ids, file, issues):
                continue
            image_id = ann["image_id"]
            obj, found = V.validate_annotation(ann, images[image_id], categories, file, num_keypoints)
            issues.extend(found)
            previous = objects[image_id].get(ann["id"])
            if obj is None:
                continue
            if previous is not None and obj["keypoints"] is not None:
                previous["keypoints"] = obj["keypoints"]  # same object, keypoints file
            elif previous is None:
                objects[image_id][ann["id"]] = obj
    for file, doc in docs:
        if not file.startswith("captions_"):
            continue
        for ann in doc.get("annotations") or []:
            total += 1
            if not isinstance(ann, dict):
                issues.append(V.entry(file, "caption_malformed", "caption", V.DROPPED))
                continue
            if not _image_check(ann, images, bad_ids, file, issues):
                continue
            text, found = V.validate_caption(ann, file)
            issues.extend(found)
            if text is not None:
                captions[ann["image_id"]].append({"id": ann.get("id"), "text": text})
    records = [{"image_id": i, "file_name": images[i]["file_name"], "height": images[i]["height"],
                "width": images[i]["width"], "source_file": origin[i],
                "objects": list(objects[i].values()), "captions": captions[i]}
               for i in sorted(images)]
    return records, issues, total


def load_coco_dir(coco_dir, splits=None):
    """The splits of a COCO directory (all, or those named in `splits`: "train", "eval")
    -> CocoData (annotation files parsed once each, other splits' files not at all)."""
    sources = find_splits(coco_dir)
    if splits is not None:
        missing = sorted(set(splits) - set(sources))
        if missing:
            found = ", ".join(f"{name} ({src.suffix})" for name, src in sorted(sources.items()))
            raise ValueError(f"{coco_dir}: no annotation files for split {', '.join(missing)}; found {found}")
        sources = {name: sources[name] for name in splits}
    docs = {name: read_split(src) for name, src in sources.items()}
    categories = {}
    for name in sorted(docs):
        _merge_categories(docs[name], categories)
    num_keypoints = max([len(c.get("keypoints") or []) for c in categories.values()] or [0]) \
        or DEFAULT_NUM_KEYPOINTS
    data = CocoData({}, {}, [categories[k] for k in sorted(categories)], num_keypoints)
    for name in sorted(sources):
        records, issues, total = join_split(docs.pop(name), categories, num_keypoints)
        data.splits[name], data.image_dirs[name] = records, sources[name].image_dir
        for issue in issues:
            issue["split"] = name
        data.issues += issues
        data.total_records += total
    return data
