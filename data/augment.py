"""Training-time task augmentation (Pix2Seq v2): random, but a pure function of a seed.

- detection, captioning: horizontal flip, scale jitter, random crop to the canvas,
  pad bottom/right (captioning also picks one random caption);
- segmentation: one random non-crowd instance per sequence, same flip/jitter/crop
  (when the crop loses the instance, the un-jittered canvas is used instead);
- keypoints: one random person, flip (left/right keypoints swapped), crop 2x the
  person box, resize and pad.

Images and boxes move through keras-cv (`RandomFlip`, `JitteredResize` via
data/preprocess.py) with transformations drawn here from stateless seeds, so the
same seed gives the same example; polygons and keypoints move with the same maps
through data/geometry.py. Output layout: data/preprocess.py module docstring.
"""
import dataclasses
import functools

import tensorflow as tf

from data import geometry, preprocess


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation knobs.

    Attributes:
      scale_min, scale_max: scale jitter of the longer image side relative to the canvas.
      flip_prob: probability of a horizontal flip.
      person_crop_factor: keypoint crop size relative to the person box.
    """

    scale_min: float = 0.3
    scale_max: float = 2.0
    flip_prob: float = 0.5
    person_crop_factor: float = preprocess.PERSON_CROP_FACTOR

    def __post_init__(self):
        if not 0.0 < self.scale_min <= self.scale_max:
            raise ValueError("AugmentConfig needs 0 < scale_min <= scale_max. Received: "
                             f"scale_min={self.scale_min}, scale_max={self.scale_max}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"AugmentConfig.flip_prob must be in [0, 1]. Received: {self.flip_prob}")
        if self.person_crop_factor < 1.0:
            raise ValueError("AugmentConfig.person_crop_factor must be >= 1. Received: "
                             f"{self.person_crop_factor}")


@functools.lru_cache(maxsize=None)
def _random_flip():
    import keras_cv

    with tf.init_scope():
        return keras_cv.layers.RandomFlip(mode="horizontal", bounding_box_format="rel_yxyx",
                                          dtype="float32")


def flip_left_right(example, flip, keypoint_flip_pairs=()):
    """Mirrors the image and everything on it when `flip` (bool scalar) is true;
    left/right keypoints trade places so "left wrist" stays the left wrist."""
    layer = _random_flip()
    transform = {"flip_horizontals": tf.reshape(tf.cast(flip, tf.float32), [1, 1]),
                 "flip_verticals": tf.zeros([1, 1])}
    out = dict(example)
    image = example["image"]
    out["image"] = tf.ensure_shape(layer.augment_images(image[None], transform)[0], image.shape)
    moved = layer.augment_bounding_boxes(
        {"boxes": example["boxes"][None], "classes": geometry.object_index(example["boxes"])[None]},
        transform)
    out["boxes"] = tf.reshape(moved["boxes"][0], [-1, 4])
    out = geometry.move_points(out, tf.ones([2]), tf.zeros([2]), flip=flip)
    if "keypoints" in out:
        out["keypoints"] = geometry.swap_keypoints(out["keypoints"], keypoint_flip_pairs, flip)
    return out


def _seeds(seed, num):
    seed = tf.reshape(tf.cast(seed, tf.int64), [2])
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))


def _jitter_crop(example, seed, image_size, config):
    """Random scale of the longer side in [scale_min, scale_max] x S, random S x S crop."""
    s_scale, s_offset = _seeds(seed, 2)
    scale = tf.random.stateless_uniform([], s_scale, config.scale_min, config.scale_max)
    offset_fraction = tf.random.stateless_uniform([2], s_offset)
    shape = tf.shape(example["image"])
    transform = preprocess.canvas_transform(shape[0], shape[1], image_size, scale, offset_fraction)
    return preprocess.apply_canvas_transform(example, transform, image_size)


def _random_flip_of(example, seed, config, keypoint_flip_pairs=()):
    flip = tf.random.stateless_uniform([], seed) < config.flip_prob
    return flip_left_right(example, flip, keypoint_flip_pairs)


def _random_index(candidates, seed):
    count = tf.size(candidates)
    check = tf.debugging.assert_positive(count, message="no candidate instance to sample from")
    with tf.control_dependencies([check]):
        pick = tf.random.stateless_uniform([], seed, 0, count, dtype=tf.int32)
    return tf.gather(candidates, pick)


def augment_detection(example, seed, image_size, config=AugmentConfig(), keypoint_flip_pairs=()):
    s_flip, s_crop = _seeds(seed, 2)
    example = preprocess.drop_crowd(example)
    example = _random_flip_of(example, s_flip, config, keypoint_flip_pairs)
    return _jitter_crop(example, s_crop, image_size, config)


def augment_captioning(example, seed, image_size, config=AugmentConfig(), keypoint_flip_pairs=()):
    """Detection's geometry plus one random caption (the image needs >= 1 caption)."""
    s_pick, s_rest = _seeds(seed, 2)
    index = tf.random.stateless_uniform([], s_pick, 0, tf.shape(example["captions"])[0],
                                        dtype=tf.int32)
    return augment_detection(preprocess.select_caption(example, index), s_rest, image_size, config,
                             keypoint_flip_pairs)


def augment_segmentation(example, seed, image_size, config=AugmentConfig(), keypoint_flip_pairs=()):
    """One random non-crowd instance with a polygon (`preprocess.segmentation_candidates`)."""
    s_pick, s_flip, s_crop = _seeds(seed, 3)
    instance = geometry.select_object(
        example, _random_index(preprocess.segmentation_candidates(example), s_pick))
    instance = _random_flip_of(instance, s_flip, config, keypoint_flip_pairs)
    jittered = _jitter_crop(instance, s_crop, image_size, config)
    survived = tf.shape(jittered["boxes"])[0] > 0
    survived &= tf.size(jittered["polygon_instance"]) > 0
    return tf.cond(survived, lambda: jittered,
                   lambda: preprocess.resize_and_pad(instance, image_size))


def augment_keypoints(example, seed, image_size, config=AugmentConfig(), keypoint_flip_pairs=()):
    """One random person (`preprocess.keypoint_candidates`), flipped, cropped 2x its box."""
    s_pick, s_flip = _seeds(seed, 2)
    person = geometry.select_object(
        example, _random_index(preprocess.keypoint_candidates(example), s_pick))
    person = _random_flip_of(person, s_flip, config, keypoint_flip_pairs)
    window = preprocess.person_window(person["boxes"][0], config.person_crop_factor)
    return preprocess.resize_and_pad(preprocess.crop_to_window(person, window), image_size)


def augment(example, task, seed, image_size, config=AugmentConfig(), keypoint_flip_pairs=()):
    """Dispatches to the task's augmentation (task names as in model.tasks.TASK_NAMES).

    Every task swaps `keypoint_flip_pairs` on a flip, so keypoints carried along stay right.
    """
    if task == "detection":
        return augment_detection(example, seed, image_size, config, keypoint_flip_pairs)
    if task == "segmentation":
        return augment_segmentation(example, seed, image_size, config, keypoint_flip_pairs)
    if task == "keypoints":
        return augment_keypoints(example, seed, image_size, config, keypoint_flip_pairs)
    if task == "captioning":
        return augment_captioning(example, seed, image_size, config, keypoint_flip_pairs)
    raise ValueError(f"Unknown task {task!r}; expected detection, segmentation, keypoints or captioning.")
