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
3. Tokens become results through the task codecs (`model/tasks/*`): each task owns its
   inference head (grammar, what it reads from each step's logits via `step_readout`,
   and `decode`); this module only maps canvas coordinates back to pixels:
   `pixel = canvas * S / canvas_scale (+ crop offset)`.

Detection, segmentation and keypoints decode with their `Task.vocab_limit` = COORD_OFFSET +
num_bins: their grammars never emit a higher id (classes, separator, invisible and
end tokens all lie below the coordinate bins), so only those logits are computed
(the output projection of a step shrinks ~17x for the 35000-id vocabulary); tokens
are the same, and every probability below is a softmax over that id range rather
than the whole vocabulary (the official code's softmax covers every id). Captions use
the whole vocabulary.

The paper's inference rules: nucleus sampling as the official `top_logits`
(`sampling.TopPSampler`); a detection's class is the argmax over the class range at
its class position, whatever was sampled, and its score that probability (both
restricted to the classes the dataset declares, `TokenConfig.reportable_classes`,
so no result names a category the data lacks); keypoints
never emit the invisible token and a person scores the mean probability of its 2K
coordinate tokens; classes in and out are the dataset's category ids (the token
config's class map: class index c <-> `class_category_ids[c - 1]`, identity when
empty); segmentation returns every sampled polygon (S = num_samples per
instance, 8 by default), which the shared results code rasterizes at image resolution
and averages (>= 0.5); a mask's score is its detection's.
"""
import pix2seq  # noqa: F401  (Keras 3 guard)

import tensorflow as tf

from data import preprocess
from model import decoding, sampling
from model import tasks
from model.tasks.captioning import CaptioningTask
from model.tasks.detection import DetectionTask
from model.tasks.keypoints import KeypointTask
from model.tasks.segmentation import SegmentationTask

# {task: sampling defaults of the paper's multi-task configuration}, as each task class
# states them (`Task.decoding_defaults`).
PAPER_DEFAULTS = tasks.decoding_defaults()
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
    """

    def __init__(self, model, caption_vocab_file=None):
        self.model = model
        self.config = model.config.tokens
        self.size = model.config.image_size
        # One head per task class the signatures serve (model/export.py).
        self.detection = DetectionTask(self.config)
        self.segmentation = SegmentationTask(self.config)
        self.keypoint_task = KeypointTask(self.config, suppress_invisible=True)
        self.captioning = CaptioningTask(self.config, vocab_file=caption_vocab_file)

    # --- images ----------------------------------------------------------------------------

    def _decode_image(self, data):
        return tf.io.decode_image(data, channels=3, expand_animations=False)

    def frame(self, images):
        """string [B] -> dict: images (the input), image_size int32 [B,2] (h, w),
        canvas_scale float32 [B,2] (y, x), cross (the decoder's cross cache)."""
        size = self.size

        def one(data):
            image = self._decode_image(data)
            canvas, scale = preprocess.canvas_image(image, size, self.model.config.canvas_style())
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

    # --- class map -------------------------------------------------------------------------

    def category_ids(self, classes):
        """Class indices -> the dataset's category ids (0 stays 0: padding)."""
        ids = self.config.class_category_ids
        if not ids:
            return classes
        table = tf.constant((0,) + ids, tf.int32)
        inside = (classes > 0) & (classes <= len(ids))
        return tf.where(inside, tf.gather(table, tf.clip_by_value(classes, 0, len(ids))), 0)

    def class_indices(self, category_ids):
        """The dataset's category ids -> class indices (an unknown id -> 0: padding)."""
        ids = self.config.class_category_ids
        if not ids:
            return category_ids
        match = tf.equal(category_ids[..., tf.newaxis], tf.constant(ids, tf.int32))
        return tf.where(tf.reduce_any(match, -1), tf.cast(tf.argmax(tf.cast(match, tf.int32), -1), tf.int32) + 1, 0)

    @property
    def keypoint_category_id(self):
        """Category id of the class whose instances carry keypoints."""
        ids = self.config.class_category_ids
        return ids[self.config.person_class_id - 1] if ids else self.config.person_class_id

    def model_info(self):
        """The `model_info` signature's constants: keypoint_category_id int32 [] and
        category_ids int32 [C] (the categories inference may report)."""
        classes = tf.constant(self.config.reportable_classes(), tf.int32)
        return {"keypoint_category_id": tf.constant(self.keypoint_category_id, tf.int32),
                "category_ids": self.category_ids(classes)}

    # --- tasks -----------------------------------------------------------------------------

    def _decode(self, task, cross, prompt, temperature, top_p, seed, salt, **kwargs):
        """One task decode with the task's grammar, readout, `vocab_limit` and `end_token`
        and a per-request nucleus."""
        return decoding.decode(
            self.model.decoder, cross, prompt, task.max_response_len,
            sampler=nucleus_sampler(temperature, top_p), seed=_seed(seed, salt),
            constraint=decoding.task_constraint(task), readout=decoding.task_readout(task),
            vocab_limit=task.vocab_limit, end_token=task.end_token, **kwargs)

    def detect(self, frame, max_objects, temperature, top_p, seed):
        """-> boxes [B,M,4] (ymin, xmin, ymax, xmax pixels), classes [B,M] (argmax class),
        scores [B,M] (its probability), num_detections [B]; sorted by score, padding
        (class 0, score 0) last."""
        task = self.detection
        batch = tf.shape(frame["canvas_scale"])[0]
        out = self._decode(task, frame["cross"], task.inference_prompt(batch), temperature, top_p, seed, 1,
                           max_steps=task.max_steps(max_objects))
        parsed = task.decode(out["tokens"], readout=out["readout"])
        order = tf.argsort(parsed["scores"], axis=1, direction="DESCENDING", stable=True)
        boxes = self._to_pixels(tf.gather(parsed["boxes"], order, batch_dims=1), frame["canvas_scale"])
        # The grammar fixes which tokens are coordinates, not their order: report
        # (min, max) corners so a box is well formed even when the model swapped them.
        boxes = tf.concat([tf.minimum(boxes[..., :2], boxes[..., 2:]), tf.maximum(boxes[..., :2], boxes[..., 2:])], -1)
        return {
            "boxes": self._clip_to_image(boxes, frame["image_size"]),
            "classes": self.category_ids(tf.gather(parsed["classes"], order, batch_dims=1)),
            "scores": tf.gather(parsed["scores"], order, batch_dims=1),
            "num_detections": parsed["num_detections"],
        }

    def segment(self, frame, boxes, classes, num_samples, temperature, top_p, seed):
        """Pixel boxes [B,N,4] + classes [B,N] (class <= 0 or an empty box: padding) ->
        every sampled polygon (classes are category ids): polygons float32 [B,N,S,P,2]
        (y, x image pixels, not
        clipped), polygon_parts int32 [B,N,S,P] (part index, -1 unused); S = num_samples."""
        task = self.segmentation
        p = self.config.max_polygon_points
        boxes = tf.cast(boxes, tf.float32)
        classes = self.class_indices(tf.cast(classes, tf.int32))
        valid = (classes > 0) & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
        index = tf.where(valid)
        image = tf.cast(index[:, 0], tf.int32)
        scale = tf.gather(frame["canvas_scale"], image)
        box = self._to_canvas(tf.gather_nd(boxes, index), scale)
        samples = tf.maximum(tf.cast(num_samples, tf.int32), 1)
        prompt = task.inference_prompt(tf.repeat(box, samples, axis=0),
                                       tf.repeat(tf.gather_nd(classes, index), samples))
        cross = decoding.gather_rows(frame["cross"], tf.repeat(image, samples))
        out = self._decode(task, cross, prompt, temperature, top_p, seed, 2)
        poly = task.decode(out["tokens"])
        points = self._to_pixels(poly["points"], tf.repeat(scale, samples, axis=0))
        count = tf.shape(index)[0]
        points = tf.reshape(points, [count, samples, p, 2])
        parts = tf.reshape(poly["part"], [count, samples, p])
        shape = tf.concat([tf.shape(classes, out_type=tf.int64), [tf.cast(samples, tf.int64)]], 0)
        return {
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
        as (x, y, score) in pixels (score: mean probability of the point's two tokens) and
        keypoint_scores float32 [B,N] (mean probability of the 2K coordinate tokens, the
        paper's person score), each person decoded on its 2x crop."""
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
        out = self._decode(task, cross, task.inference_prompt(person), temperature, top_p, seed, 3)
        window = tf.concat([offset, offset + float(size) / scale], -1)  # the crop canvas in pixels
        parsed = task.decode(out["tokens"], canvas_window=window, readout=out["readout"])
        yx = parsed["keypoints"]
        points = tf.stack([yx[..., 1], yx[..., 0], parsed["scores"]], axis=-1)
        shape = tf.shape(boxes, out_type=tf.int64)[:2]
        return {"keypoints": tf.scatter_nd(index, points, tf.concat([shape, [k, 3]], 0)),
                "keypoint_scores": tf.scatter_nd(index, parsed["instance_scores"], shape)}

    def caption(self, frame, temperature, top_p, seed):
        """-> captions string [B]."""
        task = self.captioning
        batch = tf.shape(frame["canvas_scale"])[0]
        out = self._decode(task, frame["cross"], task.inference_prompt(batch), temperature, top_p, seed, 4)
        parsed = task.decode(out["tokens"])
        if "text" in parsed:
            return {"captions": parsed["text"]}
        ids = tf.strings.as_string(parsed["piece_ids"])
        ids = tf.where(parsed["piece_ids"] >= 0, ids, "")
        return {"captions": tf.strings.strip(tf.strings.reduce_join(ids, axis=-1, separator=" "))}

    def person_boxes(self, detections):
        """Detected boxes of the keypoint class, other rows zeroed (padding for keypoints)."""
        is_person = tf.equal(detections["classes"], self.keypoint_category_id)
        return tf.where(is_person[..., tf.newaxis], detections["boxes"], 0.0)
