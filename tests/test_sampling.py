"""Samplers: each picks only allowed tokens, follows its distribution, and is
reproducible from its seed (eagerly and inside tf.function). Nucleus sampling keeps
exactly the set of the official rule, written out in numpy here, on hand-built
distributions (ties, nothing under p) and random logits."""
import numpy as np
import pytest
import tensorflow as tf

from model import sampling

LOGITS = tf.constant(
    [[2.0, 1.0, 0.5, -1.0, 3.0, 0.0],
     [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]], tf.float32)


def _draw(sampler, logits, n, base=7):
    return np.stack([sampler(logits, sampling.step_seed([base, 3], i)).numpy() for i in range(n)])


def test_greedy_is_argmax_and_ignores_temperature():
    for t in (0.1, 1.0, 10.0):
        got = sampling.GreedySampler(temperature=t)(LOGITS, [0, 0]).numpy()
        np.testing.assert_array_equal(got, [4, 5])


def test_random_sampler_follows_softmax():
    logits = tf.constant([[0.0, np.log(3.0), -1e9]], tf.float32)  # p = 1/4, 3/4, 0
    draws = _draw(sampling.RandomSampler(), tf.tile(logits, [400, 1]), 1)[0]
    frac = np.mean(draws == 1)
    assert 0.68 < frac < 0.82
    assert not np.any(draws == 2)


def test_temperature_sharpens_and_flattens():
    logits = tf.tile(tf.constant([[0.0, 1.0]], tf.float32), [2000, 1])
    cold = sampling.RandomSampler(temperature=0.1)(logits, [1, 2]).numpy()
    hot = sampling.RandomSampler(temperature=100.0)(logits, [1, 2]).numpy()
    assert np.mean(cold == 1) > 0.99
    assert 0.45 < np.mean(hot == 1) < 0.56


def test_top_k_only_emits_the_k_best():
    draws = _draw(sampling.TopKSampler(k=2), LOGITS, 200)
    assert set(draws[:, 0]) == {0, 4}
    assert set(draws[:, 1]) == {4, 5}


def paper_nucleus(logits, p):
    """The official `top_logits` rule written out in numpy: bool [B, V] of kept tokens."""
    keep = []
    for row in np.asarray(logits, np.float64):
        ordered = np.sort(row)[::-1]
        probs = np.exp(ordered - ordered.max())
        mass = np.cumsum(probs / probs.sum())
        inside = ordered[mass <= p]
        threshold = min(inside.min(), ordered[0]) if inside.size else ordered[0]
        keep.append(row >= threshold if p < 1 else np.ones_like(row, bool))
    return np.array(keep)


def _kept(sampler, logits):
    return sampler.nucleus(tf.constant(logits, tf.float32)).numpy() > sampling.MASKED_LOGIT / 2


# Hand-built distributions: probabilities (renormalized) and the p under test.
NUCLEUS_CASES = {
    # 0.5 | 0.8 | 0.95 | 1.0: the third token straddles p=0.9 -> paper keeps 2, reach_p 3
    "straddle": ([0.5, 0.3, 0.15, 0.05], 0.9, [1, 1, 0, 0], [1, 1, 1, 0]),
    # the top token alone exceeds p: nothing is under p -> the top token only (both rules)
    "nothing_under_p": ([0.7, 0.2, 0.1], 0.4, [1, 0, 0], [1, 0, 0]),
    # all tokens tied: the threshold is their common logit, so all are kept
    "uniform": ([0.25, 0.25, 0.25, 0.25], 0.6, [1, 1, 1, 1], [1, 1, 1, 1]),
    # a tie at the threshold: 0.4 | 0.6 | 0.8 -> the third token is inside, so its twin
    # (the fourth, same logit) is kept as well although the prefix mass then exceeds p
    "tie": ([0.4, 0.2, 0.2, 0.2], 0.7, [1, 1, 1, 1], [1, 1, 1, 1]),
    # a tie where neither twin is inside: 0.5 | 0.7 | 0.9 with p = 0.6
    "tie_outside": ([0.5, 0.2, 0.2, 0.1], 0.6, [1, 0, 0, 0], [1, 1, 1, 0]),
    "all": ([0.5, 0.3, 0.2], 1.0, [1, 1, 1], [1, 1, 1]),
}


@pytest.mark.parametrize("case", sorted(NUCLEUS_CASES))
def test_top_p_nucleus_follows_the_official_rule(case):
    probs, p, paper, reach = NUCLEUS_CASES[case]
    logits = np.log(np.array([probs], np.float32))
    order = np.random.RandomState(0).permutation(len(probs))  # not pre-sorted
    logits, paper, reach = logits[:, order], np.array(paper, bool)[order], np.array(reach, bool)[order]
    np.testing.assert_array_equal(paper_nucleus(logits, p)[0], paper)
    np.testing.assert_array_equal(_kept(sampling.TopPSampler(p=p), logits)[0], paper)
    np.testing.assert_array_equal(_kept(sampling.TopPSampler(p=p, rule="reach_p"), logits)[0], reach)


def test_top_p_nucleus_matches_numpy_on_random_logits_with_temperature():
    logits = tf.random.stateless_normal([64, 200], [3, 1]) * 3.0
    logits = tf.concat([logits, tf.round(logits[:, :50])], 1)  # many exact ties
    for p in (0.1, 0.4, 0.8, 0.95):
        for temperature in (0.5, 1.0, 2.0):
            sampler = sampling.TopPSampler(p=p, temperature=temperature)
            scaled = logits / temperature
            np.testing.assert_array_equal(_kept(sampler, scaled), paper_nucleus(scaled.numpy(), p), err_msg=f"p={p}")
    # the rules really differ at the paper's p on random logits
    reach = _kept(sampling.TopPSampler(p=0.4, rule="reach_p"), logits)
    assert np.mean(reach.sum(1) != paper_nucleus(logits.numpy(), 0.4).sum(1)) > 0.2


@pytest.mark.slow
def test_top_p_samples_only_inside_the_nucleus():
    # probs ~ [0.66, 0.24, 0.09, 0.01]: p=0.5 keeps only the first, p=0.95 the first two
    # (0.66 + 0.24 = 0.90 <= 0.95 < 0.99), p=1.0 all.
    logits = tf.constant([[3.0, 2.0, 1.0, -1.0]], tf.float32)
    tiny = _draw(sampling.TopPSampler(p=0.5), logits, 100)
    assert set(tiny[:, 0]) == {0}
    wider = _draw(sampling.TopPSampler(p=0.95), logits, 300)
    assert set(wider[:, 0]) == {0, 1}
    full = _draw(sampling.TopPSampler(p=1.0), logits, 600)
    assert {0, 1, 2} <= set(full[:, 0])
    # reach_p: the smallest prefix reaching 0.8 is the first two tokens
    reach = _draw(sampling.TopPSampler(p=0.8, rule="reach_p"), logits, 300)
    assert set(reach[:, 0]) == {0, 1}


def test_masked_tokens_are_never_sampled():
    allowed = tf.constant([[False, True, True, False, False, True]] * 2)
    masked = sampling.mask_logits(LOGITS, allowed)
    for sampler in (sampling.GreedySampler(), sampling.RandomSampler(temperature=5.0),
                    sampling.TopKSampler(k=4), sampling.TopPSampler(p=1.0, temperature=5.0)):
        draws = _draw(sampler, masked, 50)
        assert set(np.unique(draws)) <= {1, 2, 5}, type(sampler).__name__


def test_same_seed_same_tokens_different_seed_different_tokens():
    logits = tf.zeros([64, 50])
    sampler = sampling.TopPSampler(p=0.9)
    a = sampler(logits, [5, 6]).numpy()
    b = sampler(logits, [5, 6]).numpy()
    c = sampler(logits, [5, 7]).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)


def test_tensor_options_inside_tf_function_match_eager():
    logits = tf.random.stateless_normal([8, 30], [1, 1])

    @tf.function(input_signature=[tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32)])
    def graph_sample(temperature, p):
        return sampling.TopPSampler(p=p, temperature=temperature)(logits, [9, 9])

    eager = sampling.TopPSampler(p=0.7, temperature=0.8)(logits, [9, 9]).numpy()
    np.testing.assert_array_equal(graph_sample(0.8, 0.7).numpy(), eager)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="p=1.5"):
        sampling.TopPSampler(p=1.5)
    with pytest.raises(ValueError, match="k=0"):
        sampling.TopKSampler(k=0)
    with pytest.raises(ValueError, match="Unknown sampler"):
        sampling.get_sampler("beam")
    with pytest.raises(ValueError, match="rule='nearest'"):
        sampling.TopPSampler(p=0.5, rule="nearest")
    assert isinstance(sampling.get_sampler("top_p", p=0.3), sampling.TopPSampler)
