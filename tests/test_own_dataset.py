"""Bring your own COCO dataset: the class map, tasks inferred from the data, the keypoint
schema, and a detection-only dataset with category ids in the 500s (300 categories)
through `pix2seq train --coco-dir` (no task flags) -> export -> the `detect` signature
and `pix2seq evaluate`, whose results carry the dataset's own ids."""
import json
import os
import shutil

import numpy as np
import pytest

from data import dataset_info as D
from data import synth_person

FIRST_ID = 500
NUM_CATEGORIES = 300


def _renumbered(src, dst):
    """The synth dataset as a detection-only set: no captions, no keypoints, no masks,
    category ids shifted to FIRST_ID.. and padded with unused categories to 300."""
    shutil.copytree(src, dst)
    ann_dir = os.path.join(dst, "annotations")
    for name in os.listdir(ann_dir):
        path = os.path.join(ann_dir, name)
        if not name.startswith("instances_"):
            os.remove(path)
            continue
        with open(path) as f:
            doc = json.load(f)
        shift = FIRST_ID - 1
        cats = [{"id": c["id"] + shift, "name": c["name"]} for c in doc["categories"]]
        top = max(c["id"] for c in cats)
        cats += [{"id": top + 1 + i, "name": f"unused_{i}"} for i in range(NUM_CATEGORIES - len(cats))]
        doc["categories"] = cats
        for ann in doc["annotations"]:
            ann["category_id"] += shift
            ann.pop("keypoints", None), ann.pop("num_keypoints", None), ann.pop("segmentation", None)
        with open(path, "w") as f:
            json.dump(doc, f)
    return dst


def test_class_map_identity_dense_and_too_many():
    assert D.class_category_ids([{"id": 1}, {"id": 90}, {"id": 3}]) == ()
    ids = D.class_category_ids([{"id": 507}, {"id": 500}, {"id": 91}])
    assert ids == (91, 500, 507)
    to_class = D.class_index(ids)
    assert [D.category_id(ids, to_class(c)) for c in (500, 507, 91)] == [500, 507, 91]
    assert D.category_id(ids, 0) == 0 and D.category_id(ids, 4) == 0
    with pytest.raises(D.DatasetError, match="900 categories.*899"):
        D.class_category_ids([{"id": i} for i in range(1, 901)])


def test_keypoint_schema_from_names():
    coco = D.keypoint_schema([{"id": 1, "name": "person", "keypoints": list(synth_person.KEYPOINT_NAMES)},
                              {"id": 2, "name": "cat"}])
    from model.vocab import COCO_KEYPOINT_FLIP_PAIRS

    assert coco["category_id"] == 1 and coco["num_keypoints"] == 17
    assert tuple(map(tuple, coco["flip_pairs"])) == COCO_KEYPOINT_FLIP_PAIRS
    names = ["nose", "tail"] + [f"{s}_paw_{i}" for i in range(9) for s in ("left", "right")]
    dog = D.keypoint_schema([{"id": 7, "name": "dog", "keypoints": names}])
    assert dog["num_keypoints"] == 20 and len(dog["flip_pairs"]) == 9
    assert all(names[a].replace("left", "right") == names[b] for a, b in dog["flip_pairs"])
    with pytest.raises(D.DatasetError, match="one keypoint category"):
        D.keypoint_schema([{"id": 1, "keypoints": ["a"]}, {"id": 2, "keypoints": ["b"]}])


def test_supported_tasks_and_clear_error():
    records = [{"objects": [{"category_id": 3, "polygons": [[0, 0, 1, 0, 1, 1]], "iscrowd": 0}],
                "captions": []}]
    assert D.supported_tasks(records) == ["detection", "segmentation"]
    with pytest.raises(D.DatasetError, match="keypoints needs a category with a `keypoints` list"):
        D.check_tasks(["detection", "keypoints"], ["detection", "segmentation"], "DIR")


@pytest.fixture(scope="module")
def trained(synth_coco_dir, tmp_path_factory):
    from pix2seq import cli

    root = tmp_path_factory.mktemp("own_dataset")
    coco_dir = _renumbered(synth_coco_dir, str(root / "coco"))
    out, export = str(root / "run"), str(root / "export")
    assert cli.main(["train", "--coco-dir", coco_dir, "--out", out, "--model-preset", "tiny", "--steps", "2",
                     "--batch-size", "2", "--caption-vocab-size", "100", "--export", export]) == 0
    return coco_dir, out, export


def test_ingestion_records_class_map_and_tasks(trained):
    coco_dir, out, _ = trained
    with open(os.path.join(out, "ingest", "examples", "dataset_info.json")) as f:
        info = json.load(f)
    with open(os.path.join(coco_dir, "annotations", "instances_train.json")) as f:
        declared = sorted(c["id"] for c in json.load(f)["categories"])
    assert info["tasks"] == ["detection"]
    assert len(declared) == NUM_CATEGORIES and min(declared) == FIRST_ID
    assert info["class_category_ids"] == declared
    assert info["keypoint_schema"] is None


def test_explicit_task_the_data_cannot_feed_is_a_clear_error(trained, capsys):
    from pix2seq import cli

    _, out, _ = trained
    code = cli.main(["train", "--examples", os.path.join(out, "ingest", "examples"), "--out", out + "_x",
                     "--steps", "1", "--keypoints-weight", "1"])
    assert code == 2
    assert "keypoints needs a category with a `keypoints` list" in capsys.readouterr().err


def test_predictions_and_evaluation_speak_dataset_ids(trained, tmp_path):
    import tensorflow as tf

    from pix2seq import cli

    coco_dir, _, export = trained
    image = next(os.path.join(r, f) for r, _, fs in os.walk(os.path.join(coco_dir, "images")) for f in fs)
    with open(image, "rb") as f:
        data = f.read()
    detect = tf.saved_model.load(export).signatures["detect"]
    classes = detect(images=tf.constant([data]))["classes"].numpy()
    found = classes[classes > 0]
    with open(os.path.join(coco_dir, "annotations", "instances_train.json")) as f:
        declared = {c["id"] for c in json.load(f)["categories"]}
    assert found.size and set(found.tolist()) <= declared
    report = str(tmp_path / "report.json")
    assert cli.main(["evaluate", "--model", export, "--coco-dir", coco_dir, "--split", "val",
                     "--tasks", "detection", "--max-images", "2", "--json", report]) == 0
    with open(report) as f:
        assert "detection" in json.load(f)["metrics"]
