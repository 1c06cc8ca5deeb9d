"""data/parse.py: serialized examples -> the CONTRACTS "one image, after parsing" dict."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import example_records as er
from data import features, parse


@pytest.fixture(scope="module")
def record():
    return er.make_record(3, seed=3)


def test_parse_equals_source_record(record):
    rec, png = record
    out = parse.parse_example(tf.constant(er.serialized(rec, png)), er.NUM_KEYPOINTS)
    h, w = rec["height"], rec["width"]
    assert out["image_id"].numpy() == 3 and out["orig_size"].numpy().tolist() == [h, w]
    np.testing.assert_array_equal(out["image"].numpy(), np.asarray(Image.open(io.BytesIO(png))))
    objs = rec["objects"]
    boxes = [[o["bbox"][1] / h, o["bbox"][0] / w, (o["bbox"][1] + o["bbox"][3]) / h,
              (o["bbox"][0] + o["bbox"][2]) / w] for o in objs]
    np.testing.assert_allclose(out["boxes"].numpy(), boxes, atol=1e-6)
    assert out["classes"].numpy().tolist() == [o["category_id"] for o in objs]
    assert out["is_crowd"].numpy().tolist() == [o["iscrowd"] for o in objs]
    np.testing.assert_allclose(out["areas"].numpy(), [o["area"] for o in objs])
    for i, o in enumerate(objs):
        pts = out["polygon_points"].numpy()[out["polygon_instance"].numpy() == i]
        want = [(y / h, x / w) for poly in o["polygons"] for x, y in zip(poly[0::2], poly[1::2])]
        np.testing.assert_allclose(pts.reshape(-1, 2), np.reshape(want, (-1, 2)), atol=1e-6)
    person = out["keypoints"].numpy()[2]
    kp = np.reshape(objs[2]["keypoints"], (-1, 3))
    np.testing.assert_allclose(person[:, 0], np.where(kp[:, 2] > 0, kp[:, 1] / h, 0), atol=1e-6)
    np.testing.assert_allclose(person[:, 2], kp[:, 2])
    assert not out["keypoints"].numpy()[[0, 1, 3]].any()
    assert [c.decode() for c in out["captions"].numpy()] == [c["text"] for c in rec["captions"]]
    assert out["caption_ids"].to_list() == [c["ids"] for c in rec["captions"]]


def test_parse_in_tf_data_map_and_without_decode(record):
    serialized = er.serialized(*record)
    ds = tf.data.Dataset.from_tensors(serialized).map(
        lambda s: parse.parse_example(s, er.NUM_KEYPOINTS, decode_image=False))
    light = next(iter(ds))
    assert "image" not in light
    full = parse.decode_parsed(light)
    assert full["image"].shape == (record[0]["height"], record[0]["width"], 3)
    assert full["image"].dtype == tf.uint8


def test_image_without_objects_or_captions_parses_empty():
    rec, png = er.make_record(4, seed=4)
    rec = dict(rec, objects=[], captions=[])
    out = parse.parse_example(tf.constant(er.serialized(rec, png)), er.NUM_KEYPOINTS)
    assert out["boxes"].shape == (0, 4) and out["keypoints"].shape == (0, er.NUM_KEYPOINTS, 3)
    assert out["polygon_points"].shape == (0, 2) and out["caption_ids"].shape[0] == 0


@pytest.mark.parametrize("key, values, complaint", [
    (features.OBJECT_BBOX, [0.1, 0.2, 0.3], "object/bbox"),
    (features.OBJECT_KEYPOINTS, [0.5] * 7, "object/keypoints"),
    (features.POLYGON_INSTANCE, [9, 9, 9], "object/polygon/instance"),
    (features.CAPTION_LENGTH, [50, 50], "caption/ids"),
])
def test_malformed_feature_names_image_and_field(record, key, values, complaint):
    example = features.encode_example(record[0], record[1], "png", er.NUM_KEYPOINTS)
    field = example.features.feature[key]
    target = field.float_list if field.HasField("float_list") else field.int64_list
    if key == features.POLYGON_INSTANCE:
        values = list(target.value[:-3]) + values
    del target.value[:]
    target.value.extend(values)
    with pytest.raises(tf.errors.InvalidArgumentError, match=complaint) as err:
        parse.parse_example(tf.constant(example.SerializeToString()), er.NUM_KEYPOINTS)
    assert "image id" in str(err.value)


def test_decode_rejects_size_mismatch(record):
    rec, png = record
    bad = dict(rec, height=rec["height"] + 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="differs from image/height"):
        parse.parse_example(tf.constant(er.serialized(bad, png)), er.NUM_KEYPOINTS)


def test_record_dataset_reads_gzip_shards_and_shards_per_input_pipeline(tmp_path):
    files = er.write_shards(str(tmp_path), num_images=6, num_shards=3)
    ids = lambda ds: sorted(  # noqa: E731
        int(parse.parse_example(s, decode_image=False)["image_id"]) for s in ds)
    assert ids(parse.record_dataset(str(tmp_path))) == [1, 2, 3, 4, 5, 6]
    assert ids(parse.record_dataset(files[:1])) == [1, 4]
    halves = [ids(parse.record_dataset(files, input_context=tf.distribute.InputContext(2, i, 2)))
              for i in range(2)]
    assert sorted(halves[0] + halves[1]) == [1, 2, 3, 4, 5, 6] and not set(halves[0]) & set(halves[1])
    # More pipelines than files: records are sharded instead.
    quarters = [ids(parse.record_dataset(files[:1], input_context=tf.distribute.InputContext(4, i, 4)))
                for i in range(4)]
    assert sorted(sum(quarters, [])) == [1, 4]
    with pytest.raises(FileNotFoundError, match="no TFRecord files"):
        parse.record_dataset(str(tmp_path / "missing*.gz"))
