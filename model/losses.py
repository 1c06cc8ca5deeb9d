"""Token-weighted softmax cross-entropy, the one loss every task trains with.

A task's loss is `sum(w * xent) / sum(w)` over all its tokens in the (global)
batch, so padding (w = 0) and down-weighted tokens (EOS 0.1, noise boxes, ...)
count exactly as the sequence builders say. Under a distribution strategy each
replica contributes its partial numerator over the *global* denominator, so the
summed replica gradients equal the single-device gradient of the global batch.
"""
import keras
import tensorflow as tf
from keras import ops

import pix2seq  # noqa: F401  (Keras 3 guard)


def token_xent(target_tokens, logits):
    """Per-token softmax cross-entropy `[B, L]` (float32) of integer targets under logits `[B, L, V]`."""
    logits = ops.cast(logits, "float32")
    return keras.losses.sparse_categorical_crossentropy(target_tokens, logits, from_logits=True)


def weighted_xent_parts(target_tokens, logits, token_weights):
    """`(sum(w * xent), sum(w))` over a batch; scalars, float32."""
    weights = ops.cast(token_weights, "float32")
    return ops.sum(weights * token_xent(target_tokens, logits)), ops.sum(weights)


def weighted_xent(target_tokens, logits, token_weights):
    """`sum(w * xent) / sum(w)` (0 when every weight is 0)."""
    numerator, denominator = weighted_xent_parts(target_tokens, logits, token_weights)
    return ops.divide_no_nan(numerator, denominator)


def global_sum(x):
    """Sum of a per-replica value over all replicas (identity outside a multi-replica step)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)
