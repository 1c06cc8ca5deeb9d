"""`CachedDecoder`: a `Pix2SeqDecoder`'s incremental forward pass for decoding loops.

`decoder.prepare_decoding(...)` (model/decoder.py) builds one per decode; it sets
everything up once so that a step touches little memory and runs few ops:
- the cross cache is split once into per-layer keys and values `[B, heads, T, head_dim]`
  (slicing K or V out of the stacked tensor copies it, every step);
- the self cache is, per layer, flat K and V buffers `[B * heads * max_len, head_dim]`
  written *in place* with the core op `InplaceUpdate` at the step's rows, so a step
  writes `2 * heads * head_dim` values per row instead of rewriting the whole cache;
  under XLA (no `InplaceUpdate` kernel) `tensor_scatter_nd_update`, which XLA does in place;
- query/key/value kernels are fused into one matmul, the query scale is folded into
  its kernel, and for a single new token every head split is a reshape, not a transpose;
- logits may be computed for the first `vocab_limit` ids only (tasks whose grammar
  never emits a higher id), which skips most of the `dim x vocab` output projection.

Only core TF ops (no XLA dynamic-update-slice), so an exported loop loads in stock TF
Serving. The input and output token embeddings are shared, with a separate output bias.

The decoder layers hand over their weights already fused (`fused_weights`); this
module only lays out the caches and runs the step.
"""
import tensorflow as tf
from tensorflow.python.ops import control_flow_util  # the XLA-context check; no public API has it

import pix2seq  # noqa: F401  (Keras 3 guard)


def _in_xla_context():
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _split_cross(cross_cache, depth):
    """Cross cache (stacked, or per-layer `[B, 2, H, T, Dh]`, or per-layer (k, v)) -> [(k, v)] per layer."""
    if isinstance(cross_cache, (list, tuple)):
        if len(cross_cache) != depth:
            raise ValueError(f"Cross cache has {len(cross_cache)} layers; the decoder has {depth}.")
        return [tuple(c) if isinstance(c, (list, tuple)) else tuple(tf.unstack(c, axis=1)) for c in cross_cache]
    shape = cross_cache.shape
    kv = tf.unstack(tf.reshape(cross_cache, [-1, 2 * depth] + shape[3:].as_list()), axis=1)
    return [(kv[2 * i], kv[2 * i + 1]) for i in range(depth)]


def step_matmul(a, b):
    """`a @ b` for the step's matrix-vector products.

    In float32 as `BatchMatMulV3`, which TF 2.16's oneDNN rewrite leaves alone: for
    one row per sequence it streamed the weights 1.2x faster than `MatMul`/
    `BatchMatMulV2` (base, batch 1: 11.0 vs 13.1 ms per step; the same at batch 16).
    Other dtypes keep `tf.matmul`, whose oneDNN kernels were faster there.
    """
    if a.dtype == tf.float32:
        return tf.raw_ops.BatchMatMulV3(x=a, y=b, Tout=a.dtype)
    return tf.matmul(a, b)


def _normalize(x, epsilon):
    """LayerNorm without its scale and offset, which `layers.fold_norm` moves into the next matmul."""
    y = tf.cast(x, tf.float32)
    centered = y - tf.reduce_mean(y, axis=-1, keepdims=True)
    variance = tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True)
    return tf.cast(centered * tf.math.rsqrt(variance + epsilon), x.dtype)


def _dense(x, weights, normalize=False):
    """`x @ kernel + bias`, after `_normalize` when `weights` come from `layers.fold_norm`."""
    if normalize:
        kernel, bias, epsilon = weights
        x = _normalize(x, epsilon)
    else:
        kernel, bias = weights
    return tf.nn.bias_add(step_matmul(x, kernel), tf.cast(bias, x.dtype))


class CachedDecoder:
    """A decoder's incremental forward pass, set up once per decode (see module docstring).

    `runner = decoder.prepare_decoding(cross_cache, max_len, vocab_limit)`, then
    `cache = runner.init_cache(batch)` and `logits, cache = runner(tokens [B, n], cache, index)`
    as often as needed (inside or outside `tf.while_loop`). The decoder hands over its fused
    weights (`Pix2SeqDecoder.fused_weights`) and the cross cache is laid out here, so build the runner outside the loop.

    Layouts (chosen for the step's matmuls, measured on CPU): keys are stored transposed,
    `[B, H, Dh, T]`, so the scores are a plain batched matmul (with the transpose flag,
    oneDNN's batched matrix-vector products ran ~1.6x slower at batch 16); the self
    cache of a layer is a pair of flat buffers, keys `[B * H * Dh * max_len]` and values
    `[B * H * max_len, Dh]`, which a step writes at its own elements (`InplaceUpdate`
    updates leading-axis rows of a buffer it may overwrite).

    Numerics: the same function as `decoder(tokens, memory)` with roundings in another
    order (fused and pre-scaled kernels, LayerNorm scale folded into the next matmul):
    logits agree to ~1e-6 in float32; with a bfloat16/float16 compute dtype to about one
    ulp of that dtype, so near-tied greedy tokens may then differ from a full pass.

    Args:
      decoder: a built `Pix2SeqDecoder`.
      cross_cache: `compute_cross_cache(memory)` (stacked), or per-layer `[B, 2, H, T, Dh]`
        tensors or (k, v) pairs `[B, H, T, Dh]`.
      max_len: static number of self-cache slots (positions `0 .. max_len - 1`).
      vocab_limit: compute logits for ids `< vocab_limit` only (None: the whole vocabulary).
        Only for tasks whose grammar never allows a higher id; softmax scores are then
        over those ids.
      in_place: write the self cache with `InplaceUpdate` (default: yes, except under XLA,
        which has no kernel for it; `tensor_scatter_nd_update` there, done in place by XLA).
        `init_cache` then returns fresh buffers on every run, and a step's input cache
        must not be used after the step (a loop variable never is).
    """

    def __init__(self, decoder, cross_cache, max_len, vocab_limit=None, in_place=None):
        if max_len > decoder.max_seq_len:
            raise ValueError(f"Cache length {max_len} exceeds the decoder's max_seq_len={decoder.max_seq_len}")
        vocab = decoder.vocab_size if vocab_limit is None else int(vocab_limit)
        if not 1 <= vocab <= decoder.vocab_size:
            raise ValueError(f"vocab_limit must be in [1, {decoder.vocab_size}]. Received: {vocab_limit}")
        self.max_len = int(max_len)
        self.vocab_size = vocab
        self.heads, self.head_dim, self.dim = decoder.num_heads, decoder.head_dim, decoder.dim
        self.in_place = (not _in_xla_context()) if in_place is None else bool(in_place)
        self.dtype = tf.as_dtype(decoder.compute_dtype)
        self.cross = [(tf.transpose(tf.cast(k, self.dtype), [0, 1, 3, 2]), tf.cast(v, self.dtype))
                      for k, v in _split_cross(cross_cache, decoder.depth)]
        weights = decoder.fused_weights(self.dtype, vocab)
        self.layers = weights["blocks"]
        self.embeddings, self.positions, self.output = weights["embeddings"], weights["positions"], weights["output"]

    def init_cache(self, batch):
        """Per layer (keys, values) zeros in the runner's layout, fresh buffers every run."""
        rows = tf.cast(batch, tf.int32) * (self.heads * self.max_len)
        if self.in_place:  # `Empty` is stateful: never constant-folded or shared, so safe to write into
            fresh = lambda shape: tf.raw_ops.Empty(shape=shape, dtype=self.dtype, init=True)  # noqa: E731
        else:
            fresh = lambda shape: tf.zeros(shape, self.dtype)  # noqa: E731
        return [(fresh(tf.reshape(rows * self.head_dim, [1])), fresh(tf.stack([rows, self.head_dim])))
                for _ in self.layers]

    def to_layout(self, k, v):
        """Keys and values `[B, H, max_len, Dh]` -> this runner's cache layout (copies)."""
        return tf.reshape(tf.transpose(k, [0, 1, 3, 2]), [-1]), tf.reshape(v, [-1, self.head_dim])

    def from_layout(self, k, v):
        """This runner's cache layout -> keys and values `[B, H, max_len, Dh]`."""
        return tf.transpose(self._keys(k), [0, 1, 3, 2]), self._values(v)

    def _keys(self, k):
        return tf.reshape(k, [-1, self.heads, self.head_dim, self.max_len])

    def _values(self, v):
        return tf.reshape(v, [-1, self.heads, self.max_len, self.head_dim])

    def _write(self, flat, rows, values):
        if self.in_place:
            return tf.raw_ops.InplaceUpdate(x=flat, i=rows, v=values)
        return tf.tensor_scatter_nd_update(flat, rows[:, tf.newaxis], values)

    def _heads(self, t, n):
        """`[B * n, d]` -> `[B, H, n, Dh]`."""
        if isinstance(n, int) and n == 1:
            return tf.reshape(t, [-1, self.heads, 1, self.head_dim])
        return tf.transpose(tf.reshape(t, [-1, n, self.heads, self.head_dim]), [0, 2, 1, 3])

    def _attend(self, q, k_t, v, n, out, mask_bias=None):
        """q `[B * n, d]` (pre-scaled), keys `[B, H, Dh, T]`, values `[B, H, T, Dh]` ->
        projected output `[B * n, d]`."""
        scores = tf.cast(step_matmul(self._heads(q, n), k_t), tf.float32)
        if mask_bias is not None:
            scores = scores + mask_bias
        probs = tf.cast(tf.nn.softmax(scores, axis=-1), self.dtype)
        att = step_matmul(probs, v)  # [B, H, n, Dh]
        if not (isinstance(n, int) and n == 1):
            att = tf.transpose(att, [0, 2, 1, 3])
        return _dense(tf.reshape(att, [-1, self.dim]), out)

    def __call__(self, tokens, cache, index):
        """tokens int32 `[B, n]` at positions `index ..` -> (float32 logits
        `[B, n, vocab_limit]`, the cache with their keys/values written)."""
        tokens = tf.convert_to_tensor(tokens, tf.int32)
        n = tokens.shape[1] if tokens.shape[1] is not None else tf.shape(tokens)[1]
        index = tf.cast(index, tf.int32)
        positions = index + tf.range(n)
        x = tf.gather(self.embeddings, tokens) + tf.gather(self.positions, positions)
        x = tf.reshape(x, [-1, self.dim])  # [B * n, d]
        # Where the new keys/values go: rows of `[B * n, d]` reshaped to (b, j, h[, e]).
        batch = tf.shape(tokens)[0]
        head = tf.range(batch)[:, None, None] * self.heads + tf.range(self.heads)[None, None, :]  # [B, 1, H]
        value_rows = tf.reshape(head * self.max_len + positions[None, :, None], [-1])
        key_rows = (head[..., None] * self.head_dim + tf.range(self.head_dim)) * self.max_len
        key_rows = tf.reshape(key_rows + positions[None, :, None, None], [-1])
        slots = tf.range(self.max_len)
        mask_bias = tf.where(slots[None, :] <= positions[:, None], 0.0, -1e9)  # [n, max_len]
        new_cache = []
        for w, (k_cache, v_cache), (cross_k, cross_v) in zip(self.layers, cache, self.cross):
            q, k, v = tf.split(_dense(x, w["qkv"], normalize=True), 3, axis=1)
            k_cache = self._write(k_cache, key_rows, tf.reshape(k, [-1]))
            v_cache = self._write(v_cache, value_rows, tf.reshape(v, [-1, self.head_dim]))
            x = x + self._attend(q, self._keys(k_cache), self._values(v_cache), n, w["self_out"], mask_bias)
            x = x + self._attend(_dense(x, w["cross_q"], normalize=True), cross_k, cross_v, n, w["cross_out"])
            h = tf.nn.gelu(_dense(x, w["fc1"], normalize=True), approximate=False)
            x = x + _dense(h, w["fc2"])
            new_cache.append((k_cache, v_cache))
        kernel, bias, epsilon = self.output
        logits = tf.nn.bias_add(tf.cast(step_matmul(_normalize(x, epsilon), kernel), tf.float32), bias)
        return tf.reshape(logits, [-1, n, self.vocab_size]), new_cache
