"""Canvas math and deterministic (eval-mode) task preparation.

The one implementation of "resize keeping aspect ratio, pad bottom/right to the
square canvas": training augmentation (data/augment.py) calls the same
`apply_canvas_transform` with a random scale and crop offset, evaluation and
`pix2seq tokens` call `resize_and_pad` through each task's `prepare_eval`
(model/tasks/), serving-side code calls `canvas_image`.
`canvas_transform` computes the transformation (scaled size, crop offset), `canvas_pixels`
moves the image with tf.image (plus the `CanvasStyle` options: pad value, antialiasing),
and data/geometry.py moves boxes, polygons and keypoints with the same affine map.

A canvas-prepared example is the parsed dict (CONTRACTS.md) with
  image         float32 [S, S, 3] in [0, 1]
  boxes, polygon_points, keypoints   normalized to the S x S canvas
  canvas_scale  float32 [2]  canvas pixels per original-image pixel (y, x)
  canvas_offset float32 [2]  original-image pixel at the canvas origin (y, x)
so a canvas coordinate c maps back to original pixels as c * S / canvas_scale + canvas_offset.
Objects that leave the canvas are dropped with their polygons (a polygon object also
when only its polygon left), a polygon object's box is the tight box of its visible
polygon, other boxes are clipped; keypoints that leave the canvas become (0, 0, 0).

Task preparation ops (what the task codecs receive, CONTRACTS.md "Task-prepared
example"; each task's `prepare_eval` composes them): crowd objects are removed
(`drop_crowd`), one object is kept (`geometry.select_object`, N = 1), one caption
(`select_caption`, C = 1), the 2x person crop (`prepare_keypoint_instance`).
"""
import dataclasses

import tensorflow as tf

from data import geometry

# Paper: the keypoint crop is the person box enlarged 2x about its centre.
PERSON_CROP_FACTOR = 2.0


@dataclasses.dataclass(frozen=True)
class CanvasStyle:
    """How canvas pixels are made. The defaults are this project's (zero padding, plain
    bilinear resize); the official Pix2Seq checkpoints saw `pad_value=0.3` and an
    antialiased resize at evaluation (`ModelConfig.canvas_style()`)."""

    pad_value: float = 0.0
    antialias: bool = False


DEFAULT_STYLE = CanvasStyle()


def canvas_transform(height, width, image_size, scale=1.0, offset_fraction=(0.0, 0.0)):
    """The transformation that resizes an H x W image so its longer side is
    `scale * image_size` and crops the S x S window at `offset_fraction` of the slack:
    scaled_sizes [1, 2] (rounded, >= 1), image_scales [1, 2] (scaled / original, per
    axis), offsets int32 [1, 2] (scaled-image pixel at the canvas origin)."""
    hw = tf.cast(tf.stack([height, width]), tf.float32)
    factor = tf.cast(scale, tf.float32) * float(image_size) / tf.reduce_max(hw)
    scaled = tf.maximum(tf.round(hw * factor), 1.0)
    slack = tf.maximum(scaled - float(image_size), 0.0)
    offsets = tf.cast(tf.floor(slack * tf.cast(offset_fraction, tf.float32)), tf.int32)
    return {"scaled_sizes": scaled[None], "image_scales": (scaled / hw)[None], "offsets": offsets[None]}


def canvas_pixels(image, transform, image_size, style=DEFAULT_STYLE):
    """float32 image [H, W, 3] -> [S, S, 3]: resized to the transform's scaled size, the
    S x S window at its offset, padded bottom/right with `style.pad_value`."""
    scaled = tf.image.resize(image, tf.cast(transform["scaled_sizes"][0], tf.int32), antialias=style.antialias)
    offset = tf.cast(transform["offsets"][0], tf.int32)
    window = scaled[offset[0]:offset[0] + image_size, offset[1]:offset[1] + image_size]
    pad = tf.constant(style.pad_value, tf.float32)
    canvas = tf.image.pad_to_bounding_box(window - pad, 0, 0, image_size, image_size) + pad
    return tf.ensure_shape(canvas, [image_size, image_size, 3])


def canvas_image(image, image_size, style=DEFAULT_STYLE):
    """Encoded-then-decoded image (uint8 or float [H, W, 3]) -> float32 [S, S, 3] in
    [0, 1] resized to fit and padded bottom/right, and its canvas_scale [2]."""
    image = tf.image.convert_image_dtype(image, tf.float32)
    shape = tf.shape(image)
    transform = canvas_transform(shape[0], shape[1], image_size)
    return canvas_pixels(image, transform, image_size, style), transform["image_scales"][0]


def apply_canvas_transform(example, transform, image_size, style=DEFAULT_STYLE):
    """Moves image, boxes, polygons and keypoints onto the S x S canvas (see module doc)."""
    out = dict(example)
    image = tf.image.convert_image_dtype(example["image"], tf.float32)
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    out["image"] = canvas_pixels(image, transform, image_size, style)

    # Boxes in pixels: original -> scaled image -> canvas (the crop offset), clipped to it.
    scales = tf.cast(transform["image_scales"][0], tf.float32)
    offsets = tf.cast(transform["offsets"][0], tf.float32)
    pixels = tf.reshape(example["boxes"], [-1, 4]) * tf.tile(hw, [2]) * tf.tile(scales, [2])
    boxes, keep = geometry.clip_boxes(pixels - tf.tile(offsets, [2]), float(image_size))
    out["boxes"] = boxes / float(image_size)

    out = geometry.move_points(out, transform["scaled_sizes"][0] / float(image_size),
                               offsets / float(image_size))
    out = geometry.settle_objects(example, out, keep)
    out["canvas_scale"] = scales
    out["canvas_offset"] = example.get("crop_offset", tf.zeros([2], tf.float32)) + offsets / scales
    out.pop("crop_offset", None)
    return out


def resize_and_pad(example, image_size, style=DEFAULT_STYLE):
    """Deterministic canvas: fit the longer side to S, no crop, pad bottom/right."""
    shape = tf.shape(example["image"])
    return apply_canvas_transform(example, canvas_transform(shape[0], shape[1], image_size),
                                  image_size, style)


def crop_to_window(example, window):
    """Crops to `window` (ymin, xmin, ymax, xmax normalized to the image); geometry is
    re-normalized to the crop, boxes and polygons clipped to it."""
    image = example["image"]
    hw_i = tf.shape(image)[:2]
    hw = tf.cast(hw_i, tf.float32)
    window = tf.cast(window, tf.float32)
    lo = tf.cast(tf.floor(window[:2] * hw), tf.int32)
    hi = tf.cast(tf.math.ceil(window[2:] * hw), tf.int32)
    lo = tf.clip_by_value(lo, 0, hw_i - 1)
    hi = tf.clip_by_value(hi, lo + 1, hw_i)
    out = dict(example)
    out["image"] = image[lo[0]:hi[0], lo[1]:hi[1]]
    size = tf.cast(hi - lo, tf.float32)
    scale = hw / size
    shift = tf.cast(lo, tf.float32) / size
    out["boxes"], keep = geometry.clip_boxes(
        tf.reshape(example["boxes"], [-1, 4]) * tf.tile(scale, [2]) - tf.tile(shift, [2]))
    out = geometry.move_points(out, scale, shift)
    out = geometry.settle_objects(example, out, keep)
    out["crop_offset"] = example.get("crop_offset", tf.zeros([2], tf.float32)) + tf.cast(lo, tf.float32)
    return out


def person_window(box, factor=PERSON_CROP_FACTOR):
    """Box (normalized yxyx) enlarged `factor` times about its centre, clipped to the image."""
    box = tf.cast(box, tf.float32)
    center = (box[:2] + box[2:]) / 2.0
    half = (box[2:] - box[:2]) * (factor / 2.0)
    return tf.clip_by_value(tf.concat([center - half, center + half], 0), 0.0, 1.0)


def drop_crowd(example):
    """Crowd objects are evaluation ground truth only, never a training target."""
    return geometry.keep_objects(example, tf.equal(example["is_crowd"], 0))


def select_caption(example, index):
    """Keeps caption `index` only (C = 1)."""
    out = dict(example)
    out["captions"] = example["captions"][index:index + 1]
    out["caption_ids"] = example["caption_ids"][index:index + 1]
    return out


def segmentation_candidates(example):
    """Indices of non-crowd objects with at least one polygon vertex."""
    n = tf.shape(example["boxes"])[0]
    has_polygon = tf.math.bincount(example["polygon_instance"], minlength=n, maxlength=n) > 0
    return tf.cast(tf.where(has_polygon & tf.equal(example["is_crowd"], 0))[:, 0], tf.int32)


def keypoint_candidates(example):
    """Indices of non-crowd objects with at least one labelled keypoint (persons)."""
    labelled = tf.reduce_any(example["keypoints"][..., 2] > 0, axis=-1)
    return tf.cast(tf.where(labelled & tf.equal(example["is_crowd"], 0))[:, 0], tf.int32)


def prepare_keypoint_instance(example, index, image_size, factor=PERSON_CROP_FACTOR, style=DEFAULT_STYLE):
    """Person `index` alone (N = 1) on a canvas showing `factor` x its box (GT box)."""
    person = geometry.select_object(example, index)
    cropped = crop_to_window(person, person_window(person["boxes"][0], factor))
    return resize_and_pad(cropped, image_size, style)
