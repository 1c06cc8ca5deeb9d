"""Custom COCO-format datasets made from the synthetic one, for the bring-your-own-dataset
tests (tests/test_own_dataset.py) and the end-to-end pipeline test: `rewrite(src, dst,
edit)` copies a COCO dir without captions and lets `edit` change each annotation file.
"""
import json
import os
import shutil

from data import synth_person
from data.synth_shapes import PERSON_ID

FIRST_ID = 500
NUM_CATEGORIES = 300
DOG_ID = 120
DOG_KEYPOINTS = list(synth_person.KEYPOINT_NAMES) + ["tail_base", "tail_middle", "tail_tip"]
# A model small enough to train and export in seconds (the tiny preset, shrunk).
MICRO = dict(encoder_depth=1, decoder_depth=1, image_size=64, max_instances=4, encoder_dim=32, decoder_dim=32,
             encoder_mlp_dim=64, decoder_mlp_dim=64, encoder_heads=2, decoder_heads=2, max_polygon_points=8)


def rewrite(src, dst, edit):
    """A copy of the COCO dir `src` without captions; `edit(kind, doc)` changes each
    remaining annotation file in place (kind: instances / person_keypoints)."""
    shutil.copytree(src, dst)
    ann_dir = os.path.join(dst, "annotations")
    for name in os.listdir(ann_dir):
        path = os.path.join(ann_dir, name)
        if name.startswith("captions_"):
            os.remove(path)
            continue
        with open(path) as f:
            doc = json.load(f)
        if edit(name.split("_")[0] if name.startswith("instances") else "person_keypoints", doc) is False:
            os.remove(path)
            continue
        with open(path, "w") as f:
            json.dump(doc, f)
    return dst


def detection_500s(kind, doc):
    """Detection only, ids shifted to FIRST_ID.., padded with unused categories to 300."""
    if kind != "instances":
        return False
    shift = FIRST_ID - 1
    cats = [{"id": c["id"] + shift, "name": c["name"]} for c in doc["categories"]]
    top = max(c["id"] for c in cats)
    doc["categories"] = cats + [{"id": top + 1 + i, "name": f"unused_{i}"}
                                for i in range(NUM_CATEGORIES - len(cats))]
    for ann in doc["annotations"]:
        ann["category_id"] += shift
        ann.pop("keypoints", None), ann.pop("num_keypoints", None), ann.pop("segmentation", None)


def masks_no_persons(kind, doc):
    """Detection + masks of the shapes; the person category and its objects removed."""
    if kind != "instances":
        return False
    doc["categories"] = [c for c in doc["categories"] if c["id"] != PERSON_ID]
    doc["annotations"] = [a for a in doc["annotations"] if a["category_id"] != PERSON_ID]


def dog_keypoints(kind, doc):
    """Persons become category DOG_ID "dog" with 20 keypoints (3 tail points at the hips);
    no masks."""
    dog = {"id": DOG_ID, "name": "dog", "keypoints": DOG_KEYPOINTS, "skeleton": [[12, 18], [18, 19], [19, 20]]}
    doc["categories"] = [dog if c["id"] == PERSON_ID else c for c in doc["categories"]]
    for ann in doc["annotations"]:
        ann.pop("segmentation", None)
        if ann["category_id"] == PERSON_ID:
            ann["category_id"] = DOG_ID
        if ann.get("keypoints"):
            left_hip = ann["keypoints"][3 * 11:3 * 12]
            ann["keypoints"] = ann["keypoints"] + left_hip * 3
            ann["num_keypoints"] = sum(1 for v in ann["keypoints"][2::3] if v > 0)


def declared_ids(coco_dir):
    with open(os.path.join(coco_dir, "annotations", "instances_val.json")) as f:
        return {c["id"] for c in json.load(f)["categories"]}
