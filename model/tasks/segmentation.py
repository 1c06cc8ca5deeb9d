"""Instance segmentation as tokens: `11 ymin xmin ymax xmax class`, polygon `y x` pairs
with parts joined by `40 40`, then 0.

Example keys read by `build_sequences` (ONE instance, canvas-normalized):
  box             float [4]     ymin, xmin, ymax, xmax of the instance
  class           int   []      category id in [1, max_class_id]
  polygon_points  float [P, 2]  (y, x) vertices of all parts, in order
  polygon_part    int   [P]     part index of each vertex (runs of equal values form a
                                part); negative rows are padding, so the pipeline may pad
                                P to a static maximum with part -1
Polygons longer than `max_polygon_points` pairs (separator pairs included) are
resampled evenly along the contour (model/polygons.py), never truncated.
Weights: the 5 target positions that repeat the prompt 0; polygon tokens and EOS 1;
padding 0 (with `augment`: `segmentation_padding_weight`, the paper's 1, so the model
also learns to stay ended).

Training recipe (Pix2Seq v2): `build_image_sequences` trains up to
`segmentation_instances_per_image` instances of one image per step, one sequence each
(the model encodes the image once); missing instances are rows of weight 0.
"""
import numpy as np
import tensorflow as tf

from data import augment as augment_ops
from data import geometry, preprocess
from model import pixels, polygons, vocab
from model.tasks import base


class SegmentationTask(base.Task):
    name = "segmentation"
    prompt_length = 6
    # what generic code asks of the task (base.Task)
    paper_weight = 0.7128
    decoding_defaults = {"temperature": 1.0, "top_p": 0.8, "num_samples": 8}
    signatures = ("segment", "segment_with_options")
    describe_output = "polygons"
    serves_from_images = False
    coco_kind, coco_ground_truth, table_metrics = "segm", "instances", ("AP", "AP50", "AP75")

    @classmethod
    def sequence_length(cls, token_config) -> int:
        return token_config.segmentation_seq_len

    dataset_needs = "segmentation polygons on non-crowd objects"

    @classmethod
    def feeds(cls, record, keypoint_schema=None) -> bool:
        return any(obj.get("polygons") and not obj.get("iscrowd") for obj in record["objects"])

    def __init__(self, token_config: vocab.TokenConfig):
        super().__init__(token_config)
        self._coord = self._coord_mask()
        self._coord_sep_eos = self._coord | self._np_ids(vocab.SEPARATOR, vocab.EOS)
        self._sep = self._np_ids(vocab.SEPARATOR)
        self._eos = self._np_ids(vocab.EOS)

    def prompt_tokens(self, boxes, classes):
        """Boxes [..., 4] and category ids [...] -> int32 prompts [..., 6]."""
        boxes = tf.clip_by_value(tf.cast(boxes, tf.float32), 0.0, 1.0)
        classes = tf.cast(classes, tf.int32)
        prompt = tf.fill(tf.shape(classes), vocab.SEGMENTATION_PROMPT)
        return tf.concat([prompt[..., tf.newaxis], vocab.quantize(boxes, self.config.num_bins),
                          vocab.class_to_token(classes)[..., tf.newaxis]], -1)

    def polygon_pairs(self, points, part):
        """Polygon -> int32 [T, 2] token pairs: resampled, quantized, `40 40` between parts."""
        points, index = polygons.resample(points, part, self.config.max_polygon_points)
        q = vocab.quantize(tf.clip_by_value(points, 0.0, 1.0), self.config.num_bins)
        total = tf.size(index) + tf.maximum(tf.reduce_max(tf.concat([index, [0]], 0)), 0)
        pairs = tf.fill([total, 2], vocab.SEPARATOR)
        pos = tf.range(tf.size(index)) + index
        return tf.tensor_scatter_nd_update(pairs, pos[:, tf.newaxis], q)

    @property
    def sequences_per_image(self) -> int:
        return self.config.segmentation_instances_per_image

    needs = "a non-crowd object with a polygon"

    def usable(self, example):
        return tf.size(preprocess.segmentation_candidates(example)) > 0

    eval_per_instance = True

    def eval_candidates(self, example):
        return preprocess.segmentation_candidates(example)

    def augment(self, example, seed, config=augment_ops.AugmentConfig()):
        """`sequences_per_image` random instances with a polygon, flip, scale jitter, crop."""
        size, pairs = self._canvas()
        return augment_ops.augment_segmentation(example, seed, size, config, pairs, self.sequences_per_image)

    def prepare_eval(self, example, index=0, style=preprocess.DEFAULT_STYLE):
        """Object `index` alone on the whole image's canvas."""
        return preprocess.resize_and_pad(geometry.select_object(example, index), self.config.image_size, style)

    def codec_inputs(self, example, per_image=False):
        """One object as `box`/`class` + its polygon; `per_image`: all objects."""
        if per_image:
            return {k: example[k] for k in ("boxes", "classes", "polygon_points", "polygon_part",
                                            "polygon_instance")}
        return {"box": example["boxes"][0], "class": example["classes"][0],
                "polygon_points": example["polygon_points"], "polygon_part": example["polygon_part"]}

    def build_sequences(self, example, seed=0, augment: bool = True):
        """Example dict (see module docstring) -> input/target tokens and weights [L].

        Deterministic (`seed` is accepted for the common task interface); `augment`
        gives the PAD targets after EOS `segmentation_padding_weight`.
        """
        del seed
        cls = tf.reshape(tf.cast(example["class"], tf.int32), [])
        with tf.control_dependencies([tf.debugging.assert_less_equal(
                cls, self.config.max_class_id,
                message="segmentation example field 'class' is > max_class_id")]):
            prompt = self.prompt_tokens(tf.reshape(example["box"], [4]), cls)
        pairs = self.polygon_pairs(example["polygon_points"], example["polygon_part"])
        response = tf.concat([tf.reshape(pairs, [-1]), [vocab.EOS]], 0)
        weights = tf.ones_like(response, tf.float32)
        pad_weight = self.config.segmentation_padding_weight if augment else 0.0
        return self._teacher_forcing(prompt, response, response, weights, pad_weight=pad_weight)

    def build_image_sequences(self, example, seed=0, augment: bool = True):
        """Several instances of one image -> tokens and weights
        [segmentation_instances_per_image, L].

        Keys: `boxes` [N, 4], `classes` [N], `polygon_points` [P, 2], `polygon_part` [P]
        and `polygon_instance` [P] (the object each vertex belongs to). Row k is
        instance k; rows past N have weight 0.
        """
        boxes = tf.reshape(tf.cast(example["boxes"], tf.float32), [-1, 4])
        classes = tf.reshape(tf.cast(example["classes"], tf.int32), [-1])
        points = tf.reshape(tf.cast(example["polygon_points"], tf.float32), [-1, 2])
        part = tf.reshape(tf.cast(example["polygon_part"], tf.int32), [-1])
        instance = tf.reshape(tf.cast(example["polygon_instance"], tf.int32), [-1])

        def row(k):
            mine = tf.equal(instance, k)
            return self.build_sequences(
                {"box": tf.gather(boxes, k), "class": tf.gather(classes, k), "polygon_points": tf.boolean_mask(points, mine),
                 "polygon_part": tf.boolean_mask(part, mine)}, seed, augment)

        return self._stack_rows(row, tf.shape(classes)[0])

    def describe_target(self, response, to_pixels, class_ids=()):
        del class_ids
        dec = {k: v.numpy() for k, v in self.decode(response).items()}
        keep = dec["part"] >= 0
        parts = []
        for p in np.unique(dec["part"][keep]):
            pts = dec["points"][dec["part"] == p]
            parts.append({"canvas": [base.rounded(yx) for yx in pts],
                          "polygon": base.rounded(base.canvas_to_pixels(pts, to_pixels)[:, ::-1].reshape(-1), 3)})
        return {"parts": parts}

    @classmethod
    def object_fields(cls, outputs, row, n, category, height, width, options) -> dict:
        """The mask: the sampled polygons rasterized, averaged, kept >= mask_threshold."""
        return {"segmentation": pixels.mask_to_rle(pixels.ensemble_mask(
            outputs["polygons"][row, n], outputs["polygon_parts"][row, n], height, width,
            options.mask_threshold))}

    @classmethod
    def coco_object_entry(cls, obj, head):
        if "segmentation" not in obj:
            return None
        return {**head, "segmentation": dict(obj["segmentation"]), "score": obj["score"]}

    def inference_prompt(self, boxes, classes):
        """Boxes [B, 4] (canvas-normalized) and classes [B] -> int32 [B, 6]."""
        return self.prompt_tokens(boxes, classes)

    def grammar_mask(self, step, prev_tokens):
        """Allowed ids [B, V]: at a pair start a coordinate, `40` or EOS (only a coordinate
        at step 0 and right after a separator pair); the second token of a pair completes
        it (`40` after `40`, a coordinate after a coordinate); EOS once the budget is used."""
        step = tf.cast(step, tf.int32)
        prev = tf.reshape(tf.cast(prev_tokens, tf.int32), [-1])
        coord, sep = tf.constant(self._coord), tf.constant(self._sep)
        start = tf.where(((prev == vocab.SEPARATOR) | (step == 0))[:, tf.newaxis],
                         coord[tf.newaxis], tf.constant(self._coord_sep_eos)[tf.newaxis])
        second = tf.where((prev == vocab.SEPARATOR)[:, tf.newaxis], sep[tf.newaxis], coord[tf.newaxis])
        allowed = tf.where(step % 2 == 0, start, second)
        at_end = step >= 2 * self.config.max_polygon_points
        allowed = tf.where(at_end, tf.constant(self._eos)[tf.newaxis], allowed)
        done = (prev == vocab.EOS) & (step > 0)
        return tf.where(done[:, tf.newaxis], tf.constant(self._eos)[tf.newaxis], allowed)

    def decode(self, tokens, logits=None, mask_size=None):
        """Response tokens [B, T] -> polygon in canvas-normalized coordinates.

        Returns points float32 [B, P, 2], part int32 [B, P] (-1 for unused rows),
        P = max_polygon_points; with `mask_size=(H, W)` also `mask` bool [B, H, W]
        rasterized over the whole canvas. Pairs after the first EOS or that mix a
        coordinate with another token are dropped.
        """
        del logits
        p = self.config.max_polygon_points
        tokens, unbatched = base.batched(tokens, 2)
        tokens, _ = self._fit_response(tokens)
        pairs = tf.reshape(tokens[:, :2 * p], [-1, p, 2])
        ended = tf.reduce_any(tf.reshape(self._after_eos(tokens)[:, :2 * p], [-1, p, 2]), axis=2)
        is_point = tf.reduce_all(vocab.is_coordinate(pairs, self.config.num_bins), axis=2) & ~ended
        is_sep = tf.reduce_all(pairs == vocab.SEPARATOR, axis=2) & ~ended
        part = tf.where(is_point, tf.cumsum(tf.cast(is_sep, tf.int32), axis=1), -1)
        points = tf.where(is_point[..., tf.newaxis], vocab.dequantize(pairs, self.config.num_bins), 0.0)
        out = {"points": points, "part": part}
        if mask_size is not None:
            out["mask"] = rasterize_batch(points, part, mask_size[0], mask_size[1])
        if unbatched:
            out = {k: v[0] for k, v in out.items()}
        return out


def rasterize_batch(points, part, height, width):
    """Polygons [B, P, 2] / [B, P] -> bool masks [B, H, W] (one polygon per row)."""
    return tf.map_fn(
        lambda x: polygons.rasterize(x[0], x[1], height, width), (points, part),
        fn_output_signature=tf.TensorSpec([None, None], tf.bool))
