"""Object detection as tokens: `10`, then `ymin xmin ymax xmax class` per object, then 0.

Example keys read by `build_sequences` (canvas-normalized, after augmentation):
  boxes     float [N, 4]  ymin, xmin, ymax, xmax in [0, 1] of the padded square canvas
  classes   int   [N]     category ids in [1, max_class_id]; rows with class <= 0 are padding
  is_crowd  int   [N]     optional; crowd rows are never targets
  valid     bool  [N]     optional; False rows are padding
Rows with an empty box (ymax <= ymin or xmax <= xmin) are dropped too, so the data
pipeline may pad N to a static maximum with class 0 or `valid = False`.

Training sequence (augment=True, DESIGN.md §4): real objects in random order (at most
max_instances), then noise objects up to max_instances (`noise_boxes`: the paper's mix
of jittered duplicates of real boxes, real boxes shifted to a random place and random
boxes) whose target class is the fake class 30 with coordinate weight 0 and class weight 1; the *input* class token
of every object is replaced by a random class or 30 (50/50); final EOS weight 0.1.
With augment=False: real objects in the given order, EOS (0.1), then PAD (weight 0).
"""
import tensorflow as tf

from data import augment as augment_ops
from data import dataset_info
from data import preprocess
from model import sampling, vocab
from model.tasks import base

EOS_WEIGHT = 0.1


class DetectionTask(base.Task):
    name = "detection"
    prompt_length = 1
    # what generic code asks of the task (base.Task)
    paper_weight = 0.1782
    decoding_defaults = {"temperature": 1.0, "top_p": 0.4}
    signatures = ("detect", "detect_with_options", "detect_examples")
    describe_output = "boxes"
    coco_kind, coco_ground_truth, table_metrics = "bbox", "instances", ("AP", "AP50", "AP75", "APs", "APm", "APl")

    @classmethod
    def sequence_length(cls, token_config) -> int:
        return token_config.detection_seq_len

    @classmethod
    def supported_by(cls, records, keypoint_schema=None) -> bool:
        """Always: any image trains detection (one without objects teaches the EOS)."""
        return True

    def __init__(self, token_config: vocab.TokenConfig):
        super().__init__(token_config)
        self.prompt = (vocab.DETECTION_PROMPT,)
        cfg = token_config
        self._coord = self._coord_mask()
        # The one rule for which classes inference may name (grammar and readout alike):
        # the dataset's declared classes (TokenConfig.reportable_classes).
        self._classes = self._np_ids(*(vocab.CLASS_OFFSET + c for c in cfg.reportable_classes()))
        self._class_range = self._classes[vocab.CLASS_OFFSET + 1:vocab.CLASS_OFFSET + cfg.max_class_id + 1]
        self._eos = self._np_ids(vocab.EOS)

    # --- training ------------------------------------------------------------------------

    def valid_objects(self, example):
        """Boolean [N]: rows of `example` that are training targets."""
        boxes = tf.reshape(tf.cast(example["boxes"], tf.float32), [-1, 4])
        classes = tf.reshape(tf.cast(example["classes"], tf.int32), [-1])
        keep = (classes > 0) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if "is_crowd" in example:
            keep &= tf.reshape(tf.cast(example["is_crowd"], tf.int32), [-1]) == 0
        if "valid" in example:
            keep &= tf.reshape(tf.cast(example["valid"], tf.bool), [-1])
        return keep

    def augment(self, example, seed, config=augment_ops.AugmentConfig()):
        """Crowds dropped, random flip, scale jitter and crop (data/augment.py)."""
        size, pairs = self._canvas()
        return augment_ops.augment_detection(example, seed, size, config, pairs)

    def prepare_eval(self, example, index=0, style=preprocess.DEFAULT_STYLE):
        """The whole image without crowds on the canvas."""
        del index
        return preprocess.resize_and_pad(preprocess.drop_crowd(example), self.config.image_size, style)

    def codec_inputs(self, example, per_image=False):
        del per_image
        return {k: example[k] for k in ("boxes", "classes", "is_crowd")}

    def build_sequences(self, example, seed, augment: bool = True):
        """Example dict (see module docstring) -> input/target tokens and weights [L]."""
        cfg = self.config
        m = cfg.max_instances
        seeds = tf.random.experimental.stateless_split(vocab.as_seed(seed), 6)
        boxes = tf.reshape(tf.cast(example["boxes"], tf.float32), [-1, 4])
        classes = tf.reshape(tf.cast(example["classes"], tf.int32), [-1])
        with tf.control_dependencies([tf.debugging.assert_less_equal(
                classes, cfg.max_class_id,
                message=f"detection example field 'classes' holds an id > max_class_id={cfg.max_class_id}")]):
            keep = self.valid_objects(example)
        boxes = tf.clip_by_value(tf.boolean_mask(boxes, keep), 0.0, 1.0)
        classes = tf.boolean_mask(classes, keep)
        if augment:
            order = object_order(boxes, cfg.object_order, seeds[0])
            boxes, classes = tf.gather(boxes, order), tf.gather(classes, order)
        boxes, classes = boxes[:m], classes[:m]
        n = tf.shape(classes)[0]
        is_real = tf.range(m) < n
        real_boxes = base._pad_to(boxes, m, 0.0)
        real_tokens = vocab.class_to_token(base._pad_to(classes, m, 0))

        if augment:
            noise, _ = noise_boxes(boxes, m - n, seeds[1], cfg.noise_jitter, cfg.noise_random_box_size)
            all_boxes = tf.ensure_shape(tf.concat([boxes, noise], 0), [m, 4])
            target_cls = tf.where(is_real, real_tokens, vocab.FAKE_CLASS)
            rand_cls = vocab.class_to_token(
                tf.random.stateless_uniform([m], seeds[2], 1, cfg.max_class_id + 1, tf.int32))
            coin = tf.random.stateless_uniform([m], seeds[3]) < 0.5
            input_cls = tf.where(coin, rand_cls, vocab.FAKE_CLASS)
            num_objects = m
        else:
            all_boxes, target_cls, input_cls, num_objects = real_boxes, real_tokens, real_tokens, n

        coords = vocab.quantize(all_boxes, cfg.num_bins)
        real_w = tf.cast(is_real, tf.float32)[:, tf.newaxis]
        obj_target = tf.concat([coords, target_cls[:, tf.newaxis]], 1)
        obj_input = tf.concat([coords, input_cls[:, tf.newaxis]], 1)
        obj_weights = tf.concat([tf.tile(real_w, [1, 4]), tf.ones([m, 1])], 1)
        length = 5 * num_objects
        eos = tf.constant([vocab.EOS], tf.int32)
        response_target = tf.concat([tf.reshape(obj_target, [-1])[:length], eos], 0)
        response_input = tf.concat([tf.reshape(obj_input, [-1])[:length], eos], 0)
        response_weights = tf.concat([tf.reshape(obj_weights, [-1])[:length], [EOS_WEIGHT]], 0)
        return self._teacher_forcing(self.prompt, response_input, response_target, response_weights)

    # --- inference -----------------------------------------------------------------------

    def max_steps(self, num_objects):
        """Response steps that hold at most `num_objects` objects (int32 scalar, the count
        clipped to [0, max_instances]; 5 tokens each): where decoding may stop early."""
        return 5 * tf.clip_by_value(tf.cast(num_objects, tf.int32), 0, self.config.max_instances)

    def describe_target(self, response, to_pixels, class_ids=()):
        dec = {k: v.numpy() for k, v in self.decode(response).items()}
        objects = []
        for box, cls in zip(dec["boxes"][dec["valid"]], dec["classes"][dec["valid"]]):
            (y0, x0), (y1, x1) = base.canvas_to_pixels(box[:2], to_pixels), base.canvas_to_pixels(box[2:], to_pixels)
            objects.append({"category_id": dataset_info.category_id(class_ids, cls), "box_canvas": base.rounded(box),
                            "bbox": base.rounded([x0, y0, x1 - x0, y1 - y0], 3)})
        return {"objects": objects}

    @classmethod
    def coco_object_entry(cls, obj, head):
        """Every result object is a detection: its box."""
        return {**head, "bbox": list(obj["bbox"]), "score": obj["score"]}

    def inference_prompt(self, batch_size):
        """int32 [B, 1] prompt for the decoder."""
        return tf.fill([batch_size, 1], tf.constant(vocab.DETECTION_PROMPT, tf.int32))

    def grammar_mask(self, step, prev_tokens):
        """Allowed ids [B, V] at response step `step` (0-based after the prompt).

        Positions 0-3 of an object: coordinates; position 4: a class the dataset declares
        (the fake class 30 and undeclared classes are never emitted); EOS where an object may start; after
        max_instances objects only EOS; rows that ended emit PAD.
        """
        step = tf.cast(step, tf.int32)
        pos = step % 5
        coord, cls, eos = (tf.constant(x) for x in (self._coord, self._classes, self._eos))
        allowed = tf.where(pos < 4, coord, cls) | ((pos == 0) & eos)
        allowed = tf.where(step >= 5 * self.config.max_instances, eos, allowed)
        return self._finish_mask(allowed, step, prev_tokens)

    readout_dtypes = {"class_id": tf.int32, "class_prob": tf.float32}

    def step_readout(self, step, logits, token):
        """At class positions (`step % 5 == 4`): `class_id`, the argmax of the softmax over
        the declared classes (within ids 101 .. 100 + max_class_id; the fake class 30 lies
        outside), whatever token was sampled, and `class_prob`, its probability under the
        softmax of the raw logits (the paper's class and score); 0 elsewhere."""
        del token
        lo = vocab.CLASS_OFFSET + 1
        class_logits = sampling.mask_logits(logits[..., lo:lo + self.config.max_class_id],
                                            tf.constant(self._class_range))
        best = tf.argmax(class_logits, axis=-1, output_type=tf.int32) + 1
        prob = tf.exp(tf.reduce_max(class_logits, axis=-1) - tf.reduce_logsumexp(logits, axis=-1))
        at_class = tf.equal(tf.cast(step, tf.int32) % 5, 4)
        return {"class_id": tf.where(at_class, best, 0), "class_prob": tf.where(at_class, prob, 0.0)}

    def decode(self, tokens, logits=None, readout=None):
        """Response tokens [B, T] -> canvas-normalized detections.

        Returns boxes float32 [B, M, 4], classes int32 [B, M], scores float32 [B, M],
        valid bool [B, M], num_detections int32 [B] (M = max_instances). With logits
        [B, T, V], or the decoding loop's `readout` of `step_readout`, the class is the
        argmax over the class range at the class position and the score its probability
        (the paper's rule); without either, the emitted class token with score 1. Only
        declared classes are reported (an undeclared one: invalid).
        Objects after the first EOS, with a non-coordinate token or the fake class are
        invalid and zeroed.
        """
        m = self.config.max_instances
        tokens, readout, unbatched = self._readout(tokens, logits, readout)
        objs = tf.reshape(tokens[:, :5 * m], [-1, m, 5])
        ended = tf.reshape(self._after_eos(tokens)[:, :5 * m], [-1, m, 5])
        valid = ~tf.reduce_any(ended, axis=2)
        valid &= tf.reduce_all(vocab.is_coordinate(objs[..., :4], self.config.num_bins), axis=2)
        if readout is not None:
            classes = tf.reshape(readout["class_id"][:, :5 * m], [-1, m, 5])[..., 4]
            scores = tf.reshape(readout["class_prob"][:, :5 * m], [-1, m, 5])[..., 4]
        else:
            classes = vocab.token_to_class(objs[..., 4])
            declared = tf.gather(tf.constant(self._class_range),
                                 tf.clip_by_value(classes - 1, 0, self.config.max_class_id - 1))
            classes = tf.where(declared & (classes >= 1) & (classes <= self.config.max_class_id), classes, 0)
            scores = tf.ones_like(classes, tf.float32)
        valid &= classes > 0
        boxes = vocab.dequantize(objs[..., :4], self.config.num_bins)
        out = {
            "boxes": tf.where(valid[..., tf.newaxis], boxes, 0.0),
            "classes": tf.where(valid, classes, 0),
            "scores": tf.where(valid, scores, 0.0),
            "valid": valid,
            "num_detections": tf.reduce_sum(tf.cast(valid, tf.int32), axis=1),
        }
        if unbatched:
            out = {k: v[0] for k, v in out.items()}
        return out


def noise_boxes(real_boxes, num, seed, jitter=0.1, random_box_size=1.0):
    """`num` noise boxes [num, 4] in [0, 1] and their kind int32 [num] (0 duplicate,
    1 shifted, 2 random), mixed the way Pix2Seq v2 does.

    Per sequence, the number of duplicates is uniform in {0, ..., num} (0 when there is
    no real box); every other slot is a shifted or a random box with probability 1/2
    each (only random without real boxes); the kinds lie in random slots.
    Duplicates: a random real box with each side moved by a truncated normal of std
    `jitter / 2` times the box height/width (so at most `jitter` times). Shifted: a random
    real box's size at a uniform random centre. Random: a uniform centre with height
    and width |truncated normal| of std `random_box_size / 2`. Boxes are clipped to the
    canvas.
    """
    seeds = tf.random.experimental.stateless_split(vocab.as_seed(seed), 8)
    real_boxes = tf.reshape(tf.cast(real_boxes, tf.float32), [-1, 4])
    n = tf.shape(real_boxes)[0]
    num = tf.convert_to_tensor(num, tf.int32)
    src_idx = tf.random.stateless_uniform([num], seeds[0], 0, tf.maximum(n, 1), tf.int32)
    src = tf.gather(tf.concat([real_boxes, tf.constant([[0.25, 0.25, 0.75, 0.75]])], 0), src_idx)
    hw = src[:, 2:] - src[:, :2]
    offsets = tf.random.stateless_truncated_normal([num, 4], seeds[1], stddev=jitter / 2.0)
    duplicated = src + offsets * tf.tile(hw, [1, 2])
    centre = tf.random.stateless_uniform([num, 2], seeds[2])
    shifted = tf.concat([centre - hw / 2, centre + hw / 2], 1)
    rand_hw = tf.abs(tf.random.stateless_truncated_normal([num, 2], seeds[3], stddev=random_box_size / 2.0))
    rand_centre = tf.random.stateless_uniform([num, 2], seeds[4])
    random = tf.concat([rand_centre - rand_hw / 2, rand_centre + rand_hw / 2], 1)
    num_dup = tf.random.stateless_uniform([], seeds[5], 0, num + 1, tf.int32)
    num_dup = tf.where(n > 0, num_dup, 0)
    rank = tf.argsort(tf.argsort(tf.random.stateless_uniform([num], seeds[6])))
    coin = tf.random.stateless_uniform([num], seeds[7]) < 0.5
    kind = tf.where(rank < num_dup, 0, tf.where(coin & (n > 0), 1, 2))
    boxes = tf.where((kind == 0)[:, tf.newaxis], duplicated,
                     tf.where((kind == 1)[:, tf.newaxis], shifted, random))
    boxes = tf.clip_by_value(boxes, 0.0, 1.0)
    lo = tf.minimum(boxes[:, :2], boxes[:, 2:])
    hi = tf.maximum(boxes[:, :2], boxes[:, 2:])
    return tf.concat([lo, hi], 1), kind



def object_order(boxes, order, seed):
    """Permutation of the objects `boxes` [N, 4] for a training sequence.

    "random" (the paper's default) gives a fresh order each time; "area" (largest
    first) and "dist2ori" (top-left corner nearest the origin first) are fixed, so
    the first object of an image is always the same one, which a short training run
    learns sooner. Ties keep the annotation order (stable sort).
    """
    if order == "random":
        return tf.argsort(tf.random.stateless_uniform(tf.shape(boxes)[:1], seed))
    if order == "area":
        key = -(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    elif order == "dist2ori":
        key = tf.sqrt(tf.square(boxes[:, 0]) + tf.square(boxes[:, 1]))
    else:
        raise ValueError(f"object_order must be one of {vocab.OBJECT_ORDERS}. Received: {order!r}")
    return tf.argsort(key, stable=True)
