"""The reference implementation's decoding loop, rebuilt on our decoder's weights.

The official Pix2Seq loop caches only each layer's *inputs*; at every step it
re-projects the self-attention keys/values of the whole (max-length) input cache and
the cross-attention keys/values of all image tokens, and it always runs to the
maximum length. It is kept here for two reasons only: the equivalence tests
(`tests/test_decoding.py`: our cached loop must emit exactly its tokens) and the
speed comparison (`bench/decode.py`). Serving never uses it.

It samples through `model.decoding.sample_step`, so with the same sampler, seed and
constraint both loops draw the same random numbers at every step.
"""
import pix2seq  # noqa: F401  (Keras 3 guard)

import tensorflow as tf

from model import decoding, sampling


def _block_step(block, x, inputs, memory, index):
    """One decoder block on `n` new tokens at `index`, recomputing every K/V.

    `inputs` `[B, max_len, D]` holds this block's past inputs; the new ones are
    written at `index` first.
    """
    n = x.shape[1]
    max_len = inputs.shape[1]
    slots = tf.range(max_len)
    offset = slots - index
    written = (offset >= 0) & (offset < n)
    spread = tf.gather(x, tf.clip_by_value(offset, 0, n - 1), axis=1)
    inputs = tf.where(written[None, :, None], tf.cast(spread, inputs.dtype), inputs)

    k, v = block.self_attention.project_key_value(block.self_norm(inputs))
    q = block.self_attention.project_query(block.self_norm(x))
    mask = slots[None, :] <= (index + tf.range(n))[:, None]
    x = x + block.self_attention.attend(q, k, v, mask=mask[None, None])
    k, v = block.cross_attention.project_key_value(memory)
    q = block.cross_attention.project_query(block.cross_norm(x))
    x = x + block.cross_attention.attend(q, k, v)
    return block.mlp_block(x), inputs


def _decoder_step(decoder, tokens, input_cache, memory, index):
    """All blocks on `n` tokens at `index` -> (logits [B, n, V], per-layer input caches [B, L, D])."""
    n = tokens.shape[1]
    positions = tf.gather(decoder.position_embedding, index + tf.range(n), axis=0)
    x = decoder.embed(tokens, positions)
    new_cache = []
    for i, block in enumerate(decoder.blocks):
        x, layer_inputs = _block_step(block, x, input_cache[i], memory, index)
        new_cache.append(layer_inputs)
    return decoder.logits(x), new_cache


def reference_decode(decoder, memory, prompt, max_new_tokens, sampler=None, seed=(0, 0),
                     constraint=None, end_token=0, pad_token=0, max_steps=None, vocab_limit=None):
    """Reference-style decoding: always `max_new_tokens` steps, K/V recomputed each step.

    `memory` is the encoder output `[B, T, D]` (not a K/V cache: this loop re-projects
    it every step). Returns the same dict as `model.decoding.decode`, with tokens
    after each row's end token replaced by padding after the loop. `max_steps` (a
    scalar) stops early for benchmarks: every step of this loop costs the same (its
    buffers have the full length), so timing a few steps measures its rate.
    `vocab_limit` keeps the logits of ids below it only, as `decode`'s option does
    (same tokens and scores; this loop still computes every logit).
    """
    sampler = sampler or sampling.GreedySampler()
    prompt = tf.convert_to_tensor(prompt, tf.int32)
    seed = tf.convert_to_tensor(seed, tf.int32)
    memory = tf.cast(memory, decoder.compute_dtype)
    batch = tf.shape(prompt)[0]
    prompt_len = prompt.shape[1]
    total = prompt_len + max_new_tokens - 1
    input_cache = [tf.zeros([batch, total, decoder.dim], decoder.compute_dtype) for _ in range(decoder.depth)]
    if prompt_len > 1:
        _, input_cache = _decoder_step(decoder, prompt[:, :-1], input_cache, memory, 0)
    tokens = tf.fill([batch, max_new_tokens], tf.constant(pad_token, tf.int32))
    scores = tf.zeros([batch, max_new_tokens], tf.float32)

    def body(step, last, input_cache, tokens, scores):
        logits, input_cache = _decoder_step(
            decoder, last[:, tf.newaxis], input_cache, memory, prompt_len - 1 + step)
        next_logits = tf.cast(logits[:, -1, :vocab_limit], tf.float32)
        token = decoding.sample_step(next_logits, step, tokens, sampler, seed, constraint)
        scores = decoding.write_column(scores, step, decoding.token_probs(next_logits, token))
        tokens = decoding.write_column(tokens, step, token)
        return step + 1, token, input_cache, tokens, scores

    limit = max_new_tokens if max_steps is None else tf.minimum(tf.cast(max_steps, tf.int32), max_new_tokens)
    _, _, _, tokens, scores = tf.while_loop(
        lambda step, *_: step < limit, body,
        (tf.constant(0, tf.int32), prompt[:, -1], input_cache, tokens, scores),
    )
    truncated = decoding.truncate_after_end(tokens, end_token, pad_token)
    is_end = tf.cast(tf.equal(tokens, end_token), tf.int32)
    ended_before = tf.math.cumsum(is_end, axis=1, exclusive=True) > 0
    scores = tf.where(ended_before, 0.0, scores)
    lengths = tf.reduce_sum(tf.cast(tf.logical_not(ended_before), tf.int32), axis=1)
    return {"tokens": truncated, "scores": scores, "lengths": lengths,
            "steps": tf.constant(max_new_tokens, tf.int32)}
