"""Helpers shared by the task codec tests (tests/test_task_*.py)."""
import numpy as np
import tensorflow as tf


def response_of(task, out):
    """The response tokens (after the prompt) of a built sequence, as numpy."""
    return out["target_tokens"].numpy()[task.prompt_length - 1:]


def assert_grammar_accepts(task, response, first_prev):
    """Every token of `response` is allowed by the task's grammar mask at its step."""
    prev = int(first_prev)
    for step, token in enumerate(np.asarray(response).tolist()):
        mask = task.grammar_mask(tf.constant(step), tf.constant([prev])).numpy()
        assert mask.shape == (1, task.vocab_size)
        assert mask[0, token], f"step {step}: token {token} rejected after {prev}"
        prev = token


def assert_same(a, b):
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


HALF_BIN = 0.5 / 999 + 1e-6
