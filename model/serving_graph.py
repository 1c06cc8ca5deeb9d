"""In-graph inference behind the serving signatures (model/export.py).

Encoded image bytes in, final results in image pixel coordinates out, with core TF
ops only (no tensorflow-text, no XLA), so TF Serving's C++ loader runs it:

1. `frame(images)`: decode JPEG/PNG, put each image on the padded square canvas
   (`data.preprocess.canvas_image`, the same resize/pad training used), encode the
   batch once and project the cross-attention keys/values once.
2. Task heads decode against that one encoding (`model.decoding`): detection, the
   segmentation ensemble (every instance x N samples as rows of one decode),
   captions. Keypoints decode on a crop twice each person's box (as trained, see
   `data.preprocess.prepare_keypoint_instance`), all crops encoded in one batch.
3. Tokens become results through the task codecs (`model/tasks/*`) and are mapped
   from the canvas back to pixels: `pixel = canvas * S / canvas_scale (+ crop offset)`.

Detection, segmentation and keypoints decode with `vocab_limit = COORD_OFFSET +
num_bins`: their grammars never emit a higher id (classes, separator, invisible and
end tokens all lie below the coordinate bins), so only those logits are computed
(the output projection of a step shrinks ~17x for the 35000-id vocabulary); tokens
are the same, and probabilities are softmaxes over that id range. Captions use the
whole vocabulary.

Scores: a detection scores the probability of its class token; a keypoint the mean
probability of its two coordinate tokens (the invisible token is suppressed at
inference, as in the paper's evaluation, so every keypoint gets a location); a
segmentation mask is the fraction of the N sampled polygons covering each cell of a
`mask_size`^2 grid over the instance's box (threshold 0.5 for the paper's ensemble).
"""
import pix2seq  # noqa: F401  (Keras 3 guard)

import tensorflow as tf

from data import preprocess
from model import decoding, sampling, vocab
from model.tasks import get_task
from model.tasks.segmentation import rasterize_batch

# Sampling defaults of the paper's multi-task configuration.
PAPER_DEFAULTS = {
    "detection": {"temperature": 1.0, "top_p": 0.4},
    "segmentation": {"temperature": 1.0, "top_p": 0.8, "num_samples": 8},
    "keypoints": {"temperature": 1.0, "top_p": 0.1},
    "captioning": {"temperature": 1.0, "top_p": 1.0},
}
MASK_SIZE = 64
_MIN_TEMPERATURE = 1e-3  # temperature 0 asks for greedy; this is greedy up to exact ties


def nucleus_sampler(temperature, top_p):
    """Top-p sampler from per-request scalars (temperature <= 0 -> effectively greedy)."""
    temperature = tf.maximum(tf.cast(temperature, tf.float32), _MIN_TEMPERATURE)
    top_p = tf.clip_by_value(tf.cast(top_p, tf.float32), 1e-6, 1.0)
    return sampling.TopPSampler(p=top_p, temperature=temperature)


def _seed(seed, salt):
    seed = tf.cast(seed, tf.int32)
    return tf.stack([seed, tf.constant(salt, tf.int32)])


class InferenceGraph:
    """Graph functions for the signatures of one model.

    Args:
      model: a built `Pix2SeqModel`.
      caption_vocab_file: SentencePiece model whose pieces turn caption tokens into
        text; without it captions are the piece ids joined by spaces.
      mask_size: side of the box-relative segmentation mask grid.
    """

    def __init__(self, model, caption_vocab_file=None, mask_size=MASK_SIZE):
        self.model = model
        self.config = model.config.tokens
        self.size = model.config.image_size
        self.mask_size = mask_size
        self.detection = get_task("detection", self.config)
        self.segmentation = get_task("segmentation", self.config)
        self.keypoint_task = get_task("keypoints", self.config)
        self.captioning = get_task("captioning", self.config, vocab_file=caption_vocab_file)
        invisible = tf.one_hot(vocab.INVISIBLE, self.config.vocab_size, on_value=False, off_value=True)
        self._visible_only = invisible
        # Ids the detection, segmentation and keypoint grammars can emit are all below this.
        self.coords_end = vocab.COORD_OFFSET + self.config.num_bins

    # --- images ----------------------------------------------------------------------------

    def _decode_image(self, data):
        return tf.io.decode_image(data, channels=3, expand_animations=False)

    def frame(self, images):
        """string [B] -> dict: images (the input), image_size int32 [B,2] (h, w),
        canvas_scale float32 [B,2] (y, x), cross (the decoder's cross cache)."""
        size = self.size

        def one(data):
            image = self._decode_image(data)
            canvas, scale = preprocess.canvas_image(image, size)
            return canvas, tf.shape(image)[:2], tf.cast(scale, tf.float32)

        canvas, hw, scale = tf.map_fn(one, images, fn_output_signature=(
            tf.TensorSpec([size, size, 3], tf.float32), tf.TensorSpec([2], tf.int32),
            tf.TensorSpec([2], tf.float32)))
        cross = decoding.encode_for_decoding(self.model, canvas)
        return {"images": images, "image_size": hw, "canvas_scale": scale, "cross": cross}

    def _to_pixels(self, yx, scale, offset=None):
        """Canvas-normalized (y, x, ...) pairs [R, ..., 2k] -> pixels; scale/offset [R, 2]."""
        reps = yx.shape[-1] // 2
        factor = float(self.size) / tf.tile(scale, [1, reps])
        extra = yx.shape.rank - 2
        factor = tf.reshape(factor, [-1] + [1] * extra + [2 * reps])
        out = yx * factor
        if offset is not None:
            out += tf.reshape(tf.tile(offset, [1, reps]), [-1] + [1] * extra + [2 * reps])
        return out

    def _to_canvas(self, boxes_px, scale):
        """Pixel boxes [R, 4] -> canvas-normalized, clipped to [0, 1]."""
        return tf.clip_by_value(boxes_px * tf.tile(scale, [1, 2]) / float(self.size), 0.0, 1.0)

    @staticmethod
    def _clip_to_image(boxes, hw):
        hw = tf.cast(hw, tf.float32)
        limit = tf.reshape(tf.tile(hw, [1, 2]), [-1, 1, 4])
        return tf.clip_by_value(boxes, 0.0, limit)

    # --- tasks -----------------------------------------------------------------------------

    def detect(self, frame, max_objects, temperature, top_p, seed):
        """-> boxes [B,M,4] (ymin, xmin, ymax, xmax pixels), classes [B,M], scores [B,M],
        num_detections [B]; sorted by score, padding (class 0, score 0) last."""
        task = self.detection
        m = self.config.max_instances
        batch = tf.shape(frame["canvas_scale"])[0]
        out = decoding.decode(
            self.model.decoder, frame["cross"], task.inference_prompt(batch), task.max_response_len,
            sampler=nucleus_sampler(temperature, top_p), seed=_seed(seed, 1),
            constraint=decoding.task_constraint(task), vocab_limit=self.coords_end,
            max_steps=5 * tf.clip_by_value(tf.cast(max_objects, tf.int32), 0, m))
        parsed = task.decode(out["tokens"])
        class_scores = tf.reshape(out["scores"][:, :5 * m], [-1, m, 5])[:, :, 4]
        scores = tf.where(parsed["valid"], class_scores, 0.0)
        order = tf.argsort(scores, axis=1, direction="DESCENDING", stable=True)
        boxes = self._to_pixels(tf.gather(parsed["boxes"], order, batch_dims=1), frame["canvas_scale"])
        # The grammar fixes which tokens are coordinates, not their order: report
        # (min, max) corners so a box is well formed even when the model swapped them.
        boxes = tf.concat([tf.minimum(boxes[..., :2], boxes[..., 2:]), tf.maximum(boxes[..., :2], boxes[..., 2:])], -1)
        return {
            "boxes": self._clip_to_image(boxes, frame["image_size"]),
            "classes": tf.gather(parsed["classes"], order, batch_dims=1),
            "scores": tf.gather(scores, order, batch_dims=1),
            "num_detections": parsed["num_detections"],
        }

    def segment(self, frame, boxes, classes, num_samples, temperature, top_p, seed):
        """Pixel boxes [B,N,4] + classes [B,N] (class <= 0 or an empty box: padding) ->
        masks float32 [B,N,G,G] over each box (fraction of samples covering a cell),
        polygons float32 [B,N,P,2] (y, x pixels, first sample), polygon_parts int32
        [B,N,P] (-1 unused)."""
        task = self.segmentation
        g, p = self.mask_size, self.config.max_polygon_points
        boxes = tf.cast(boxes, tf.float32)
        classes = tf.cast(classes, tf.int32)
        valid = (classes > 0) & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
        index = tf.where(valid)
        image = tf.cast(index[:, 0], tf.int32)
        scale = tf.gather(frame["canvas_scale"], image)
        box = self._to_canvas(tf.gather_nd(boxes, index), scale)
        samples = tf.maximum(tf.cast(num_samples, tf.int32), 1)
        rows = tf.repeat(image, samples)
        prompt = task.inference_prompt(tf.repeat(box, samples, axis=0),
                                       tf.repeat(tf.gather_nd(classes, index), samples))
        out = decoding.decode(
            self.model.decoder, decoding.gather_rows(frame["cross"], rows), prompt,
            task.max_response_len, sampler=nucleus_sampler(temperature, top_p),
            seed=_seed(seed, 2), constraint=decoding.task_constraint(task), vocab_limit=self.coords_end)
        poly = task.decode(out["tokens"])
        row_box = tf.repeat(box, samples, axis=0)
        origin = row_box[:, tf.newaxis, :2]
        extent = tf.maximum(row_box[:, tf.newaxis, 2:] - origin, 1e-6)
        cells = rasterize_batch((poly["points"] - origin) / extent, poly["part"], g, g)
        count = tf.shape(index)[0]
        masks = tf.reduce_mean(tf.reshape(tf.cast(cells, tf.float32), [count, samples, g, g]), axis=1)
        first = tf.range(count) * samples
        points = self._to_pixels(tf.gather(poly["points"], first), scale)
        parts = tf.gather(poly["part"], first)
        shape = tf.shape(classes, out_type=tf.int64)
        return {
            "masks": tf.scatter_nd(index, masks, tf.concat([shape, [g, g]], 0)),
            "polygons": tf.scatter_nd(index, points, tf.concat([shape, [p, 2]], 0)),
            "polygon_parts": tf.scatter_nd(index, parts + 1, tf.concat([shape, [p]], 0)) - 1,
        }

    def _person_crop(self, args):
        data, box, hw = args
        image = self._decode_image(data)
        norm = box / tf.tile(tf.cast(hw, tf.float32), [2])
        example = preprocess.prepare_keypoint_instance({"image": image, "boxes": norm[tf.newaxis]}, 0, self.size)
        person = tf.concat([example["boxes"], tf.zeros([1, 4])], 0)[0]
        return example["image"], person, example["canvas_scale"], example["canvas_offset"]

    def keypoints(self, images, image_size, boxes, temperature, top_p, seed):
        """Person pixel boxes [B,N,4] (empty box: padding) -> keypoints float32 [B,N,K,3]
        as (x, y, score) in pixels, each person decoded on its 2x crop."""
        task = self.keypoint_task
        k, size = self.config.num_keypoints, self.size
        boxes = tf.cast(boxes, tf.float32)
        valid = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
        index = tf.where(valid)
        image = tf.cast(index[:, 0], tf.int32)
        canvas, person, scale, offset = tf.map_fn(
            self._person_crop,
            (tf.gather(images, image), tf.gather_nd(boxes, index), tf.gather(image_size, image)),
            fn_output_signature=(tf.TensorSpec([size, size, 3], tf.float32), tf.TensorSpec([4], tf.float32),
                                 tf.TensorSpec([2], tf.float32), tf.TensorSpec([2], tf.float32)))
        cross = decoding.encode_for_decoding(self.model, canvas)
        grammar = decoding.task_constraint(task)

        def visible_only(step, tokens):
            return grammar(step, tokens) & self._visible_only[tf.newaxis]

        out = decoding.decode(
            self.model.decoder, cross, task.inference_prompt(person), task.max_response_len,
            sampler=nucleus_sampler(temperature, top_p), seed=_seed(seed, 3), constraint=visible_only,
            vocab_limit=self.coords_end)
        yx = task.decode(out["tokens"])["keypoints"]  # [R, K, 2] crop-canvas
        yx = self._to_pixels(yx, scale, offset)
        score = tf.reduce_mean(tf.reshape(out["scores"][:, :2 * k], [-1, k, 2]), axis=-1)
        points = tf.stack([yx[..., 1], yx[..., 0], score], axis=-1)
        shape = tf.shape(boxes, out_type=tf.int64)[:2]
        return {"keypoints": tf.scatter_nd(index, points, tf.concat([shape, [k, 3]], 0))}

    def caption(self, frame, temperature, top_p, seed):
        """-> captions string [B]."""
        task = self.captioning
        batch = tf.shape(frame["canvas_scale"])[0]
        out = decoding.decode(
            self.model.decoder, frame["cross"], task.inference_prompt(batch), task.max_response_len,
            sampler=nucleus_sampler(temperature, top_p), seed=_seed(seed, 4),
            constraint=decoding.task_constraint(task), end_token=vocab.CAPTION_EOS)
        parsed = task.decode(out["tokens"])
        if "text" in parsed:
            return {"captions": parsed["text"]}
        ids = tf.strings.as_string(parsed["piece_ids"])
        ids = tf.where(parsed["piece_ids"] >= 0, ids, "")
        return {"captions": tf.strings.strip(tf.strings.reduce_join(ids, axis=-1, separator=" "))}

    def person_boxes(self, detections):
        """Detected boxes of the person class, other rows zeroed (padding for keypoints)."""
        is_person = tf.equal(detections["classes"], self.config.person_class_id)
        return tf.where(is_person[..., tf.newaxis], detections["boxes"], 0.0)
