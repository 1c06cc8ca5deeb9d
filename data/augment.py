"""Training-time task augmentation (Pix2Seq v2): random, but a pure function of a seed.

- detection, captioning: horizontal flip, scale jitter, random crop to the canvas,
  pad bottom/right;
- segmentation: up to `num_instances` random non-crowd instances, same flip/jitter/crop
  (instances the crop loses are dropped; when it loses all, the un-jittered canvas is
  used instead);
- keypoints: one random person, flip (left/right keypoints swapped), crop 2x the
  person box, then scale jitter of that crop in [keypoint_scale_min,
  keypoint_scale_max] and a random crop/pad to the canvas (the paper's 0.3-1.0);
- captioning: up to `num_instances` of the image's captions in random order.

Transformations are drawn here from stateless seeds, so the same seed gives the same
example; pixels move with tf.image, boxes, polygons and keypoints with the same maps
through data/geometry.py (core TF ops only). Output layout: data/preprocess.py module
docstring.

Which of these a task uses is the task's choice (`Task.augment` in model/tasks/); this
module holds the ops and names no task registry.
"""
import dataclasses

import tensorflow as tf

from data import geometry, preprocess


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation knobs.

    Attributes:
      scale_min, scale_max: scale jitter of the longer image side relative to the canvas.
      flip_prob: probability of a horizontal flip.
      person_crop_factor: keypoint crop size relative to the person box.
      keypoint_scale_min, keypoint_scale_max: scale jitter of the person crop (its
        longer side relative to the canvas) after cropping; 1, 1 turns it off.
    """

    scale_min: float = 0.3
    scale_max: float = 2.0
    flip_prob: float = 0.5
    person_crop_factor: float = preprocess.PERSON_CROP_FACTOR
    keypoint_scale_min: float = 0.3
    keypoint_scale_max: float = 1.0

    def __post_init__(self):
        if not 0.0 < self.scale_min <= self.scale_max:
            raise ValueError("AugmentConfig needs 0 < scale_min <= scale_max. Received: "
                             f"scale_min={self.scale_min}, scale_max={self.scale_max}")
        if not 0.0 < self.keypoint_scale_min <= self.keypoint_scale_max:
            raise ValueError("AugmentConfig needs 0 < keypoint_scale_min <= keypoint_scale_max. Received: "
                             f"keypoint_scale_min={self.keypoint_scale_min}, "
                             f"keypoint_scale_max={self.keypoint_scale_max}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"AugmentConfig.flip_prob must be in [0, 1]. Received: {self.flip_prob}")
        if self.person_crop_factor < 1.0:
            raise ValueError("AugmentConfig.person_crop_factor must be >= 1. Received: "
                             f"{self.person_crop_factor}")


def flip_left_right(example, flip, keypoint_flip_pairs=()):
    """Mirrors the image and everything on it when `flip` (bool scalar) is true;
    left/right keypoints trade places so "left wrist" stays the left wrist. Boxes are
    also clipped to the image (`geometry.clip_boxes`; a lost box becomes -1 and is
    dropped by the next crop or canvas)."""
    flip = tf.cast(flip, tf.bool)
    out = dict(example)
    image = example["image"]
    out["image"] = tf.where(flip, tf.image.flip_left_right(image), image)
    out["boxes"], _ = geometry.clip_boxes(geometry.flip_boxes(tf.reshape(example["boxes"], [-1, 4]), flip))
    out = geometry.move_points(out, tf.ones([2]), tf.zeros([2]), flip=flip)
    if "keypoints" in out:
        out["keypoints"] = geometry.swap_keypoints(out["keypoints"], keypoint_flip_pairs, flip)
    return out


def _seeds(seed, num):
    seed = tf.reshape(tf.cast(seed, tf.int64), [2])
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))


def _jitter_crop(example, seed, image_size, scale_range):
    """Random scale of the longer side in `scale_range` x S, random S x S crop."""
    s_scale, s_offset = _seeds(seed, 2)
    scale = tf.random.stateless_uniform([], s_scale, scale_range[0], scale_range[1])
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


def _random_subset(candidates, num, seed):
    """Up to `num` of the int32 `candidates`, in random order."""
    order = tf.argsort(tf.random.stateless_uniform(tf.shape(candidates), seed))
    return tf.gather(candidates, order[:num])


def augment_detection(example, seed, image_size, config=AugmentConfig(), keypoint_flip_pairs=()):
    s_flip, s_crop = _seeds(seed, 2)
    example = preprocess.drop_crowd(example)
    example = _random_flip_of(example, s_flip, config, keypoint_flip_pairs)
    return _jitter_crop(example, s_crop, image_size, (config.scale_min, config.scale_max))


def augment_captioning(example, seed, image_size, config=AugmentConfig(), keypoint_flip_pairs=(),
                       num_instances=1):
    """Detection's geometry plus up to `num_instances` random captions (the image needs >= 1)."""
    s_pick, s_rest = _seeds(seed, 2)
    picked = _random_subset(tf.range(tf.shape(example["captions"])[0]), num_instances, s_pick)
    out = dict(example)
    out["captions"] = tf.gather(example["captions"], picked)
    out["caption_ids"] = tf.gather(example["caption_ids"], picked)
    return augment_detection(out, s_rest, image_size, config, keypoint_flip_pairs)


def augment_segmentation(example, seed, image_size, config=AugmentConfig(), keypoint_flip_pairs=(),
                         num_instances=1):
    """Up to `num_instances` random non-crowd instances with a polygon
    (`preprocess.segmentation_candidates`)."""
    s_pick, s_flip, s_crop = _seeds(seed, 3)
    candidates = preprocess.segmentation_candidates(example)
    check = tf.debugging.assert_positive(tf.size(candidates), message="no candidate instance to sample from")
    with tf.control_dependencies([check]):
        picked = _random_subset(candidates, num_instances, s_pick)
    n = tf.shape(example["boxes"])[0]
    chosen = tf.reduce_any(tf.equal(tf.range(n)[:, tf.newaxis], picked[tf.newaxis, :]), axis=1)
    instances = geometry.keep_objects(example, chosen)
    instances = _random_flip_of(instances, s_flip, config, keypoint_flip_pairs)
    jittered = _jitter_crop(instances, s_crop, image_size, (config.scale_min, config.scale_max))
    survived = tf.shape(jittered["boxes"])[0] > 0
    survived &= tf.size(jittered["polygon_instance"]) > 0
    return tf.cond(survived, lambda: jittered,
                   lambda: preprocess.resize_and_pad(instances, image_size))


def augment_keypoints(example, seed, image_size, config=AugmentConfig(), keypoint_flip_pairs=(),
                      num_instances=1):
    """One random person (`preprocess.keypoint_candidates`), flipped, cropped 2x its box,
    then the crop scale-jittered onto the canvas."""
    del num_instances
    s_pick, s_flip, s_crop = _seeds(seed, 3)
    person = geometry.select_object(
        example, _random_index(preprocess.keypoint_candidates(example), s_pick))
    person = _random_flip_of(person, s_flip, config, keypoint_flip_pairs)
    window = preprocess.person_window(person["boxes"][0], config.person_crop_factor)
    cropped = preprocess.crop_to_window(person, window)
    return _jitter_crop(cropped, s_crop, image_size, (config.keypoint_scale_min, config.keypoint_scale_max))
