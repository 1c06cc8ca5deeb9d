"""Samplers: each picks only allowed tokens, follows its distribution, and is
reproducible from its seed (eagerly and inside tf.function)."""
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


def test_top_p_keeps_the_nucleus():
    # probs ~ [0.66, 0.24, 0.09, 0.01]: p=0.5 keeps only the first, p=0.8 the first two.
    logits = tf.constant([[3.0, 2.0, 1.0, -1.0]], tf.float32)
    tiny = _draw(sampling.TopPSampler(p=0.5), logits, 100)
    assert set(tiny[:, 0]) == {0}
    wider = _draw(sampling.TopPSampler(p=0.8), logits, 300)
    assert set(wider[:, 0]) == {0, 1}
    full = _draw(sampling.TopPSampler(p=1.0), logits, 600)
    assert {0, 1, 2} <= set(full[:, 0])


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
    assert isinstance(sampling.get_sampler("top_p", p=0.3), sampling.TopPSampler)
