"""Serialized tf.train.Example (data/features.py layout) -> "one image, after parsing".

The parsed dict is the CONTRACTS.md table "One image, after parsing": image uint8
[H, W, 3] RGB, per-object fields on one axis N, polygon vertices flattened with their
instance/part ids, keypoints [N, K, 3] and captions with ragged piece ids. Graph code:
usable in `tf.data.Dataset.map`. Malformed lists fail with an error naming the image
id and the feature.
"""
import tensorflow as tf

from data import features as F

GZIP = "GZIP"


def _dense(parsed, key, dtype):
    value = parsed[key]
    if isinstance(value, tf.sparse.SparseTensor):
        value = tf.sparse.to_dense(value)
    return tf.cast(value, dtype)


def parse_example(serialized, num_keypoints=17, decode_image=True):
    """One serialized tf.train.Example -> the parsed dict (see module docstring).

    Args:
      serialized: scalar string tensor.
      num_keypoints: K of `object/keypoints` (N * K * 3 floats).
      decode_image: False keeps the encoded bytes under `image_encoded` instead of
        decoding (cheap filtering before the decode).
    """
    parsed = tf.io.parse_single_example(serialized, F.FEATURE_SPEC)
    image_id = parsed[F.IMAGE_ID]
    height = tf.cast(parsed[F.IMAGE_HEIGHT], tf.int32)
    width = tf.cast(parsed[F.IMAGE_WIDTH], tf.int32)

    def checked(condition, message):
        return tf.debugging.Assert(condition, ["image id", image_id, message])

    boxes = tf.reshape(_dense(parsed, F.OBJECT_BBOX, tf.float32), [-1])
    classes = _dense(parsed, F.OBJECT_CLASS, tf.int32)
    n = tf.size(classes)
    points = _dense(parsed, F.POLYGON_POINTS, tf.float32)
    instance = _dense(parsed, F.POLYGON_INSTANCE, tf.int32)
    keypoints = _dense(parsed, F.OBJECT_KEYPOINTS, tf.float32)
    lengths = _dense(parsed, F.CAPTION_LENGTH, tf.int32)
    piece_ids = _dense(parsed, F.CAPTION_IDS, tf.int32)
    texts = _dense(parsed, F.CAPTION_TEXT, tf.string)
    checks = [
        checked(tf.equal(tf.size(boxes), 4 * n), f"{F.OBJECT_BBOX} must hold 4 floats per {F.OBJECT_CLASS}"),
        checked(tf.equal(tf.size(_dense(parsed, F.OBJECT_IS_CROWD, tf.int32)), n),
                f"{F.OBJECT_IS_CROWD} must hold one value per object"),
        checked(tf.equal(tf.size(_dense(parsed, F.OBJECT_AREA, tf.float32)), n),
                f"{F.OBJECT_AREA} must hold one value per object"),
        checked(tf.equal(tf.size(keypoints), 3 * num_keypoints * n),
                f"{F.OBJECT_KEYPOINTS} must hold {num_keypoints}*3 floats per object"),
        checked(tf.equal(tf.size(points), 2 * tf.size(instance)),
                f"{F.POLYGON_POINTS} must hold one (y, x) pair per {F.POLYGON_INSTANCE}"),
        checked(tf.reduce_all((instance >= 0) & (instance < n)),
                f"{F.POLYGON_INSTANCE} must index an object"),
        checked(tf.equal(tf.size(lengths), tf.size(texts)),
                f"{F.CAPTION_LENGTH} must hold one length per {F.CAPTION_TEXT}"),
        checked(tf.equal(tf.reduce_sum(lengths), tf.size(piece_ids)),
                f"{F.CAPTION_IDS} must hold sum({F.CAPTION_LENGTH}) ids"),
    ]
    with tf.control_dependencies(checks):
        out = {
            "image_id": tf.identity(image_id),
            "orig_size": tf.stack([height, width]),
            "boxes": tf.reshape(boxes, [-1, 4]),
            "classes": classes,
            "is_crowd": _dense(parsed, F.OBJECT_IS_CROWD, tf.int32),
            "areas": _dense(parsed, F.OBJECT_AREA, tf.float32),
            "polygon_points": tf.reshape(points, [-1, 2]),
            "polygon_instance": instance,
            "polygon_part": _dense(parsed, F.POLYGON_PART, tf.int32),
            "keypoints": tf.reshape(keypoints, [-1, num_keypoints, 3]),
            "captions": texts,
            "caption_ids": tf.RaggedTensor.from_row_lengths(piece_ids, tf.cast(lengths, tf.int64)),
        }
    if decode_image:
        out["image"] = decode(parsed[F.IMAGE_ENCODED], image_id, height, width)
    else:
        out["image_encoded"] = parsed[F.IMAGE_ENCODED]
    return out


def decode(encoded, image_id=None, height=None, width=None):
    """Encoded JPEG/PNG/GIF/BMP -> uint8 [H, W, 3] RGB; checks the stored size if given."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image = tf.ensure_shape(image, [None, None, 3])
    if height is not None:
        shape = tf.shape(image)[:2]
        check = tf.debugging.Assert(
            tf.reduce_all(tf.equal(shape, tf.stack([height, width]))),
            ["image id", image_id, "decoded size", shape, "differs from image/height, image/width",
             height, width])
        with tf.control_dependencies([check]):
            image = tf.identity(image)
    return image


def decode_parsed(example):
    """Decodes `image_encoded` of an example parsed with decode_image=False."""
    out = dict(example)
    encoded = out.pop("image_encoded")
    size = example["orig_size"]
    out["image"] = decode(encoded, example["image_id"], size[0], size[1])
    return out


def record_dataset(file_pattern_or_files, compression=GZIP, shuffle_files=False, seed=None,
                   input_context=None, num_parallel_reads=None):
    """Serialized examples from gzipped TFRecord shards (a glob, a list of paths or
    a split directory). Sharded by `input_context` when given (one pipeline per host)."""
    files = file_pattern_or_files
    if isinstance(files, str):
        pattern = files
        if tf.io.gfile.isdir(pattern):
            pattern = pattern.rstrip("/") + "/*"
        files = sorted(tf.io.gfile.glob(pattern))
    files = list(files)
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {file_pattern_or_files!r}")
    ds = tf.data.Dataset.from_tensor_slices(files)
    shard_records = False
    if input_context is not None and input_context.num_input_pipelines > 1:
        if len(files) >= input_context.num_input_pipelines:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        else:
            shard_records = True
    if shuffle_files:
        ds = ds.shuffle(len(files), seed=seed)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
        cycle_length=min(len(files), num_parallel_reads or 4),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shard_records:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return ds
