"""Shared check for ingestion tests: the written shards equal the source COCO files.

The expectation is rebuilt here from the raw JSON (not with the code under
test): every image, every annotation (normalized (y, x) boxes, polygons and
keypoints, crowd RLE masks), every caption and its SentencePiece ids.
"""
import glob
import json
import os

import numpy as np
import sentencepiece as spm
import tensorflow as tf
from pycocotools import mask as mask_utils

from data import features as F

SPLIT_SUFFIX = {"train": "train", "eval": "val"}


def read_split(examples_dir, split):
    """{image_id: decoded example} of one split's gzipped TFRecord shards."""
    paths = sorted(glob.glob(os.path.join(examples_dir, f"Split-{split}", "data_tfrecord-*.gz")))
    assert paths, f"no shards in {examples_dir}/Split-{split}"
    records = tf.data.TFRecordDataset(paths, compression_type="GZIP").as_numpy_iterator()
    return {ex[F.IMAGE_ID]: ex for ex in map(F.decode_example, records)}


def _load(coco_dir, kind, suffix):
    path = os.path.join(coco_dir, "annotations", f"{kind}_{suffix}.json")
    with open(path) as f:
        return json.load(f)


def _check_object(ex, i, ann, kp_ann, h, w):
    x, y, bw, bh = ann["bbox"]
    np.testing.assert_allclose(ex[F.OBJECT_BBOX][4 * i:4 * i + 4], [y / h, x / w, (y + bh) / h, (x + bw) / w],
                               atol=1e-6)
    assert ex[F.OBJECT_CLASS][i] == ann["category_id"]
    assert ex[F.OBJECT_IS_CROWD][i] == ann["iscrowd"]
    assert abs(ex[F.OBJECT_AREA][i] - ann["area"]) < 1e-3 * max(1.0, ann["area"])
    mine = [j for j, inst in enumerate(ex[F.POLYGON_INSTANCE]) if inst == i]
    if ann["iscrowd"]:
        assert not mine
        rle = ex[F.OBJECT_RLE][i]
        seg = ann["segmentation"]
        expected = mask_utils.decode(mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list)
                                     else {"size": seg["size"], "counts": seg["counts"].encode()})
        got = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        np.testing.assert_array_equal(got, expected)
    else:
        assert ex[F.OBJECT_RLE][i] is None
        points, parts = [], []
        for part, poly in enumerate(ann["segmentation"]):
            for px, py in zip(poly[0::2], poly[1::2]):
                points += [py / h, px / w]
                parts.append(part)
        got = [ex[F.POLYGON_POINTS][2 * j + c] for j in mine for c in (0, 1)]
        np.testing.assert_allclose(got, points, atol=1e-6)
        assert [ex[F.POLYGON_PART][j] for j in mine] == parts
    k = len(ex[F.OBJECT_KEYPOINTS]) // len(ex[F.OBJECT_ID])
    got = ex[F.OBJECT_KEYPOINTS][k * i:k * (i + 1)]
    expected = [0.0] * k
    if kp_ann is not None:
        kps = kp_ann["keypoints"]
        expected = []
        for kx, ky, v in zip(kps[0::3], kps[1::3], kps[2::3]):
            expected += [ky / h, kx / w, v] if v > 0 else [0.0, 0.0, 0.0]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def assert_examples_equal_source(examples_dir, coco_dir, spm_model_path):
    """Every image, annotation and caption of the COCO dir is in the shards, exactly."""
    sp = spm.SentencePieceProcessor(model_file=spm_model_path)
    counts = {}
    for split, suffix in SPLIT_SUFFIX.items():
        instances = _load(coco_dir, "instances", suffix)
        keypoints = {a["id"]: a for a in _load(coco_dir, "person_keypoints", suffix)["annotations"]}
        captions = _load(coco_dir, "captions", suffix)["annotations"]
        examples = read_split(examples_dir, split)
        assert sorted(examples) == sorted(im["id"] for im in instances["images"])
        for image in instances["images"]:
            ex = examples[image["id"]]
            h, w = image["height"], image["width"]
            assert (ex[F.IMAGE_HEIGHT], ex[F.IMAGE_WIDTH], ex[F.IMAGE_FILE_NAME]) == (h, w, image["file_name"])
            with open(os.path.join(coco_dir, "images", suffix, image["file_name"]), "rb") as f:
                assert ex[F.IMAGE_ENCODED] == f.read()
            anns = [a for a in instances["annotations"] if a["image_id"] == image["id"]]
            assert ex[F.OBJECT_ID] == [a["id"] for a in anns]
            for i, ann in enumerate(anns):
                _check_object(ex, i, ann, keypoints.get(ann["id"]), h, w)
            texts = [c["caption"].strip() for c in captions if c["image_id"] == image["id"]]
            assert ex[F.CAPTION_TEXT] == texts
            ids = [sp.encode(t) for t in texts]
            assert ex[F.CAPTION_LENGTH] == [len(i) for i in ids]
            assert ex[F.CAPTION_IDS] == [p for i in ids for p in i]
            assert [sp.decode(i) for i in ids] == texts
        counts[split] = len(examples)
    return counts
