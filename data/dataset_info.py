"""What ingestion infers from a COCO-format dataset (pure Python): the class map, the
tasks the data can feed and the keypoint schema. Written into `dataset_info.json`
(components/beam_ingest.py) and read back by training (model/datasets.py), the
evaluator and the export, so every consumer agrees on them.

Class map. A class token is 100 + class index, class index in [1, 899] (DESIGN §4).
When every category id already lies in [1, 90] the index is the id itself (the
official COCO layout, so released checkpoints keep their meaning); otherwise the
categories get dense indices 1..N in id order. `class_category_ids` is () for the
identity map, else the category id of each class index (index c -> ids[c - 1]).
`category_ids` lists every declared category id: inference reports only these (an
identity map may leave ids of [1, 90] undeclared; model/vocab.py `declared_classes`).

Tasks. Which tasks the records can feed is each task's rule (model/tasks, `feeds`
and `supported_by`); ingestion passes `model.tasks.supported_tasks` in, so this module
names no task.

Keypoint schema. The category with keypoints (at most one) gives the count, the
names, the skeleton, and the flip pairs (`left_<part>` <-> `right_<part>`).
"""
import re

OFFICIAL_MAX_CLASS_ID = 90
MAX_CLASSES = 899  # class tokens 101..999 (model/vocab.py MAX_CLASS_TOKEN_ID)
_SIDE = re.compile(r"^(left|right)([_ ].+)$")


class DatasetError(ValueError):
    """The dataset cannot be used as it is; the message names the field and the fix."""


def class_category_ids(categories):
    """Category dicts -> () (identity map) or the category id of each class index."""
    ids = sorted({int(c["id"]) for c in categories})
    if len(ids) > MAX_CLASSES:
        raise DatasetError(
            f"the dataset declares {len(ids)} categories, but the token layout has room for "
            f"{MAX_CLASSES} classes (class tokens 101..999). Merge or drop categories in the "
            f"annotation files' `categories` lists.")
    if all(1 <= i <= OFFICIAL_MAX_CLASS_ID for i in ids):
        return ()
    return tuple(ids)


def class_index(class_ids):
    """The class map -> a function category id -> class index."""
    if not class_ids:
        return int
    lookup = {int(c): i + 1 for i, c in enumerate(class_ids)}
    return lambda category_id: lookup[int(category_id)]


def declared_classes(class_ids, category_ids):
    """The class indices of the declared `category_ids` when they leave indices of the
    class map undeclared (only an identity map can), else () (every index declared)."""
    if class_ids or not category_ids:
        return ()
    return tuple(sorted({int(c) for c in category_ids}))


def category_id(class_ids, index):
    """Class index -> category id (0 and out-of-range indices stay 0: no detection)."""
    index = int(index)
    if not class_ids:
        return index
    return int(class_ids[index - 1]) if 1 <= index <= len(class_ids) else 0


def keypoint_schema(categories):
    """The keypoint category's schema, or None when no category names keypoints:
    {"category_id", "num_keypoints", "names", "skeleton", "flip_pairs"}."""
    with_points = [c for c in categories if c.get("keypoints")]
    if len(with_points) > 1:
        names = ", ".join(f"{c['id']} ({c.get('name', '?')})" for c in with_points)
        raise DatasetError(
            f"categories {names} all name keypoints; one keypoint category is supported. Remove the "
            f"`keypoints` list from all but one category.")
    if not with_points:
        return None
    cat = with_points[0]
    names = [str(n) for n in cat["keypoints"]]
    return {"category_id": int(cat["id"]), "num_keypoints": len(names), "names": names,
            "skeleton": [list(map(int, e)) for e in cat.get("skeleton") or []],
            "flip_pairs": flip_pairs(names)}


def flip_pairs(names):
    """Index pairs of keypoints named `left_<part>` / `right_<part>` (a horizontal flip
    swaps them), in the order of the left names."""
    index = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, name in enumerate(names):
        m = _SIDE.match(name)
        if m and m.group(1) == "left" and f"right{m.group(2)}" in index:
            pairs.append((i, index[f"right{m.group(2)}"]))
    return pairs


def info_fields(categories, records, supported_tasks):
    """The inferred part of dataset_info.json, from all categories and the train records;
    `supported_tasks(records, keypoint_schema)` lists the tasks they feed
    (model/tasks `supported_tasks`)."""
    schema = keypoint_schema(categories)
    return {"class_category_ids": list(class_category_ids(categories)),
            "category_ids": sorted({int(c["id"]) for c in categories}),
            "keypoint_schema": schema, "tasks": list(supported_tasks(records, schema))}
