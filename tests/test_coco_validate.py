"""Bad input is quarantined with its reason and never takes valid records with it.

One module-scoped ingestion run (Beam, in memory) over a tiny COCO directory
into which every bad-input case of issue 4 is injected, each into its own
record; each test checks one case's report row and that the valid records of
the same file are all written. Plus the max_error_fraction gate and the image
decisions (RGB conversion, EXIF) checked pixel by pixel.
"""
import glob
import io
import json
import os

import numpy as np
import pytest
from PIL import Image, ImageOps

import tiny_coco
from components import beam_ingest
from data import coco, features, image_io

H, W = tiny_coco.SIZE


def _pipeline():
    import apache_beam as beam

    return beam.Pipeline()


def _read_examples(examples_dir, split):
    """{image_id: decoded example} of a split's gzipped TFRecord shards."""
    import tensorflow as tf

    paths = glob.glob(os.path.join(examples_dir, f"Split-{split}", "data_tfrecord-*.gz"))
    assert paths
    records = tf.data.TFRecordDataset(paths, compression_type="GZIP").as_numpy_iterator()
    return {ex[features.IMAGE_ID]: ex for ex in map(features.decode_example, records)}


def _run(coco_dir, out_dir, **kwargs):
    dirs = [os.path.join(out_dir, d) for d in ("examples", "vocabulary", "report")]
    summary = beam_ingest.run_ingest(coco_dir, *dirs, make_pipeline=_pipeline, caption_vocab_size=40,
                                     **kwargs)
    with open(os.path.join(dirs[2], beam_ingest.ERRORS)) as f:
        report = [json.loads(line) for line in f]
    return summary, report, dirs


def _add_image(root, docs, image_id, name, data=None, height=H, width=W):
    if data is not None:
        path = os.path.join(root, "images", "train", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    docs["instances"]["images"].append({"id": image_id, "file_name": name, "height": height, "width": width})


def _ann(ann_id, image_id, category_id=3, bbox=(2.0, 2.0, 10.0, 10.0), **extra):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": 0,
            "bbox": list(bbox), "area": 50.0, **extra}


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bad_coco"))
    docs = tiny_coco.make_valid(root, num_images=4)
    valid_ids = {a["id"] for a in docs["instances"]["annotations"]}
    anns = docs["instances"]["annotations"]
    kps = docs["person_keypoints"]["annotations"]
    caps = docs["captions"]["annotations"]
    # images
    _add_image(root, docs, 900, "missing.jpg")
    _add_image(root, docs, 901, "garbage.jpg", data=b"this is not an image" * 20)
    good = tiny_coco.image_bytes()
    _add_image(root, docs, 902, "truncated.jpg", data=good[: len(good) // 2])
    with open(os.path.join(root, "images", "outside.jpg"), "wb") as f:
        f.write(good)
    _add_image(root, docs, 903, "../outside.jpg")
    _add_image(root, docs, 904, os.path.join(root, "images", "outside.jpg"))
    _add_image(root, docs, 905, "grey.jpg", data=tiny_coco.image_bytes(mode="L"))
    _add_image(root, docs, 906, "cmyk.jpg", data=tiny_coco.image_bytes(mode="CMYK"))
    _add_image(root, docs, 907, "alpha.png", data=tiny_coco.image_bytes(mode="RGBA", fmt="PNG"))
    # EXIF orientation 6 (rotate 90 CW to view): raw W x H, viewed H x W
    rotated = tiny_coco.image_bytes(orientation=6)
    _add_image(root, docs, 908, "exif_viewed.jpg", data=rotated, height=W, width=H)
    _add_image(root, docs, 909, "exif_raw.jpg", data=rotated, height=H, width=W)
    _add_image(root, docs, 910, "exif_wrong.jpg", data=rotated, height=H + 1, width=W)
    # a valid annotation on each converted image, so their objects are checked too
    anns += [_ann(9050, 905), _ann(9080, 908, bbox=(1.0, 1.0, 40.0, 60.0))]
    # duplicate image ids: 101 conflicting (dropped with its records), 102 identical (merged)
    images = docs["instances"]["images"]
    images.append(dict(images[1], file_name="other.jpg"))
    images.append(dict(images[2]))
    # annotations, all on image 100 next to its three valid ones
    anns += [
        _ann(2001, 100, bbox=(1.0, 1.0, 0.0, 5.0)),  # w <= 0
        _ann(2002, 100, bbox=(50.0, 40.0, 30.0, 20.0)),  # partly outside: clip
        _ann(2003, 100, bbox=(70.0, 10.0, 5.0, 5.0)),  # wholly outside
        _ann(2004, 100, segmentation=[[1, 1, 5, 5]]),  # 2 points
        _ann(2005, 100, segmentation=[[1, 1, 5, 5, 9, 9, 3]]),  # odd
        _ann(2006, 9999),  # unknown image
        _ann(2007, 100, category_id=55),  # unknown category
        _ann(2010, [100]),  # an image id that is not an id
        _ann(2011, 100, category_id="3"),  # a category id that is not an id
    ]
    kps.append(dict(kps[0], id=2008, image_id=103, keypoints=kps[0]["keypoints"][:-1]))  # 50 numbers
    anns.append(_ann(2008, 103, category_id=1, bbox=(3.0, 3.0, 9.0, 9.0)))
    bad_v = list(kps[0]["keypoints"])
    bad_v[2] = 3
    kps.append(dict(kps[0], id=2009, image_id=103, keypoints=bad_v))
    anns.append(_ann(2009, 103, category_id=1, bbox=(4.0, 4.0, 9.0, 9.0)))
    caps += [{"id": 7001, "image_id": 100, "caption": ""},
             {"id": 7002, "image_id": 100, "caption": "   \n"},
             {"id": 7003, "image_id": 9999, "caption": "an orphan caption"}]
    tiny_coco.write(root, docs)
    summary, report, dirs = _run(root, str(tmp_path_factory.mktemp("bad_out")), max_error_fraction=1.0)
    examples = _read_examples(dirs[0], "train")
    return {"root": root, "docs": docs, "summary": summary, "report": report,
            "examples": examples, "valid_ann_ids": valid_ids}


def _rows(run, **match):
    return [r for r in run["report"] if all(r[k] == v for k, v in match.items())]


def _assert_valid_records_written(run, skip_images=(101,)):
    """Every record of the valid base set (except those of skipped images) is in the output."""
    examples = run["examples"]
    for image in run["docs"]["instances"]["images"]:
        if 100 <= image["id"] < 104 and image["id"] not in skip_images:
            ex = examples[image["id"]]
            written = set(ex[features.OBJECT_ID])
            base = {a for a in run["valid_ann_ids"] if (a - 1000) // 10 == image["id"] - 100}
            assert base <= written, (image["id"], base - written)
            assert len(ex[features.CAPTION_TEXT]) == 3


@pytest.mark.parametrize("image_id,reason", [
    (900, "image_missing"), (901, "image_undecodable"), (902, "image_truncated"),
    (903, "image_path_escapes"), (904, "image_path_escapes"), (910, "image_size_mismatch"),
])
def test_bad_image_dropped_with_reason(bad_run, image_id, reason):
    rows = _rows(bad_run, image_id=image_id)
    assert [(r["reason"], r["action"], r["file"]) for r in rows] == [
        (reason, "dropped", "instances_train.json")]
    assert image_id not in bad_run["examples"]
    _assert_valid_records_written(bad_run)


@pytest.mark.parametrize("ann_id,reason,field", [
    (2001, "bbox_nonpositive_size", "bbox"), (2003, "bbox_outside_image", "bbox"),
    (2004, "polygon_too_few_points", "segmentation"), (2005, "polygon_odd_coordinates", "segmentation"),
    (2006, "unknown_image", "image_id"), (2007, "unknown_category", "category_id"),
    (2010, "unknown_image", "image_id"), (2011, "unknown_category", "category_id"),
])
def test_bad_annotation_dropped_not_its_image(bad_run, ann_id, reason, field):
    rows = _rows(bad_run, annotation_id=ann_id)
    assert [(r["reason"], r["field"], r["action"]) for r in rows] == [(reason, field, "dropped")]
    written = {i for ex in bad_run["examples"].values() for i in ex[features.OBJECT_ID]}
    assert ann_id not in written
    assert 100 in bad_run["examples"]
    _assert_valid_records_written(bad_run)


def test_partly_outside_box_is_clipped(bad_run):
    (row,) = _rows(bad_run, annotation_id=2002)
    assert (row["reason"], row["action"]) == ("bbox_clipped", "repaired")
    ex = bad_run["examples"][100]
    i = ex[features.OBJECT_ID].index(2002)
    box = ex[features.OBJECT_BBOX][4 * i: 4 * i + 4]
    np.testing.assert_allclose(box, [40 / H, 50 / W, 1.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("ann_id,reason", [(2008, "keypoints_length"), (2009, "keypoint_visibility")])
def test_bad_keypoints_cleared_object_kept(bad_run, ann_id, reason):
    rows = _rows(bad_run, annotation_id=ann_id)
    assert [(r["reason"], r["field"], r["file"]) for r in rows] == [
        (reason, "keypoints", "person_keypoints_train.json")]
    ex = bad_run["examples"][103]
    i = ex[features.OBJECT_ID].index(ann_id)
    k = 17 * 3
    assert ex[features.OBJECT_KEYPOINTS][k * i: k * (i + 1)] == [0.0] * k
    person = ex[features.OBJECT_ID].index(1030)  # the valid person keeps its keypoints
    assert max(ex[features.OBJECT_KEYPOINTS][k * person + 2: k * (person + 1): 3]) == 2.0
    _assert_valid_records_written(bad_run)


def test_duplicate_image_ids(bad_run):
    (conflict,) = _rows(bad_run, image_id=101, reason="duplicate_image_id")
    assert conflict["action"] == "dropped"
    assert 101 not in bad_run["examples"]
    # its annotations and captions are quarantined, named by the image
    assert {r["reason"] for r in _rows(bad_run, image_id=101)} == {"duplicate_image_id", "image_rejected"}
    assert len(_rows(bad_run, image_id=101, reason="image_rejected")) == 3 + 1 + 3
    (identical,) = _rows(bad_run, image_id=102, reason="duplicate_image_id")
    assert identical["action"] == "repaired"
    assert 102 in bad_run["examples"]
    _assert_valid_records_written(bad_run)


def test_empty_and_orphan_captions(bad_run):
    assert {(r["annotation_id"], r["reason"]) for r in _rows(bad_run, field="caption")} == {
        (7001, "caption_empty"), (7002, "caption_empty")}
    assert _rows(bad_run, annotation_id=7003)[0]["reason"] == "unknown_image"
    texts = bad_run["examples"][100][features.CAPTION_TEXT]
    assert texts == ["a person next to a car", "a red car and a kite", "kite in the sky"]


def test_crowd_rle_kept_for_evaluation_not_as_polygon(bad_run):
    from pycocotools import mask as mask_utils

    ex = bad_run["examples"][100]
    i = ex[features.OBJECT_ID].index(1002)
    assert ex[features.OBJECT_IS_CROWD][i] == 1
    assert i not in ex[features.POLYGON_INSTANCE]
    source = next(a for a in bad_run["docs"]["instances"]["annotations"] if a["id"] == 1002)
    expected = mask_utils.decode(mask_utils.frPyObjects(source["segmentation"], H, W))
    rle = ex[features.OBJECT_RLE][i]
    assert isinstance(rle["counts"], str)
    np.testing.assert_array_equal(mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}),
                                  expected)
    assert not _rows(bad_run, annotation_id=1002)  # crowd RLE is valid input, not an error


def _decoded(ex):
    return np.asarray(Image.open(io.BytesIO(ex[features.IMAGE_ENCODED])))


@pytest.mark.parametrize("image_id,name", [(905, "grey.jpg"), (906, "cmyk.jpg"), (907, "alpha.png")])
def test_grey_cmyk_alpha_converted_to_rgb(bad_run, image_id, name):
    (row,) = _rows(bad_run, image_id=image_id)
    assert (row["reason"], row["action"]) == ("image_converted_to_rgb", "repaired")
    ex = bad_run["examples"][image_id]
    pixels = _decoded(ex)
    assert pixels.shape == (H, W, 3)
    expected = np.asarray(Image.open(os.path.join(bad_run["root"], "images", "train", name)).convert("RGB"))
    tolerance = 0 if name.endswith(".png") else 3  # JPEG sources are re-encoded at quality 95
    assert np.abs(pixels.astype(int) - expected.astype(int)).mean() <= tolerance
    assert ex[features.IMAGE_FORMAT] == ("png" if name.endswith(".png") else "jpeg")


def test_exif_orientation_applied_when_declared_size_is_the_viewed_one(bad_run):
    (row,) = _rows(bad_run, image_id=908)
    assert row["reason"] == "image_exif_transposed"
    ex = bad_run["examples"][908]
    source = Image.open(os.path.join(bad_run["root"], "images", "train", "exif_viewed.jpg"))
    viewed = np.asarray(ImageOps.exif_transpose(source))
    pixels = _decoded(ex)
    assert pixels.shape == (W, H, 3) == viewed.shape
    assert np.abs(pixels.astype(int) - viewed.astype(int)).mean() < 3
    # the annotation keeps its place on the viewed grid (normalized by the declared size)
    i = ex[features.OBJECT_ID].index(9080)
    np.testing.assert_allclose(ex[features.OBJECT_BBOX][4 * i: 4 * i + 4],
                               [1 / W, 1 / H, 61 / W, 41 / H], atol=1e-6)


def test_exif_raw_grid_kept_when_declared_size_is_the_stored_one(bad_run):
    assert not _rows(bad_run, image_id=909)
    ex = bad_run["examples"][909]
    with open(os.path.join(bad_run["root"], "images", "train", "exif_raw.jpg"), "rb") as f:
        assert ex[features.IMAGE_ENCODED] == f.read()  # bytes untouched; TF decoding ignores EXIF


def test_summary_counts(bad_run):
    s = bad_run["summary"]
    assert s["images_written"] == {"train": 4 - 1 + 5}  # 100, 102, 103 + 905-909
    assert s["dropped"] == sum(r["action"] == "dropped" for r in bad_run["report"])
    assert s["dropped_by_reason"]["image_path_escapes"] == 2
    assert s["repaired_by_reason"]["image_converted_to_rgb"] == 3


def test_max_error_fraction_gate(tmp_path):
    root = str(tmp_path / "coco")
    docs = tiny_coco.make_valid(root, num_images=13)  # 13 * 8 = 104 records
    docs["captions"]["annotations"].append({"id": 1, "image_id": 100, "caption": " "})
    tiny_coco.write(root, docs)
    summary, report, _ = _run(root, str(tmp_path / "ok"))  # 1 / 105 < 0.01: completes
    assert summary["dropped"] == 1 and summary["images_written"] == {"train": 13}
    assert [r["reason"] for r in report] == ["caption_empty"]

    docs["captions"]["annotations"].append({"id": 2, "image_id": 100, "caption": ""})
    tiny_coco.write(root, docs)
    with pytest.raises(beam_ingest.IngestError, match=r"caption_empty: 2") as err:
        _run(root, str(tmp_path / "fail"))  # 2 / 106 > 0.01: fails with the summary
    assert err.value.summary["dropped_by_reason"] == {"caption_empty": 2}
    with open(tmp_path / "fail" / "report" / beam_ingest.ERRORS) as f:
        assert len(f.readlines()) == 2  # the report is written before failing


def test_join_merges_keypoints_into_instances_objects(tmp_path):
    docs = tiny_coco.make_valid(str(tmp_path), num_images=1)
    data = coco.load_coco_dir(str(tmp_path))
    (record,) = data.splits["train"]
    person = next(o for o in record["objects"] if o["id"] == 1000)
    assert person["keypoints"] == [float(v) for v in docs["person_keypoints"]["annotations"][0]["keypoints"]]
    assert [o["id"] for o in record["objects"]] == [1000, 1001, 1002]
    assert data.total_records == 1 + 3 + 1 + 3 and data.issues == []
    assert [c["name"] for c in data.categories] == ["person", "car", "kite"]
    assert data.categories[0]["keypoints"] == tiny_coco.PERSON_KEYPOINTS


def test_split_names_from_file_suffix(tmp_path):
    tiny_coco.make_valid(str(tmp_path), suffix="train2017", num_images=1)
    tiny_coco.make_valid(str(tmp_path), suffix="val2017", num_images=1)
    sources = coco.find_splits(str(tmp_path))
    assert sorted(sources) == ["eval", "train"]
    assert sources["eval"].image_dir == os.path.join(str(tmp_path), "images", "val2017")
    tiny_coco.make_valid(str(tmp_path), suffix="train2014", num_images=1)
    with pytest.raises(ValueError, match="two annotation sets for split 'train'"):
        coco.find_splits(str(tmp_path))


def test_resolve_image_path_refuses_escapes(tmp_path):
    base = tmp_path / "images"
    base.mkdir()
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", base / "link.jpg")
    expected = os.path.join(os.path.realpath(base), "a", "b.jpg")
    assert image_io.resolve_image_path(str(base), "a/b.jpg") == expected
    for name in ("../secret", "/etc/passwd", "a/../../secret", "link.jpg"):
        with pytest.raises(image_io.ImageRejected, match="image_path_escapes"):
            image_io.resolve_image_path(str(base), name)
    with pytest.raises(image_io.ImageRejected, match="image_path_escapes"):
        image_io.resolve_image_path("gs://bucket/images", "../x.jpg")
