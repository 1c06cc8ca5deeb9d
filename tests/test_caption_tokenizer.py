"""model/caption_tokenizer.py: SentencePiece training, core-op detokenizing of ingestion-time ids."""
import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf

from model import caption_tokenizer, vocab
from model.tasks import get_task

WORDS = ("a an the two three red blue green small large dog cat person man woman child bicycle car "
         "bus table street park field sitting standing riding running next to on in near with of "
         "holding looking at playing frisbee umbrella kite pizza, eating grass. beside colourful "
         "naïve café zebra giraffe").split()


def sentences(rng, n):
    out = []
    for _ in range(n):
        words = rng.choice(WORDS, rng.integers(3, 14))
        text = " ".join(words)
        out.append(text[0].upper() + text[1:] + ("." if rng.random() < 0.5 else ""))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    rng = np.random.default_rng(0)
    train = sentences(rng, 400)
    path = caption_tokenizer.train_sentencepiece(train, str(tmp_path_factory.mktemp("spm") / "captions"), 160)
    return path, sentences(rng, 300)


def test_trained_model_uses_the_t5_id_layout(trained):
    path, _ = trained
    sp = spm.SentencePieceProcessor(model_file=path)
    assert sp.pad_id() == vocab.CAPTION_PAD_PIECE and sp.eos_id() == vocab.CAPTION_EOS_PIECE
    assert sp.unk_id() == vocab.CAPTION_UNK_PIECE and sp.bos_id() == -1
    assert 50 < sp.get_piece_size() <= 160
    pieces = caption_tokenizer.load_pieces(path)
    assert len(pieces) == sp.get_piece_size() and pieces[0] == pieces[1] == ""


def test_core_op_detokenize_matches_sentencepiece(trained):
    path, test = trained
    sp = spm.SentencePieceProcessor(model_file=path)
    ids = tf.ragged.constant(sp.encode(test), dtype=tf.int32)  # what ingestion writes per caption
    detok = tf.function(caption_tokenizer.Detokenizer(caption_tokenizer.load_pieces(path)).__call__)
    padded = ids.to_tensor(default_value=-1)
    got = [t.decode() for t in detok(padded).numpy()]
    assert got == [sp.decode(x) for x in sp.encode(test)]
    # The serving graph needs no custom ops: nothing SentencePiece-specific in it.
    graph = detok.get_concrete_function(tf.TensorSpec([None, None], tf.int32)).graph
    assert not [op.type for op in graph.get_operations() if "Sentencepiece" in op.type]


def test_ingested_ids_in_tf_data_and_caption_task_round_trip(trained):
    path, test = trained
    sp = spm.SentencePieceProcessor(model_file=path)
    cfg = vocab.TokenConfig(caption_vocab_size=sp.get_piece_size(), max_caption_len=32)
    task = get_task("captioning", cfg, vocab_file=path)
    ids = tf.ragged.constant(sp.encode(test[:8]), dtype=tf.int32)
    ds = tf.data.Dataset.from_tensor_slices(ids).map(
        lambda t: task.build_sequences({"caption_ids": t}, 0))
    batch = next(iter(ds.batch(8)))
    text = task.decode(batch["target_tokens"])["text"].numpy()
    assert [t.decode() for t in text] == [sp.decode(sp.encode(s)) for s in test[:8]]


def test_unknown_characters_render_like_sentencepiece(trained):
    path, _ = trained
    sp = spm.SentencePieceProcessor(model_file=path)
    detok = caption_tokenizer.Detokenizer(caption_tokenizer.load_pieces(path))
    text = "a dog with a ☂ umbrella"
    assert detok(tf.constant(sp.encode(text))).numpy().decode() == sp.decode(sp.encode(text))


def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match="caption"):
        caption_tokenizer.train_sentencepiece(["", "  "], str(tmp_path / "x"), 100)
    with pytest.raises(ValueError, match="vocab_size"):
        caption_tokenizer.train_sentencepiece(["a cat"], str(tmp_path / "x"), 3)
    with pytest.raises(ValueError, match="piece table"):
        caption_tokenizer.Detokenizer([])
