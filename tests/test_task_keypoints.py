"""model/tasks/keypoints.py: K pairs on the crop canvas, invisible handling, decoding."""
import numpy as np
import pytest
import tensorflow as tf

from model import vocab
from model.tasks import get_task
from task_test_utils import HALF_BIN, assert_grammar_accepts, assert_same, response_of

CFG = vocab.TokenConfig(caption_vocab_size=64)
TASK = get_task("keypoints", CFG)
K = 17


def example(rng):
    kp = np.concatenate([rng.uniform(0.05, 0.95, (K, 2)), rng.integers(0, 3, (K, 1))], 1).astype(np.float32)
    kp[0, 2], kp[1, 2] = 2, 0
    kp[2] = [1.3, 0.5, 2]  # outside the crop: unlabeled
    return {"box": np.array([0.25, 0.3, 0.75, 0.7], np.float32), "keypoints": kp}


def test_sequence_weights_and_round_trip():
    ex = example(np.random.default_rng(0))
    out = TASK.build_sequences(ex, 0)
    inp, target, w = (out[k].numpy() for k in ("input_tokens", "target_tokens", "token_weights"))
    assert inp.shape == (TASK.max_seq_len,) == (6 + 2 * K,)
    np.testing.assert_array_equal(inp[:6], [12, 1250, 1300, 1749, 1699, 101])
    labeled = (ex["keypoints"][:, 2] > 0) & np.all((ex["keypoints"][:, :2] >= 0) & (ex["keypoints"][:, :2] <= 1), 1)
    assert not labeled[1] and not labeled[2]
    resp = response_of(TASK, out)
    pairs = resp[:2 * K].reshape(K, 2)
    assert np.all(pairs[~labeled] == vocab.INVISIBLE)
    assert np.all((pairs[labeled] >= 1000) & (pairs[labeled] < 2000))
    assert resp[2 * K] == vocab.EOS
    expected_w = np.concatenate([np.zeros(5), np.repeat(np.where(labeled, 1.0, 0.1), 2), [0.0]]).astype(np.float32)
    np.testing.assert_array_equal(w, expected_w)
    assert_grammar_accepts(TASK, resp, inp[5])
    dec = TASK.decode(resp)
    np.testing.assert_array_equal(dec["visible"].numpy(), labeled)
    err = np.abs(dec["keypoints"].numpy()[labeled] - ex["keypoints"][labeled, :2])
    assert err.max() <= HALF_BIN
    assert np.all(dec["keypoints"].numpy()[~labeled] == 0) and np.all(dec["scores"].numpy()[~labeled] == 0)


def test_deterministic_and_eager_equals_function():
    ex = example(np.random.default_rng(1))
    a = TASK.build_sequences(ex, 3)
    assert_same(a, TASK.build_sequences(ex, 3))
    assert_same(a, tf.function(TASK.build_sequences)(ex, 3))
    plain = TASK.build_sequences(ex, 3, augment=False)
    assert_same(plain, TASK.build_sequences(ex, 4, augment=False))


def _masked_fractions(task, ex, seeds):
    """Fraction of response input tokens turned into 41 per sequence (targets checked equal)."""
    plain = task.build_sequences(ex, 0, augment=False)
    ref = plain["input_tokens"].numpy()
    maskable = ref[6:] != vocab.INVISIBLE
    out = []
    for seed in seeds:
        seq = task.build_sequences(ex, seed)
        np.testing.assert_array_equal(seq["target_tokens"], plain["target_tokens"])
        np.testing.assert_array_equal(seq["token_weights"], plain["token_weights"])
        inp = seq["input_tokens"].numpy()
        np.testing.assert_array_equal(inp[:6], ref[:6])  # the prompt is never masked
        assert np.all(inp[inp != ref] == vocab.INVISIBLE)
        out.append(np.mean(inp[6:][maskable] == vocab.INVISIBLE))
    return np.array(out)


def test_input_masking_rate_is_uniform_per_sequence_and_configurable():
    """The paper masks response input tokens with 41 at a rate ~ U(0, 1)."""
    ex = example(np.random.default_rng(2))
    rates = _masked_fractions(TASK, ex, range(150))
    assert 0.4 < rates.mean() < 0.6 and rates.min() < 0.1 and rates.max() > 0.9
    low = get_task("keypoints", vocab.TokenConfig(caption_vocab_size=64, keypoint_mask_max_rate=0.2))
    assert _masked_fractions(low, ex, range(50)).max() < 0.4
    off = get_task("keypoints", vocab.TokenConfig(caption_vocab_size=64, keypoint_mask_max_rate=0.0))
    assert _masked_fractions(off, ex, range(5)).max() == 0


def test_decode_invisible_gets_best_coordinate_and_maps_to_window():
    resp = np.full([2 * K + 1], 1500, np.int32)
    resp[2:4] = vocab.INVISIBLE
    resp[-1] = vocab.EOS
    logits = np.zeros([2 * K + 1, TASK.vocab_size], np.float32)
    logits[np.arange(2 * K), resp[:2 * K]] = 12.0
    logits[2, 1250], logits[3, 1750] = 10.0, 10.0  # the best coordinates behind `41 41`
    logits[2:4, vocab.INVISIBLE] = 14.0
    window = np.array([[0.2, 0.4, 0.6, 0.6]], np.float32)  # crop canvas -> image frame
    dec = TASK.decode(resp[None], logits[None], canvas_window=window)
    kp, vis, scores = (dec[k].numpy()[0] for k in ("keypoints", "visible", "scores"))
    assert vis.tolist() == [True, False] + [True] * (K - 2)
    np.testing.assert_allclose(kp[0], [0.2 + 0.4 * 500 / 999, 0.4 + 0.2 * 500 / 999], atol=1e-6)
    np.testing.assert_allclose(kp[1], [0.2 + 0.4 * 250 / 999, 0.4 + 0.2 * 750 / 999], atol=1e-6)
    assert scores[1] < 0.05 and scores[0] > 0.5


def test_grammar_mask_exact_pairs():
    mask = lambda step, prev: TASK.grammar_mask(tf.constant(step), tf.constant(prev)).numpy()[0]
    m = mask(0, [101])
    assert m[1000:2000].all() and m[vocab.INVISIBLE] and m.sum() == 1001
    assert mask(1, [vocab.INVISIBLE]).nonzero()[0].tolist() == [vocab.INVISIBLE]
    assert mask(1, [1400]).sum() == 1000
    assert mask(2 * K, [1400]).nonzero()[0].tolist() == [0]


def test_wrong_keypoint_count_is_a_clear_error():
    ex = example(np.random.default_rng(2))
    ex["keypoints"] = ex["keypoints"][:5]
    with pytest.raises(tf.errors.InvalidArgumentError, match="keypoints"):
        TASK.build_sequences(ex, 0)


def test_suppressed_invisible_grammar_and_the_paper_person_score():
    """suppress_invisible: `41` may still be emitted (the decoder's own prefix stays as
    trained; it is replaced after decoding) but is never counted in the softmax that scores
    a token; a person scores the mean probability of its 2K coordinate tokens."""
    task = get_task("keypoints", CFG, suppress_invisible=True)
    m = task.grammar_mask(tf.constant(0), tf.constant([101])).numpy()[0]
    assert m[vocab.INVISIBLE] and m.sum() == 1001
    rng = np.random.default_rng(4)
    resp = np.concatenate([rng.integers(1000, 2000, 2 * K), [vocab.EOS]]).astype(np.int32)
    logits = rng.normal(0, 2, [2 * K + 1, task.vocab_size]).astype(np.float32)
    logits[np.arange(2 * K), resp[:2 * K]] += 6.0
    logits[:, vocab.INVISIBLE] = 8.0  # would dominate the softmax if it were counted
    dec = task.decode(resp[None], logits[None])
    scored = logits[:2 * K].astype(np.float64)
    scored[:, vocab.INVISIBLE] = -np.inf
    probs = np.exp(scored - scored.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    token_prob = probs[np.arange(2 * K), resp[:2 * K]]
    np.testing.assert_allclose(dec["instance_scores"].numpy()[0], token_prob.mean(), rtol=1e-5)
    np.testing.assert_allclose(dec["scores"].numpy()[0], token_prob.reshape(K, 2).mean(-1), rtol=1e-5)
    # The decoding loop's per-step readout gives the same decode.
    step = task.step_readout(3, tf.constant(logits[3:4]), tf.constant(resp[3:4]))
    np.testing.assert_allclose(step["coord_prob"].numpy(), token_prob[3:4], rtol=1e-5)
    readout = task.full_readout(tf.constant(resp[None]), tf.constant(logits[None]))
    again = task.decode(resp[None], readout=readout)
    np.testing.assert_allclose(again["instance_scores"].numpy(), dec["instance_scores"].numpy(), rtol=1e-6)
    # Without logits: visible points score 1, the person the fraction of visible points.
    plain = task.decode(np.where(np.arange(2 * K + 1) < 4, vocab.INVISIBLE, resp)[None])
    np.testing.assert_allclose(plain["instance_scores"].numpy(), [(K - 2) / K])
