"""Fast autoregressive decoding: a true key/value cache inside `tf.while_loop`.

What makes it fast (DESIGN.md §6), against the reference loop in
`tests/reference_decoding.py` (test and benchmark oracle):

* the image is encoded once and its cross-attention keys/values are projected once
  (`decoder.compute_cross_cache`); `gather_rows` repeats them for many prompts per
  image (every instance to segment, the 8 samples of the segmentation ensemble)
  without encoding again;
* the decoder's weights are fused and its caches laid out once per decode
  (`decoder.prepare_decoding`, see `model/cached_decoder.py`): each step writes only the new
  token's keys/values into the self cache (in place) and reads the caches as stored;
* the prompt goes through the decoder in one call (all but its last token, which
  the first step feeds); afterwards each step feeds one token;
* each row stops at its end token (later positions are padding) and the loop ends
  as soon as every row has ended, or at the length limit;
* a task's grammar masks the logits each step, so every output parses; with
  `vocab_limit` (detection, segmentation, keypoints: nothing above the coordinate
  bins) only the logits of ids below it are computed, sampled and scored.

All shapes are static except the loop trip count, so the same code runs eagerly,
under `tf.function` (the exported SavedModel; no `jit_compile` there) and under
XLA (`tf.function(..., jit_compile=True)`) for in-process use: greedy tokens are
identical there; sampled ones differ because XLA picks another stateless RNG stream.

A *constraint* is a callable `constraint(step, tokens) -> bool [B, V] or [V]`: the
tokens allowed at generated position `step` (scalar int32, 0-based after the
prompt) given the tokens generated so far (`tokens` int32 `[B, max_new_tokens]`,
positions >= step hold padding). Task classes in `model/tasks/` provide them. With
`vocab_limit`, a mask wider than the logits is cut to their width.

A *readout* keeps what a task's inference head needs from each step's logits without
keeping the logits (`[B, L, V]` would be 100 instances x 8 samples x 262 steps x V
for segmentation): `Readout(fn, dtypes)` with `fn(step, logits, token) -> {name:
[B]}` computed from the raw float32 logits `[B, V]` of the step (before grammar and
temperature) and the emitted token `[B]`; the loop writes each value into a static
`[B, max_new_tokens]` buffer of dtype `dtypes[name]`. `task_readout(task)` adapts a
task codec's `step_readout` (e.g. detection: the argmax class and its probability at
class positions).
"""
import typing

import pix2seq  # noqa: F401  (Keras 3 guard)

import tensorflow as tf

from model import sampling


def encode_for_decoding(model, images):
    """Images float32 `[B, S, S, 3]` in [0, 1] -> the decoder's cross-attention cache."""
    memory = model.encode(images, training=False)
    return model.decoder.compute_cross_cache(memory)


def gather_rows(cache, rows):
    """Pick (and repeat) batch rows of every tensor in a cache nest.

    Encode once, decode many: `rows` int32 `[N]` lists, for each prompt, the image
    whose cross cache it decodes against (e.g. `tf.repeat(tf.range(B), k)`).
    """
    rows = tf.convert_to_tensor(rows, tf.int32)
    return tf.nest.map_structure(lambda t: tf.gather(t, rows, axis=0), cache)


def truncate_after_end(tokens, end_token, pad_token=0):
    """Replace everything after each row's first `end_token` by `pad_token`.

    Turns the output of a loop that ran to its maximum length into what a loop that
    stops each row at its end token emits.
    """
    tokens = tf.convert_to_tensor(tokens, tf.int32)
    is_end = tf.cast(tf.equal(tokens, end_token), tf.int32)
    ended_before = tf.math.cumsum(is_end, axis=1, exclusive=True) > 0
    return tf.where(ended_before, tf.constant(pad_token, tf.int32), tokens)


def token_probs(logits, tokens):
    """Probability of each emitted token under the raw softmax of `logits` (the score)."""
    probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
    return tf.gather(probs, tokens, batch_dims=1)


class Readout(typing.NamedTuple):
    """Per-step values a task reads from the logits: `fn(step, logits, token) -> {name: [B]}`."""
    fn: typing.Callable
    dtypes: dict


def task_readout(task):
    """A task codec's `step_readout` as a loop readout (None when the task reads nothing)."""
    return Readout(task.step_readout, dict(task.readout_dtypes)) if task.readout_dtypes else None


def _allowed(constraint, step, tokens, logits):
    if constraint is None:
        return logits
    allowed = constraint(step, tokens)
    width = logits.shape[-1]
    if width is not None and allowed.shape[-1] is not None and allowed.shape[-1] > width:
        allowed = allowed[..., :width]  # a vocab_limit-ed decode: ids above the limit are not scored
    return sampling.mask_logits(logits, allowed)


def sample_step(logits, step, tokens, sampler, seed, constraint):
    """One token per row from next-token logits `[B, V]`; shared with the reference loop."""
    masked = _allowed(constraint, step, tokens, logits)
    return sampler(masked, sampling.step_seed(seed, step))


def write_column(buffer, step, values):
    """`buffer[:, step] = values` for a static-shape `[B, L]` buffer."""
    length = tf.shape(buffer)[1]
    at_step = tf.equal(tf.range(length), step)[tf.newaxis, :]
    return tf.where(at_step, tf.cast(values, buffer.dtype)[:, tf.newaxis], buffer)


def decode(decoder, cross_cache, prompt, max_new_tokens, sampler=None, seed=(0, 0),
           constraint=None, end_token=0, pad_token=0, stop_at_end=True, max_steps=None,
           vocab_limit=None, readout=None):
    """Generate up to `max_new_tokens` tokens after `prompt` with the K/V cache.

    Args:
      decoder: the model's decoder (cache API of docs/CONTRACTS.md "Model").
      cross_cache: from `encode_for_decoding` (optionally `gather_rows`-ed), batch B.
      prompt: int32 `[B, P]` prompt tokens (task prompt and any box/class tokens).
      max_new_tokens: Python int, static size of the output.
      sampler: a `model.sampling.Sampler` (greedy when None).
      seed: int32 `[2]` for reproducible sampling.
      constraint: grammar callable (module docstring) or None.
      end_token: a row has ended once it emitted this token.
      pad_token: emitted by ended rows.
      stop_at_end: False runs every row to the limit (for equivalence tests).
      max_steps: optional scalar int32 <= max_new_tokens, a per-request length limit.
      vocab_limit: Python int or None. Logits are computed for ids `< vocab_limit`
        only: for grammars that never allow a higher id (detection, segmentation and
        keypoints end at `vocab.COORD_OFFSET + num_bins`) the tokens are those of the
        full vocabulary, while the scores become probabilities over those ids.
      readout: a `Readout` (module docstring) or None; with `vocab_limit` it sees
        the logits of ids below the limit only.

    Returns:
      dict with `tokens` int32 `[B, max_new_tokens]` (padding after the end),
      `scores` float32 `[B, max_new_tokens]` (raw-softmax probability of each
      emitted token among the ids below `vocab_limit`, 0 for padding), `lengths`
      int32 `[B]` (tokens before padding, the end token included), `steps`
      (int32, loop iterations run) and `readout` (dict name -> `[B, max_new_tokens]`,
      zeros at padding; empty without a readout).
    """
    sampler = sampler or sampling.GreedySampler()
    prompt = tf.convert_to_tensor(prompt, tf.int32)
    seed = tf.convert_to_tensor(seed, tf.int32)
    batch = tf.shape(prompt)[0]
    prompt_len = prompt.shape[1]
    if prompt_len is None:
        raise ValueError("decode needs a static prompt length (prompt shape [B, P]).")
    limit = tf.constant(max_new_tokens, tf.int32)
    if max_steps is not None:
        limit = tf.clip_by_value(tf.cast(max_steps, tf.int32), 0, max_new_tokens)

    # Positions 0 .. P + max_new_tokens - 2 are ever fed: the last token is not.
    runner = decoder.prepare_decoding(cross_cache, prompt_len + max_new_tokens - 1, vocab_limit=vocab_limit)
    self_cache = runner.init_cache(batch)
    if prompt_len > 1:  # all but the last prompt token in one call
        _, self_cache = runner(prompt[:, :-1], self_cache, 0)

    tokens = tf.fill([batch, max_new_tokens], tf.constant(pad_token, tf.int32))
    scores = tf.zeros([batch, max_new_tokens], tf.float32)
    done = tf.zeros([batch], tf.bool)
    lengths = tf.zeros([batch], tf.int32)
    read = {name: tf.zeros([batch, max_new_tokens], dtype) for name, dtype in (readout.dtypes if readout else {}).items()}

    def cond(step, last, self_cache, tokens, scores, done, lengths, read):
        not_finished = tf.logical_not(tf.reduce_all(done)) if stop_at_end else True
        return tf.logical_and(step < limit, not_finished)

    def body(step, last, self_cache, tokens, scores, done, lengths, read):
        logits, self_cache = runner(last[:, tf.newaxis], self_cache, prompt_len - 1 + step)
        next_logits = logits[:, -1, :]
        token = sample_step(next_logits, step, tokens, sampler, seed, constraint)
        score = token_probs(next_logits, token)
        values = readout.fn(step, tf.cast(next_logits, tf.float32), token) if readout else {}
        if stop_at_end:
            token = tf.where(done, tf.constant(pad_token, tf.int32), token)
            score = tf.where(done, 0.0, score)
            values = {k: tf.where(done, tf.zeros_like(v), v) for k, v in values.items()}
            lengths = lengths + tf.cast(tf.logical_not(done), tf.int32)
            done = tf.logical_or(done, tf.equal(token, end_token))
        else:
            lengths = lengths + 1
        tokens = write_column(tokens, step, token)
        scores = write_column(scores, step, score)
        read = {k: write_column(read[k], step, values[k]) for k in read}
        return step + 1, token, self_cache, tokens, scores, done, lengths, read

    step, _, _, tokens, scores, done, lengths, read = tf.while_loop(
        cond, body,
        (tf.constant(0, tf.int32), prompt[:, -1], self_cache, tokens, scores, done, lengths, read),
        maximum_iterations=max_new_tokens,
    )
    return {"tokens": tokens, "scores": scores, "lengths": lengths, "steps": step, "readout": read}


def generate(model, images, prompt, max_new_tokens, rows=None, **kwargs):
    """Encode `images` once and decode `prompt` against them.

    `rows` (int32 `[N]`, optional) maps each of the N prompts to its image, so one
    encoding serves many prompts. Other arguments as `decode`.
    """
    cross_cache = encode_for_decoding(model, images)
    if rows is not None:
        cross_cache = gather_rows(cross_cache, rows)
    return decode(model.decoder, cross_cache, prompt, max_new_tokens, **kwargs)


def task_constraint(task):
    """A task codec's `grammar_mask(step, prev_tokens [B])` as a loop constraint."""
    def constraint(step, tokens):
        previous = tf.gather(tokens, tf.maximum(step - 1, 0), axis=1)
        return task.grammar_mask(step, previous)
    return constraint
