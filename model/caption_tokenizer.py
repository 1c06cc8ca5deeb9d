"""Caption vocabulary: train SentencePiece, detokenize with core ops.

Piece ids follow the T5 layout the official checkpoints use: pad 0, eos 1, unk 2
(vocab.CAPTION_*_PIECE); text token = 3000 + piece id. Captions are tokenized once,
at ingestion, with the `sentencepiece` library (components/beam_ingest.py writes the
ids into each tf.Example), so no graph ever tokenizes text and tensorflow-text is not
a dependency (docs/CONTRACTS.md "Caption vocabulary"). Detokenizing uses only core TF
ops (gather from a constant piece table, join, replace the word-boundary marker,
strip) so the serving SavedModel loads in stock TF Serving.
"""
import os

import tensorflow as tf

from model import vocab

WORD_BOUNDARY = "\u2581"  # '▁', SentencePiece's word-boundary marker
UNKNOWN_SURFACE = " \u2047 "  # how SentencePiece renders an unknown piece


def train_sentencepiece(captions, out_prefix: str, vocab_size: int) -> str:
    """Trains a unigram SentencePiece model on `captions`; returns the .model path.

    `vocab_size` is an upper bound: a small corpus gets the pieces it supports
    (soft limit) instead of a training error.
    """
    import sentencepiece as spm

    captions = [str(c).strip() for c in captions if str(c).strip()]
    if not captions:
        raise ValueError("train_sentencepiece needs at least one non-empty caption. Received none.")
    if vocab_size <= vocab.CAPTION_UNK_PIECE + 1:
        raise ValueError(f"vocab_size must be > {vocab.CAPTION_UNK_PIECE + 1}. Received: {vocab_size}")
    out_dir = os.path.dirname(os.path.abspath(out_prefix))
    os.makedirs(out_dir, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(captions),
        model_prefix=out_prefix,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=vocab.CAPTION_PAD_PIECE,
        eos_id=vocab.CAPTION_EOS_PIECE,
        unk_id=vocab.CAPTION_UNK_PIECE,
        bos_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,  # quiet; `logstream=` needs real file descriptors (fails under pytest capsys)
    )
    return out_prefix + ".model"


def _model_bytes(model_path: str) -> bytes:
    with tf.io.gfile.GFile(model_path, "rb") as f:
        return f.read()


def load_pieces(model_path: str) -> list:
    """Surface string of every piece id: control pieces -> '', unknown -> ' ⁇ '."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=_model_bytes(model_path))
    pieces = []
    for i in range(sp.get_piece_size()):
        if sp.is_control(i):
            pieces.append("")
        elif sp.is_unknown(i):
            pieces.append(UNKNOWN_SURFACE)
        else:
            pieces.append(sp.id_to_piece(i))
    return pieces


class Detokenizer:
    """Piece ids -> text with core TF ops only (serving-graph safe).

    Ids < 0 (padding, after-EOS) and control pieces contribute nothing.
    """

    def __init__(self, pieces):
        pieces = list(pieces)
        if not pieces:
            raise ValueError("Detokenizer needs the piece table. Received an empty list.")
        self._size = len(pieces)
        self._table = tf.constant(pieces + [""], tf.string)  # last entry: ids < 0

    @property
    def size(self) -> int:
        return self._size

    def __call__(self, piece_ids):
        """int [..., T] -> string [...]."""
        ids = tf.cast(piece_ids, tf.int32)
        ids = tf.where((ids < 0) | (ids >= self._size), self._size, ids)
        text = tf.strings.reduce_join(tf.gather(self._table, ids), axis=-1)
        text = tf.strings.regex_replace(text, WORD_BOUNDARY, " ")
        return tf.strings.strip(text)
