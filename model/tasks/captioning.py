"""Image captioning as tokens: `13`, SentencePiece pieces + 3000, then EOS 3001.

Example key read by `build_sequences`:
  caption_ids  int [len]  SentencePiece piece ids of ONE caption (no shift, no EOS). Ids
                          <= 1 (pad 0, eos 1) are dropped, so the pipeline may pad with 0
                          or -1. Captions longer than max_caption_len - 1 pieces are cut.
Weights: pieces 1, EOS 0.1, padding 0.

Training recipe (Pix2Seq v2): `build_image_sequences` trains `captions_per_image`
captions of one image per step, one sequence each (the model encodes the image once);
with `augment`, each response input token becomes the fake token 30 with probability
`caption_drop_rate` (targets unchanged), so the model leans on the image rather than
on the words it emitted before.

Decoding turns response tokens into piece ids and, when the task was given the
SentencePiece model's pieces (`vocab_file` or `pieces`), into strings with core TF
ops only (model/caption_tokenizer.py), so it can live in the serving graph.
"""
import tensorflow as tf

from data import augment as augment_ops
from data import preprocess
from model import vocab
from model.tasks import base

EOS_WEIGHT = 0.1


class CaptioningTask(base.Task):
    name = "captioning"
    prompt_length = 1
    # what generic code asks of the task (base.Task)
    paper_weight = 0.099
    decoding_defaults = {"temperature": 1.0, "top_p": 1.0}
    signatures = ("caption", "caption_with_options")
    describe_output = "captions"
    coco_kind, coco_ground_truth, table_metrics = "captions", "captions", ("BLEU-4", "CIDEr-D")
    headline_metric = "CIDEr-D"

    @classmethod
    def sequence_length(cls, token_config) -> int:
        return token_config.caption_seq_len

    dataset_needs = "a captions_*.json file"

    @classmethod
    def feeds(cls, record, keypoint_schema=None) -> bool:
        return bool(record.get("captions"))

    def __init__(self, token_config: vocab.TokenConfig, vocab_file: str = None, pieces=None):
        super().__init__(token_config)
        self.prompt = (vocab.CAPTION_PROMPT,)
        # Text tokens the model may emit: every piece except pad/eos, and EOS itself. A
        # vocabulary without a caption range (caption_vocab_size 0) only pads: captions are empty.
        self._text = self._np_range(vocab.TEXT_OFFSET + vocab.CAPTION_UNK_PIECE, self.vocab_size)
        self._eos = self._np_ids(vocab.CAPTION_EOS if token_config.has_captions else vocab.PAD)
        self._detokenizer = None
        if vocab_file is not None or pieces is not None:
            from model import caption_tokenizer

            if pieces is None:
                pieces = caption_tokenizer.load_pieces(vocab_file)
            self._detokenizer = caption_tokenizer.Detokenizer(pieces)

    @property
    def sequences_per_image(self) -> int:
        return self.config.captions_per_image

    needs = "a caption"

    def usable(self, example):
        return tf.size(example["captions"]) > 0

    def augment(self, example, seed, config=augment_ops.AugmentConfig()):
        """`sequences_per_image` random captions, detection's geometry."""
        size, pairs = self._canvas()
        return augment_ops.augment_captioning(example, seed, size, config, pairs, self.sequences_per_image)

    def prepare_eval(self, example, index=0, style=preprocess.DEFAULT_STYLE):
        """Caption `index` only, the whole image on the canvas."""
        return preprocess.resize_and_pad(preprocess.select_caption(example, index), self.config.image_size, style)

    def codec_inputs(self, example, per_image=False):
        """One caption as flat `caption_ids`; `per_image`: all, [C, len] padded with -1."""
        if per_image:
            return {"caption_ids": example["caption_ids"].to_tensor(default_value=-1)}
        return {"caption_ids": example["caption_ids"].flat_values}

    def build_sequences(self, example, seed=0, augment: bool = True):
        """Example dict (see module docstring) -> input/target tokens and weights [L];
        with `augment`, response input tokens dropped at `caption_drop_rate`."""
        if not self.config.has_captions:
            raise ValueError("captioning needs a caption vocabulary; this TokenConfig has caption_vocab_size=0")
        ids = tf.reshape(tf.cast(example["caption_ids"], tf.int32), [-1])
        with tf.control_dependencies([tf.debugging.assert_less(
                ids, self.config.caption_vocab_size,
                message="captioning example field 'caption_ids' holds an id >= caption_vocab_size")]):
            ids = tf.boolean_mask(ids, ids > vocab.CAPTION_EOS_PIECE)
        ids = ids[:self.config.max_caption_len - 1]
        n = tf.shape(ids)[0]
        response = tf.concat([vocab.text_to_token(ids), [vocab.CAPTION_EOS]], 0)
        weights = tf.concat([tf.ones([n]), [EOS_WEIGHT]], 0)
        response_input = response
        if augment and self.config.caption_drop_rate > 0:
            response_input = self._replace_at_rate(response, self.config.caption_drop_rate, vocab.FAKE_TEXT,
                                                   vocab.as_seed(seed))
        return self._teacher_forcing(self.prompt, response_input, response, weights)

    def build_image_sequences(self, example, seed=0, augment: bool = True):
        """All captions of one image -> tokens and weights [captions_per_image, L].

        `caption_ids` int [C, len]: one row per caption, padded with ids <= 1. Row k
        holds caption k; rows past C have weight 0.
        """
        ids = tf.reshape(tf.cast(example["caption_ids"], tf.int32), [tf.shape(example["caption_ids"])[0], -1])
        seeds = tf.random.experimental.stateless_split(vocab.as_seed(seed), self.sequences_per_image)
        return self._stack_rows(
            lambda k: self.build_sequences({"caption_ids": tf.gather(ids, k)}, seeds[k], augment), tf.shape(ids)[0])

    uses_text_pieces = True
    end_token = vocab.CAPTION_EOS

    def describe_target(self, response, to_pixels, class_ids=()):
        del to_pixels, class_ids
        dec = {k: v.numpy() for k, v in self.decode(response).items()}
        n = int(dec["length"])
        out = {"caption_ids": [int(i) for i in dec["piece_ids"][:n]]}
        if "text" in dec:
            out["text"] = dec["text"].decode()
        return out

    @classmethod
    def image_fields(cls, outputs, row, options) -> dict:
        del options
        text = outputs["captions"][row]
        return {"caption": text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)}

    @classmethod
    def coco_image_entry(cls, result):
        if "caption" not in result:
            return None
        return {"image_id": int(result["image_id"]), "caption": result["caption"]}

    def inference_prompt(self, batch_size):
        return tf.fill([batch_size, 1], tf.constant(vocab.CAPTION_PROMPT, tf.int32))

    def grammar_mask(self, step, prev_tokens):
        """Allowed ids [B, V]: text pieces or EOS 3001; only EOS at the last step; PAD after EOS."""
        step = tf.cast(step, tf.int32)
        text, eos = tf.constant(self._text), tf.constant(self._eos)
        allowed = tf.where(step >= self.max_response_len - 1, eos, text | eos)
        return self._finish_mask(allowed, step, prev_tokens, eos=vocab.CAPTION_EOS)

    def decode(self, tokens, logits=None):
        """Response tokens [B, T] -> piece_ids int32 [B, R] (-1 after EOS / non-text),
        length int32 [B], and `text` string [B] when pieces are known."""
        del logits
        tokens, unbatched = base.batched(tokens, 2)
        tokens, _ = self._fit_response(tokens)
        keep = ~self._after_eos(tokens, vocab.CAPTION_EOS) & (tokens >= vocab.TEXT_OFFSET)
        piece_ids = tf.where(keep, vocab.token_to_text(tokens), -1)
        out = {"piece_ids": piece_ids, "length": tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)}
        if self._detokenizer is not None:
            out["text"] = self._detokenizer(piece_ids)
        if unbatched:
            out = {k: v[0] for k, v in out.items()}
        return out
