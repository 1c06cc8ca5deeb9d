"""Keypoint detection as tokens: `12 ymin xmin ymax xmax 101` on a crop around one
person, then `y x` for each of the K keypoints (unlabeled: `41 41`), then 0.

Example keys read by `build_sequences` (ONE person, normalized to the crop canvas —
the data pipeline crops 2x the person box and resizes it onto the canvas):
  box        float [4]     the person box in crop-canvas coordinates
  keypoints  float [K, 3]  (y, x, v) per keypoint in crop-canvas coordinates; v in
                           {0, 1, 2}. v == 0, or a point outside [0, 1], is unlabeled.
Weights: the 5 target positions that repeat the prompt 0; labeled coordinates 1;
unlabeled `41 41` 0.1 each; EOS 0 (K pairs always end the sequence).

Decoding maps crop-canvas coordinates into any frame through `canvas_window`: the
region (ymin, xmin, ymax, xmax) of that frame the crop canvas covers, so canvas (0, 0)
lands on (ymin, xmin) and (1, 1) on (ymax, xmax).

Inference (the paper's evaluation, `suppress_invisible=True`): every keypoint gets a
location — a point decoded as `41` takes the most likely coordinate, scored by the
softmax without the invisible token (the official code resamples invisible tokens from
the suppressed logits *after* decoding). Decoding itself may still emit `41`, so the
tokens fed back to the decoder stay those it was trained on: forcing a coordinate where
the model put `41` feeds it a prefix it never saw, and on a memorized person every later
keypoint then went astray by 10-30 px (tests/test_memorize.py). A person's score is the
mean probability of its 2K coordinate tokens.
"""
import numpy as np
import tensorflow as tf

from data import augment as augment_ops
from data import preprocess
from model import vocab
from model.tasks import base

INVISIBLE_WEIGHT = 0.1
EOS_WEIGHT = 0.0
# COCO keypoint visibility written for every predicted point (OKS ignores it for results).
KEYPOINT_VISIBILITY = 2


class KeypointTask(base.Task):
    name = "keypoints"
    prompt_length = 6
    # what generic code asks of the task (base.Task)
    paper_weight = 0.01
    decoding_defaults = {"temperature": 1.0, "top_p": 0.1}
    signatures = ("keypoints", "keypoints_with_options")
    describe_output = "keypoints"
    serves_from_images = False
    coco_kind, coco_ground_truth, table_metrics = "keypoints", "keypoints", ("AP", "AP50", "AP75")

    readout_dtypes = {"coord": tf.int32, "coord_prob": tf.float32}

    @classmethod
    def sequence_length(cls, token_config) -> int:
        return token_config.keypoint_seq_len

    dataset_needs = "a category with a `keypoints` list and objects carrying keypoints"

    @classmethod
    def feeds(cls, record, keypoint_schema=None) -> bool:
        return bool(keypoint_schema) and any(
            obj.get("keypoints") and int(obj["category_id"]) == keypoint_schema["category_id"]
            for obj in record["objects"])

    def __init__(self, token_config: vocab.TokenConfig, suppress_invisible: bool = False):
        super().__init__(token_config)
        self.suppress_invisible = suppress_invisible
        self._coord = self._coord_mask()
        self._coord_inv = self._coord | self._np_ids(vocab.INVISIBLE)
        self._inv = self._np_ids(vocab.INVISIBLE)
        self._eos = self._np_ids(vocab.EOS)

    def prompt_tokens(self, boxes):
        """Person boxes [..., 4] (crop-canvas coordinates) -> int32 prompts [..., 6]."""
        boxes = tf.clip_by_value(tf.cast(boxes, tf.float32), 0.0, 1.0)
        lead = tf.ones_like(boxes[..., :1], tf.int32)
        return tf.concat([lead * vocab.KEYPOINT_PROMPT, vocab.quantize(boxes, self.config.num_bins),
                          lead * vocab.class_to_token(self.config.person_class_id)], -1)

    needs = "a non-crowd object with a labelled keypoint"

    def usable(self, example):
        return tf.size(preprocess.keypoint_candidates(example)) > 0

    eval_per_instance = True

    def eval_candidates(self, example):
        return preprocess.keypoint_candidates(example)

    def augment(self, example, seed, config=augment_ops.AugmentConfig()):
        """One random person, flipped, cropped `config.person_crop_factor` x its box, jittered."""
        size, pairs = self._canvas()
        return augment_ops.augment_keypoints(example, seed, size, config, pairs)

    def prepare_eval(self, example, index=0, style=preprocess.DEFAULT_STYLE):
        """Person `index` alone on a canvas showing 2x its box."""
        return preprocess.prepare_keypoint_instance(example, index, self.config.image_size, style=style)

    def codec_inputs(self, example, per_image=False):
        del per_image
        return {"box": example["boxes"][0], "class": example["classes"][0], "keypoints": example["keypoints"][0]}

    def build_sequences(self, example, seed=0, augment: bool = True):
        """Example dict (see module docstring) -> input/target tokens and weights [L].

        With `augment`, the paper's input masking: every response *input* token becomes
        the invisible token 41 with probability r ~ U(0, keypoint_mask_max_rate) drawn
        per sequence from `seed` (targets unchanged), so the model learns to place a
        keypoint without trusting the ones it emitted before.
        """
        k = self.config.num_keypoints
        keypoints = tf.cast(example["keypoints"], tf.float32)
        with tf.control_dependencies([tf.debugging.assert_equal(
                tf.shape(keypoints), [k, 3],
                message=f"keypoints example field 'keypoints' must have shape [{k}, 3]")]):
            keypoints = tf.identity(keypoints)
        yx, vis = keypoints[:, :2], keypoints[:, 2]
        labeled = (vis > 0) & tf.reduce_all((yx >= 0.0) & (yx <= 1.0), axis=1)
        pairs = tf.where(labeled[:, tf.newaxis], vocab.quantize(yx, self.config.num_bins), vocab.INVISIBLE)
        pair_w = tf.where(labeled, 1.0, INVISIBLE_WEIGHT)
        response = tf.concat([tf.reshape(pairs, [-1]), [vocab.EOS]], 0)
        weights = tf.concat([tf.repeat(pair_w, 2), [EOS_WEIGHT]], 0)
        prompt = self.prompt_tokens(tf.reshape(example["box"], [4]))
        response_input = response
        if augment and self.config.keypoint_mask_max_rate > 0:
            s_rate, s_mask = tf.unstack(tf.random.experimental.stateless_split(vocab.as_seed(seed), 2))
            rate = tf.random.stateless_uniform([], s_rate, 0.0, self.config.keypoint_mask_max_rate)
            response_input = self._replace_at_rate(response, rate, vocab.INVISIBLE, s_mask)
        return self._teacher_forcing(prompt, response_input, response, weights)

    def describe_target(self, response, to_pixels, class_ids=()):
        del class_ids
        dec = {k: v.numpy() for k, v in self.decode(response).items()}
        points = []
        for yx, vis in zip(dec["keypoints"], dec["visible"]):
            y, x = base.canvas_to_pixels(yx, to_pixels) if vis else (0.0, 0.0)
            points.append({"visible": bool(vis), "canvas": base.rounded(yx) if vis else None,
                           "xy": base.rounded([x, y], 3)})
        return {"keypoints": points}

    @classmethod
    def object_fields(cls, outputs, row, n, category, height, width, options) -> dict:
        """Keypoints of a keypoint category's detection (COCO: person): (x, y, point score)
        each, and the instance's keypoint score (mean token probability)."""
        if category not in {int(c) for c in options.keypoint_category_ids}:
            return {}
        kp = np.asarray(outputs["keypoints"][row, n], np.float64).reshape(-1, 3)
        return {"keypoints": [[float(v) for v in p] for p in kp],
                "keypoint_score": float(outputs["keypoint_scores"][row, n])}

    @classmethod
    def coco_object_entry(cls, obj, head):
        if "keypoints" not in obj:
            return None
        flat = [v for x, y, _ in obj["keypoints"] for v in (x, y, KEYPOINT_VISIBILITY)]
        return {**head, "keypoints": flat, "score": obj["keypoint_score"]}

    def inference_prompt(self, boxes):
        """Person boxes [B, 4] in crop-canvas coordinates -> int32 [B, 6]."""
        return self.prompt_tokens(boxes)

    def grammar_mask(self, step, prev_tokens):
        """Allowed ids [B, V]: exactly K pairs, each two coordinates or `41 41`, then EOS
        (with `suppress_invisible` too: `41` is replaced after decoding, see the module
        docstring)."""
        step = tf.cast(step, tf.int32)
        prev = tf.reshape(tf.cast(prev_tokens, tf.int32), [-1])
        second = tf.where((prev == vocab.INVISIBLE)[:, tf.newaxis],
                          tf.constant(self._inv)[tf.newaxis], tf.constant(self._coord)[tf.newaxis])
        first = tf.broadcast_to(tf.constant(self._coord_inv)[tf.newaxis], tf.shape(second))
        allowed = tf.where(step % 2 == 0, first, second)
        eos = tf.broadcast_to(tf.constant(self._eos)[tf.newaxis], tf.shape(second))
        return tf.where(step >= 2 * self.config.num_keypoints, eos, allowed)

    def step_readout(self, step, logits, token):
        """`coord`: the emitted token when it is a coordinate, else the most likely
        coordinate; `coord_prob`: its probability under the softmax of the raw logits
        (the invisible token left out with `suppress_invisible`: the paper scores the
        coordinate that replaces an invisible token as if `41` had been suppressed)."""
        del step
        lo, bins = vocab.COORD_OFFSET, self.config.num_bins
        best = tf.argmax(logits[..., lo:lo + bins], axis=-1, output_type=tf.int32) + lo
        coord = tf.where(vocab.is_coordinate(token, bins), tf.cast(token, tf.int32), best)
        scored = logits
        if self.suppress_invisible:
            invisible = tf.equal(tf.range(tf.shape(logits)[-1]), vocab.INVISIBLE)
            scored = tf.where(invisible, tf.constant(-1e9, logits.dtype), logits)
        chosen = tf.gather(logits, coord[..., tf.newaxis], batch_dims=coord.shape.rank)[..., 0]
        return {"coord": coord, "coord_prob": tf.exp(chosen - tf.reduce_logsumexp(scored, axis=-1))}

    def decode(self, tokens, logits=None, canvas_window=None, readout=None):
        """Response tokens [B, T] -> keypoints.

        Returns keypoints float32 [B, K, 2] (y, x) in the frame of `canvas_window`
        ([B, 4], default the crop canvas itself), visible bool [B, K], scores [B, K]
        and instance_scores [B]. With logits [B, T, V] or the decoding loop's `readout`
        of `step_readout`: a point scores the mean probability of its two tokens and a
        person the mean over all 2K (the paper's score); a point decoded as invisible
        gets the model's best coordinate pair and those tokens' probabilities. Without
        either: visible points score 1, invisible ones are (0, 0) with score 0, and the
        person scores the fraction of visible points.
        """
        k = self.config.num_keypoints
        tokens, readout, unbatched = self._readout(tokens, logits, readout)
        pairs = tf.reshape(tokens[:, :2 * k], [-1, k, 2])
        visible = tf.reduce_all(vocab.is_coordinate(pairs, self.config.num_bins), axis=2)
        if readout is not None:
            chosen = tf.reshape(readout["coord"][:, :2 * k], [-1, k, 2])
            token_prob = tf.reshape(readout["coord_prob"][:, :2 * k], [-1, k, 2])
            scores = tf.reduce_mean(token_prob, axis=-1)
        else:
            chosen = pairs
            scores = tf.cast(visible, tf.float32)
        yx = vocab.dequantize(chosen, self.config.num_bins)
        if canvas_window is not None:
            window, _ = base.batched(tf.cast(canvas_window, tf.float32), 2)
            origin = window[:, tf.newaxis, :2]
            yx = origin + yx * (window[:, tf.newaxis, 2:] - origin)
        if readout is None:
            yx = tf.where(visible[..., tf.newaxis], yx, 0.0)
        out = {"keypoints": yx, "visible": visible, "scores": scores,
               "instance_scores": tf.reduce_mean(scores, axis=-1)}
        if unbatched:
            out = {k_: v[0] for k_, v in out.items()}
        return out
