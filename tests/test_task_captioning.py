"""model/tasks/captioning.py: piece sequences, EOS weight, grammar and id decoding."""
import numpy as np
import pytest
import tensorflow as tf

from model import vocab
from model.tasks import get_task
from task_test_utils import assert_grammar_accepts, assert_same, response_of

CFG = vocab.TokenConfig(caption_vocab_size=50, max_caption_len=8)
TASK = get_task("captioning", CFG)


@pytest.mark.parametrize("ids,kept", [
    ([5, 9, 2, 17], [5, 9, 2, 17]),
    ([5, 9, 0, 0, -1], [5, 9]),  # padding dropped
    (list(range(3, 20)), list(range(3, 10))),  # cut to max_caption_len - 1
    ([], []),
])
def test_sequence_and_weights(ids, kept):
    out = TASK.build_sequences({"caption_ids": np.array(ids, np.int32)}, 0, augment=False)
    inp, target, w = (out[k].numpy() for k in ("input_tokens", "target_tokens", "token_weights"))
    n = len(kept)
    assert inp.shape == (8,)
    np.testing.assert_array_equal(target[:n + 1], [3000 + i for i in kept] + [vocab.CAPTION_EOS])
    assert np.all(target[n + 1:] == vocab.PAD)
    np.testing.assert_array_equal(inp[:n + 1], [vocab.CAPTION_PROMPT] + [3000 + i for i in kept])
    np.testing.assert_array_equal(w, np.array([1.0] * n + [0.1] + [0.0] * (7 - n), np.float32))
    assert_grammar_accepts(TASK, response_of(TASK, out)[:n + 2], vocab.CAPTION_PROMPT)
    dec = TASK.decode(response_of(TASK, out))
    assert dec["length"].numpy() == n
    np.testing.assert_array_equal(dec["piece_ids"].numpy()[:n], kept)
    assert np.all(dec["piece_ids"].numpy()[n:] == -1)
    assert "text" not in dec


def test_eager_equals_function_and_errors():
    ex = {"caption_ids": np.array([4, 8, 15], np.int32)}
    assert_same(TASK.build_sequences(ex, 0), tf.function(TASK.build_sequences)(ex, 0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="caption_ids"):
        TASK.build_sequences({"caption_ids": np.array([4, 50], np.int32)}, 0)


def test_input_drop_replaces_response_inputs_only_at_the_configured_rate():
    """The paper's input_seq_drop_rate: response input tokens become 30, targets stay."""
    task = get_task("captioning", vocab.TokenConfig(caption_vocab_size=50, max_caption_len=32))
    ex = {"caption_ids": np.arange(3, 33, dtype=np.int32)}  # 30 pieces: inputs 1..30 are pieces
    plain = task.build_sequences(ex, 0, augment=False)
    dropped = []
    for seed in range(40):
        out = task.build_sequences(ex, seed)
        np.testing.assert_array_equal(out["target_tokens"], plain["target_tokens"])
        np.testing.assert_array_equal(out["token_weights"], plain["token_weights"])
        inp, ref = out["input_tokens"].numpy(), plain["input_tokens"].numpy()
        assert inp[0] == vocab.CAPTION_PROMPT
        changed = inp != ref
        assert np.all(inp[changed] == vocab.FAKE_TEXT)
        dropped.append(changed[1:31].mean())
    assert 0.45 < np.mean(dropped) < 0.55  # caption_drop_rate = 0.5
    off = get_task("captioning", vocab.TokenConfig(caption_vocab_size=50, max_caption_len=32, caption_drop_rate=0.0))
    assert_same(off.build_sequences(ex, 7), plain)


def test_several_captions_per_image_one_row_each():
    ids = np.array([[4, 8, 15, -1], [16, 23, 42, 5], [7, -1, -1, -1]], np.int32)
    out = TASK.build_image_sequences({"caption_ids": ids}, 0, augment=False)
    assert TASK.sequences_per_image == 5 and out["input_tokens"].shape == (5, 8)
    for k in range(3):
        assert_same({key: v[k] for key, v in out.items()},
                    TASK.build_sequences({"caption_ids": ids[k]}, 0, augment=False))
    assert out["token_weights"].numpy()[3:].sum() == 0


def test_grammar_mask():
    mask = lambda step, prev: TASK.grammar_mask(tf.constant(step), tf.constant(prev)).numpy()[0]
    m = mask(0, [vocab.CAPTION_PROMPT])
    assert m[3002:3050].all() and m[vocab.CAPTION_EOS] and m.sum() == 49 and not m[3000]
    assert mask(TASK.max_response_len - 1, [3010]).nonzero()[0].tolist() == [vocab.CAPTION_EOS]
    assert mask(3, [vocab.CAPTION_EOS]).nonzero()[0].tolist() == [vocab.PAD]


def test_decode_with_pieces_gives_text():
    pieces = ["", "", " \u2047 ", "\u2581a", "\u2581cat", "\u2581on", "\u2581the", "\u2581mat", "s"]
    task = get_task("captioning", vocab.TokenConfig(caption_vocab_size=9, max_caption_len=8), pieces=pieces)
    tokens = np.array([[3003, 3004, 3008, 3005, 3006, 3007, 3001, 0],
                       [3004, 3001, 3004, 0, 0, 0, 0, 0]], np.int32)
    text = task.decode(tokens)["text"].numpy().tolist()
    assert text == [b"a cats on the mat", b"cat"]
