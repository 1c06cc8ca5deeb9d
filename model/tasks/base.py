"""What every task codec shares: teacher forcing, static padding, grammar masks.

A task's full token sequence is `prompt + response`. Training sees
`input = seq[:-1]`, `target = seq[1:]` and one weight per target token, all of the
static length `max_seq_len`; target positions that only repeat the prompt get
weight 0. At inference the decoder feeds `inference_prompt(...)` and then asks
`grammar_mask(step, prev_tokens)` which ids each response step may emit, and
`step_readout(step, logits, token)` what the task's inference head keeps from each
step's logits (model/decoding.py writes it into `[B, L]` buffers, so the `[B, L, V]`
logits are never kept; `decode(tokens, logits)` applies the same function to a full
pass's logits, so both paths share one rule).
"""
import numpy as np
import tensorflow as tf

from data import augment as augment_ops
from data import preprocess
from model import vocab


class Task:
    """Base of the task codecs; subclasses set `name`, `sequence_length` and the
    methods below (docs/CONTRACTS.md "Adding a task")."""

    name = ""
    prompt_length = 1
    # name -> dtype of the values `step_readout` returns; empty: the task reads nothing.
    readout_dtypes = {}
    # What generic code asks of a task without building it:
    # the paper's sampling settings of its serving signatures (model/serving_graph.py),
    decoding_defaults = {"temperature": 1.0, "top_p": 1.0}
    # the signatures that serve it and the `detect_and_describe` output telling it is
    # there (model/signatures.py; empty: no serving signature),
    signatures = ()
    describe_output = ""
    # whether its plain signature answers from images alone (False: it describes boxes
    # that detection finds first, e.g. `segment`, `keypoints`)
    serves_from_images = True
    # COCO evaluation glue (components/coco_evaluator, components/coco_metrics.py): the
    # kind of COCO result its answers become (model/results.py `KINDS`; "": not scored),
    # the ground-truth dataset it is scored on, the metrics the table shows, in order,
    # and the one the blessing compares against the baseline (components/blessing.py).
    coco_kind = ""
    coco_ground_truth = "instances"
    table_metrics = ()
    headline_metric = "AP"
    # its loss weight in the paper's batch mixing (Pix2Seq v2; model/train_config.py).
    paper_weight = 0.0

    def __init__(self, token_config: vocab.TokenConfig):
        if not isinstance(token_config, vocab.TokenConfig):
            raise TypeError(f"{type(self).__name__} needs a TokenConfig. Received: {token_config!r}")
        self.config = token_config
        self.vocab_size = token_config.vocab_size
        self.max_seq_len = self.sequence_length(token_config)

    @classmethod
    def sequence_length(cls, token_config) -> int:
        """Static length L of this task's training input/target sequences."""
        raise NotImplementedError

    @property
    def max_response_len(self) -> int:
        """Tokens the decoder emits after the prompt (EOS included)."""
        return self.max_seq_len - self.prompt_length + 1

    @property
    def sequences_per_image(self) -> int:
        """Training sequences built from one image per step (`build_image_sequences`);
        1: one sequence per image (`build_sequences`)."""
        return 1

    def build_image_sequences(self, example, seed=0, augment: bool = True):
        """One image's training sequences [sequences_per_image, L]: here the single
        sequence of `build_sequences` with a leading axis."""
        return {k: v[tf.newaxis] for k, v in self.build_sequences(example, seed, augment).items()}

    def step_readout(self, step, logits, token):
        """What inference keeps from raw logits `[..., V]` (before grammar and temperature)
        at response position(s) `step` (scalar, or broadcastable to `token`) for emitted
        `token` `[...]`: dict name -> `[...]` of `readout_dtypes`. Default: nothing."""
        del step, logits, token
        return {}

    def full_readout(self, tokens, logits):
        """`step_readout` over a whole response: tokens [B, T], logits [B, T, V]."""
        positions = tf.range(tf.shape(tokens)[1])[tf.newaxis, :]
        return self.step_readout(positions, tf.cast(logits, tf.float32), tokens)

    # --- the data path: which images, which augmentation, which canvas -----------------
    # model/input_pipelines.py calls these and never names a task; the ops live in data/.

    # What an image needs to make this task's sequence (said when no image in a shard has it).
    needs = "any image"

    def usable(self, example):
        """Whether a parsed example can make this task's sequence: bool scalar."""
        del example
        return tf.constant(True)

    # Eval makes one element per instance (`eval_candidates`), not one per image.
    eval_per_instance = False

    def eval_candidates(self, example):
        """With `eval_per_instance`: indices of the instances an eval pass makes one
        element each of, int32 [K] (`prepare_eval` indices)."""
        raise NotImplementedError

    def augment(self, example, seed, config=augment_ops.AugmentConfig()):
        """Training augmentation of a decoded example (data/augment.py), a pure function
        of `seed`: canvas `config.image_size`, keypoints swapped by its flip pairs."""
        raise NotImplementedError

    def prepare_eval(self, example, index=0, style=preprocess.DEFAULT_STYLE):
        """Deterministic canvas of a decoded example (data/preprocess.py); `index` picks
        an `eval_candidates` entry (or the caption)."""
        raise NotImplementedError

    def codec_inputs(self, example, per_image=False):
        """Task-prepared example -> the fields `build_sequences` reads (with `per_image`:
        what `build_image_sequences` reads)."""
        raise NotImplementedError

    # What the annotations must hold to train it (said when a requested task has no data).
    dataset_needs = "objects"

    @classmethod
    def feeds(cls, record, keypoint_schema=None) -> bool:
        """Whether one per-image record (data/coco.py, before ingestion) has what this
        task trains on; `keypoint_schema`: data/dataset_info.py `keypoint_schema`."""
        del record, keypoint_schema
        return True

    @classmethod
    def supported_by(cls, records, keypoint_schema=None) -> bool:
        """Whether the records can feed this task (dataset_info.json `tasks`): one does."""
        return any(cls.feeds(r, keypoint_schema) for r in records)

    # Its tokens hold caption text pieces: `pix2seq tokens` trains or loads a SentencePiece
    # model and hands `pieces=` to the constructor; `--instance` picks a caption.
    uses_text_pieces = False

    # The token that ends its response (the decoding loop stops a row there).
    end_token = vocab.EOS

    @property
    def vocab_limit(self):
        """Every id its grammar can emit lies below this, so decoding computes only those
        logits; None: the whole vocabulary. Without text pieces: classes, separators and
        end tokens all lie below the coordinate bins."""
        return None if self.uses_text_pieces else vocab.COORD_OFFSET + self.config.num_bins

    def describe_target(self, response, to_pixels, class_ids=()):
        """One response's target tokens [R] decoded for people (`pix2seq tokens`): a JSON
        dict in canvas and image coordinates (`to_pixels` = (scale, offset) per (y, x):
        pixel = canvas * scale + offset), classes as category ids (`class_ids`: the
        class map, data/dataset_info.py)."""
        raise NotImplementedError

    def _canvas(self):
        """(canvas side, keypoint flip pairs) from the token config."""
        return self.config.image_size, tuple(self.config.keypoint_flip_pairs)

    # --- results (model/results.py): numpy signature outputs -> per-image result -> COCO --

    @classmethod
    def object_fields(cls, outputs, row, n, category, height, width, options) -> dict:
        """Fields this task adds to result object n (detection n, category id `category`)
        of image `row` (`height` x `width` px); `options`: model/results.py ResultOptions."""
        del outputs, row, n, category, height, width, options
        return {}

    @classmethod
    def image_fields(cls, outputs, row, options) -> dict:
        """Fields this task adds to the per-image result of image `row`."""
        del outputs, row, options
        return {}

    @classmethod
    def coco_object_entry(cls, obj, head):
        """This task's COCO result entry (kind `coco_kind`) for result object `obj`, `head`
        its image and category ids; None: none."""
        del obj, head
        return None

    @classmethod
    def coco_image_entry(cls, result):
        """This task's per-image COCO result entry (kind `coco_kind`); None: none."""
        del result
        return None

    # --- helpers for subclasses --------------------------------------------------------

    def _np_range(self, start: int, stop: int) -> np.ndarray:
        mask = np.zeros([self.vocab_size], bool)
        mask[start:stop] = True
        return mask

    def _np_ids(self, *ids: int) -> np.ndarray:
        mask = np.zeros([self.vocab_size], bool)
        mask[list(ids)] = True
        return mask

    def _coord_mask(self) -> np.ndarray:
        return self._np_range(vocab.COORD_OFFSET, vocab.COORD_OFFSET + self.config.num_bins)

    def _teacher_forcing(self, prompt, response_input, response_target, response_weights, pad_weight=0.0):
        """Builds the static-length training triple from prompt and response.

        prompt: int32 [p]; response_*: [r] with p + r - 1 <= max_seq_len. The result is
        padded with PAD (weight `pad_weight`) to max_seq_len.
        """
        prompt = tf.cast(prompt, tf.int32)
        seq_in = tf.concat([prompt, tf.cast(response_input, tf.int32)], 0)[:-1]
        seq_target = tf.concat([prompt, tf.cast(response_target, tf.int32)], 0)[1:]
        weights = tf.concat(
            [tf.zeros([self.prompt_length - 1], tf.float32), tf.cast(response_weights, tf.float32)], 0)
        return {
            "input_tokens": _pad_to(seq_in, self.max_seq_len, vocab.PAD),
            "target_tokens": _pad_to(seq_target, self.max_seq_len, vocab.PAD),
            "token_weights": _pad_to(weights, self.max_seq_len, pad_weight),
        }

    def _stack_rows(self, build_row, num_valid):
        """`[sequences_per_image, L]` from `build_row(k)` (a `_teacher_forcing` dict) for
        k < num_valid; the other rows are PAD with weight 0. `build_row` reads row k with
        `tf.gather` (a static slice out of a short input's bounds fails at trace time)."""
        rows = []
        for k in range(self.sequences_per_image):
            valid = k < num_valid
            row = tf.cond(valid, lambda k=k: build_row(k), lambda: self._empty_row())
            rows.append(row)
        return {key: tf.stack([r[key] for r in rows]) for key in rows[0]}

    def _empty_row(self):
        length = self.max_seq_len
        return {"input_tokens": tf.zeros([length], tf.int32), "target_tokens": tf.zeros([length], tf.int32),
                "token_weights": tf.zeros([length], tf.float32)}

    def _replace_at_rate(self, tokens, rate, replacement, seed):
        """`tokens` [T] with each entry replaced by `replacement` with probability `rate`
        (stateless in `seed`): the paper's corruption of response *input* tokens."""
        hit = tf.random.stateless_uniform(tf.shape(tokens), seed) < rate
        return tf.where(hit, tf.cast(replacement, tokens.dtype), tokens)

    def _fit_response(self, tokens, readout=None):
        """Batched response tokens [B, T] (and readout values [B, T]) -> static length R."""
        length = self.max_response_len
        tokens = _pad_to(tf.cast(tokens, tf.int32), length, vocab.PAD, axis=1)
        if readout is not None:
            readout = {k: _pad_to(v, length, tf.zeros([], v.dtype), axis=1) for k, v in readout.items()}
        return tokens, readout

    def _readout(self, tokens, logits, readout):
        """Batched tokens [B, T] plus either logits [B, T, V] or readout values [B, T]
        (from the decoding loop) -> (tokens, readout) at static length R, and whether
        the input was unbatched."""
        tokens, unbatched = batched(tokens, 2)
        if logits is not None:
            logits, _ = batched(logits, 3)
            readout = self.full_readout(tokens, logits)
        elif readout is not None:
            readout = {k: batched(v, 2)[0] for k, v in readout.items()}
        tokens, readout = self._fit_response(tokens, readout)
        return tokens, readout, unbatched

    def _after_eos(self, tokens, eos=vocab.EOS):
        """Boolean [B, R]: True at the first EOS and every position after it."""
        return tf.cumsum(tf.cast(tokens == eos, tf.int32), axis=1) > 0

    def _finish_mask(self, allowed, step, prev_tokens, eos=vocab.EOS):
        """Broadcasts a per-step mask [V] to [B, V]; rows that already ended emit PAD only."""
        prev_tokens = tf.reshape(tf.cast(prev_tokens, tf.int32), [-1])
        done = (prev_tokens == eos) & (tf.cast(step, tf.int32) > 0)
        pad_only = tf.constant(self._np_ids(vocab.PAD))
        return tf.where(done[:, tf.newaxis], pad_only[tf.newaxis, :], allowed[tf.newaxis, :])


def rounded(values, digits=5):
    """JSON-friendly floats (`describe_target`)."""
    return [round(float(v), digits) for v in values]


def canvas_to_pixels(yx, to_pixels):
    """Canvas-normalized (y, x) [..., 2] -> image pixels with `to_pixels` = (scale, offset)."""
    scale, offset = to_pixels
    return np.asarray(yx, np.float64) * scale + offset


def _pad_to(x, length: int, value, axis: int = 0):
    """Truncates or pads `x` along `axis` to exactly `length` (static shape)."""
    x = tf.convert_to_tensor(x)
    begin = [0] * x.shape.rank
    size = [-1] * x.shape.rank
    size[axis] = tf.minimum(tf.shape(x)[axis], length)
    x = tf.slice(x, begin, size)
    paddings = [[0, 0]] * x.shape.rank
    paddings[axis] = [0, length - tf.shape(x)[axis]]
    x = tf.pad(x, paddings, constant_values=value)
    shape = x.shape.as_list()
    shape[axis] = length
    return tf.ensure_shape(x, shape)


def batched(x, rank: int):
    """Adds a leading batch axis when `x` has rank `rank - 1`; returns (x, was_unbatched)."""
    x = tf.convert_to_tensor(x)
    if x.shape.rank == rank - 1:
        return x[tf.newaxis], True
    return x, False
