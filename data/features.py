"""The tf.train.Example layout of one ingested image: feature keys, the parse spec,
and encode / decode of the proto without TensorFlow.

This module owns the keys (docs/CONTRACTS.md, "tf.train.Example features").
Writers (components/beam_ingest.py) call `encode_example`; the tf.data parser
(data/parse.py) uses `FEATURE_SPEC`; tests and the COCO evaluator read examples
back without a graph through `decode_example`.

Coordinates are normalized to the image height/width and written (y, x):
`object/bbox` holds ymin, xmin, ymax, xmax per object; polygon vertices and
keypoints are (y, x) pairs. `object/rle` holds, per object, the COCO RLE JSON
(compressed counts) of an RLE segmentation (always for crowd objects), or b"".

Beam workers build examples with `Example`, a wire-identical copy of
tensorflow/core/example/{example,feature}.proto in a private descriptor pool:
importing TensorFlow costs each worker process seconds of start-up, and the
bytes are what matters (tests check they parse as tf.train.Example).
`FEATURE_SPEC` imports TensorFlow on first use.
"""
import json

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from data import image_io

IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_ID = "image/id"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_FILE_NAME = "image/file_name"
OBJECT_BBOX = "object/bbox"
OBJECT_CLASS = "object/class"
OBJECT_IS_CROWD = "object/is_crowd"
OBJECT_AREA = "object/area"
OBJECT_ID = "object/id"
POLYGON_POINTS = "object/polygon/points"
POLYGON_INSTANCE = "object/polygon/instance"
POLYGON_PART = "object/polygon/part"
OBJECT_RLE = "object/rle"
OBJECT_KEYPOINTS = "object/keypoints"
CAPTION_TEXT = "caption/text"
CAPTION_IDS = "caption/ids"
CAPTION_LENGTH = "caption/length"

_BYTES_KEYS = (IMAGE_ENCODED, IMAGE_FORMAT, IMAGE_FILE_NAME, OBJECT_RLE, CAPTION_TEXT)
_FLOAT_KEYS = (OBJECT_BBOX, OBJECT_AREA, POLYGON_POINTS, OBJECT_KEYPOINTS)
_INT_KEYS = (IMAGE_ID, IMAGE_HEIGHT, IMAGE_WIDTH, OBJECT_CLASS, OBJECT_IS_CROWD, OBJECT_ID,
             POLYGON_INSTANCE, POLYGON_PART, CAPTION_IDS, CAPTION_LENGTH)
_SCALAR_KEYS = (IMAGE_ENCODED, IMAGE_FORMAT, IMAGE_FILE_NAME, IMAGE_ID, IMAGE_HEIGHT, IMAGE_WIDTH)



def _feature_spec():
    """For tf.io.parse_single_example: scalars fixed length, lists VarLen (tf.sparse.to_dense)."""
    import tensorflow as tf

    return {
        **{k: tf.io.FixedLenFeature([], tf.string) for k in (IMAGE_ENCODED, IMAGE_FORMAT, IMAGE_FILE_NAME)},
        **{k: tf.io.FixedLenFeature([], tf.int64) for k in (IMAGE_ID, IMAGE_HEIGHT, IMAGE_WIDTH)},
        **{k: tf.io.VarLenFeature(tf.string) for k in (OBJECT_RLE, CAPTION_TEXT)},
        **{k: tf.io.VarLenFeature(tf.float32) for k in _FLOAT_KEYS},
        **{k: tf.io.VarLenFeature(tf.int64) for k in _INT_KEYS if k not in _SCALAR_KEYS},
    }


def __getattr__(name):  # FEATURE_SPEC is built (and TensorFlow imported) on first use
    if name == "FEATURE_SPEC":
        globals()["FEATURE_SPEC"] = _feature_spec()
        return globals()["FEATURE_SPEC"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _example_class():
    """tf.train.Example's message layout (same field numbers, packed lists) -> message class."""
    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="pix2seq/tf_example.proto", package="pix2seq.tfexample",
                                              syntax="proto3")

    def message(name, fields, nested=(), oneofs=()):
        msg = file.message_type.add(name=name)
        for entry in nested:
            msg.nested_type.add().CopyFrom(entry)
        for oneof in oneofs:
            msg.oneof_decl.add(name=oneof)
        for number, (field, label, kind, type_name, oneof) in enumerate(fields, start=1):
            f = msg.field.add(name=field, number=number, label=label, type=kind)
            if type_name:
                f.type_name = type_name
            if oneof is not None:
                f.oneof_index = oneof
        return msg

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BytesList", [("value", rep, F.TYPE_BYTES, None, None)])
    message("FloatList", [("value", rep, F.TYPE_FLOAT, None, None)])
    message("Int64List", [("value", rep, F.TYPE_INT64, None, None)])
    message("Feature", [(f"{k}_list", opt, F.TYPE_MESSAGE, f".pix2seq.tfexample.{k.title()}List", 0)
                        for k in ("bytes", "float", "int64")], oneofs=["kind"])
    entry = descriptor_pb2.DescriptorProto(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, label=opt, type=F.TYPE_STRING)
    entry.field.add(name="value", number=2, label=opt, type=F.TYPE_MESSAGE,
                    type_name=".pix2seq.tfexample.Feature")
    message("Features", [("feature", rep, F.TYPE_MESSAGE, ".pix2seq.tfexample.Features.FeatureEntry", None)],
            nested=[entry])
    message("Example", [("features", opt, F.TYPE_MESSAGE, ".pix2seq.tfexample.Features", None)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    descriptor = pool.FindMessageTypeByName("pix2seq.tfexample.Example")
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


Example = _example_class()


def _clip01(v):
    return min(1.0, max(0.0, float(v)))


def normalize_objects(objects, height, width, num_keypoints):
    """COCO-pixel objects (validated, see data/validate.py) -> flat normalized lists.

    Each object: `bbox` [x, y, w, h] (inside the image), `category_id` and optionally
    `class` (the class index ingestion's class map gives it, data/dataset_info.py;
    `object/class` holds it, else the category id), `iscrowd`,
    `area`, `id`, `polygons` (list of flat [x, y, ...] parts), `rle` (dict or None),
    `keypoints` (flat [x, y, v] * K or None).
    """
    out = {k: [] for k in (OBJECT_BBOX, OBJECT_CLASS, OBJECT_IS_CROWD, OBJECT_AREA, OBJECT_ID,
                           POLYGON_POINTS, POLYGON_INSTANCE, POLYGON_PART, OBJECT_RLE,
                           OBJECT_KEYPOINTS)}
    for index, obj in enumerate(objects):
        x, y, w, h = obj["bbox"]
        out[OBJECT_BBOX] += [_clip01(y / height), _clip01(x / width),
                             _clip01((y + h) / height), _clip01((x + w) / width)]
        out[OBJECT_CLASS].append(int(obj.get("class", obj["category_id"])))
        out[OBJECT_IS_CROWD].append(int(obj["iscrowd"]))
        out[OBJECT_AREA].append(float(obj["area"]))
        out[OBJECT_ID].append(int(obj["id"]))
        for part, poly in enumerate(obj.get("polygons") or []):
            for px, py in zip(poly[0::2], poly[1::2]):
                out[POLYGON_POINTS] += [_clip01(py / height), _clip01(px / width)]
                out[POLYGON_INSTANCE].append(index)
                out[POLYGON_PART].append(part)
        rle = obj.get("rle")
        out[OBJECT_RLE].append(json.dumps(rle, sort_keys=True).encode() if rle else b"")
        kps = (obj.get("keypoints") or [])[:3 * num_keypoints]
        for kx, ky, v in zip(kps[0::3], kps[1::3], kps[2::3]):
            if v > 0:
                out[OBJECT_KEYPOINTS] += [_clip01(ky / height), _clip01(kx / width), float(v)]
            else:
                out[OBJECT_KEYPOINTS] += [0.0, 0.0, 0.0]
        out[OBJECT_KEYPOINTS] += [0.0] * (3 * num_keypoints - len(kps))  # no or fewer keypoints
    return out


def encode_example(record, image_bytes, image_format, num_keypoints):
    """One validated per-image record (data/coco.py) + final image bytes -> `Example`
    (serialize with `.SerializeToString()`; the bytes are a tf.train.Example)."""
    values = {
        IMAGE_ENCODED: [image_bytes],
        IMAGE_FORMAT: [image_format.encode()],
        IMAGE_ID: [int(record["image_id"])],
        IMAGE_HEIGHT: [int(record["height"])],
        IMAGE_WIDTH: [int(record["width"])],
        IMAGE_FILE_NAME: [record["file_name"].encode()],
        CAPTION_TEXT: [c["text"].encode() for c in record.get("captions", [])],
        CAPTION_IDS: [i for c in record.get("captions", []) for i in c["ids"]],
        CAPTION_LENGTH: [len(c["ids"]) for c in record.get("captions", [])],
    }
    values.update(normalize_objects(record.get("objects", []), record["height"], record["width"],
                                    num_keypoints))
    example = Example()
    for key, vals in values.items():
        feature = example.features.feature[key]
        if key in _BYTES_KEYS:
            feature.bytes_list.value.extend(vals)
        elif key in _FLOAT_KEYS:
            feature.float_list.value.extend(vals)
        else:
            feature.int64_list.value.extend(vals)
    return example


def example_from_file(record, image_dir, num_keypoints):
    """One validated per-image record (data/coco.py) -> (serialized Example, repair notes):
    its image read, verified and normalized by data/image_io.py (which raises
    `image_io.ImageRejected` for a missing or undecodable image)."""
    path = image_io.resolve_image_path(image_dir, record["file_name"])
    image = image_io.load_image(path, record["height"], record["width"])
    example = encode_example(record, image.encoded, image.format, num_keypoints)
    return example.SerializeToString(), list(image.notes)


def decode_example(serialized):
    """Serialized tf.train.Example -> dict of Python lists (scalars unwrapped; RLE parsed)."""
    example = Example.FromString(serialized)
    out = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        out[key] = values[0] if key in _SCALAR_KEYS else values
    out[IMAGE_FORMAT] = out[IMAGE_FORMAT].decode()
    out[IMAGE_FILE_NAME] = out[IMAGE_FILE_NAME].decode()
    out[CAPTION_TEXT] = [t.decode() for t in out.get(CAPTION_TEXT, [])]
    out[OBJECT_RLE] = [json.loads(r) if r else None for r in out.get(OBJECT_RLE, [])]
    return out
