"""Pix2Seq token decoder: pre-LN Transformer with a static-shape key/value cache.

Training runs `decoder(tokens, memory)` on whole sequences (causal self-attention,
cross-attention to the image tokens). Decoding uses the cache API pinned in
docs/CONTRACTS.md:

- `compute_cross_cache(memory)` projects the image tokens to keys/values once per
  image: `[B, layers, 2, heads, T, head_dim]`.
- `init_self_cache(batch, max_len)` gives zeros `[B, layers, 2, heads, max_len, head_dim]`.
- `call_cached(tokens [B, n], self_cache, cross_cache, index)` runs `n` new tokens
  at positions `index .. index + n - 1` and returns `(logits [B, n, V], self_cache)`.

Caches are head-major so attention is two batched matmuls over a cache as stored.
`call_cached` is functional (its input cache is not modified). A decoding loop instead
uses `prepare_decoding(...)` -> `CachedDecoder`, which sets everything up once per
decode so that a step touches little memory and runs few ops:

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
"""
import math

import keras
import tensorflow as tf
from keras import ops
from tensorflow.python.ops import control_flow_util  # the XLA-context check; no public API has it

import pix2seq  # noqa: F401  (Keras 3 guard)
from model.layers import Attention, DropPath, MlpBlock, layer_norm


@keras.saving.register_keras_serializable(package="pix2seq")
class DecoderBlock(keras.layers.Layer):
    """Pre-LN block: causal self-attention, cross-attention to the image, MLP."""

    def __init__(self, dim, num_heads, mlp_dim, dropout=0.0, drop_path=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout = dropout
        self.drop_path = drop_path
        policy = self.dtype_policy
        self.self_norm = layer_norm("self_norm", policy)
        self.self_attention = Attention(dim, num_heads, name="self_attention", dtype=policy)
        self.cross_norm = layer_norm("cross_norm", policy)
        self.cross_attention = Attention(dim, num_heads, name="cross_attention", dtype=policy)
        self.mlp_block = MlpBlock(dim, mlp_dim, dropout, drop_path, name="mlp_block", dtype=policy)
        self.drop = keras.layers.Dropout(dropout, dtype=policy)
        self.path_drop = DropPath(drop_path, dtype=policy)

    def build(self, input_shape, memory_shape=None):
        memory_shape = input_shape if memory_shape is None else memory_shape
        self.self_norm.build(input_shape)
        self.self_attention.build(input_shape)
        self.cross_norm.build(input_shape)
        self.cross_attention.build(input_shape, memory_shape)
        self.mlp_block.build(input_shape)

    def _residual(self, x, h, training):
        return x + self.path_drop(self.drop(h, training=training), training=training)

    def call(self, x, memory, training=False):
        length = ops.shape(x)[1]
        positions = ops.arange(length)
        causal = positions[None, :] <= positions[:, None]
        x = self._residual(x, self.self_attention(self.self_norm(x), attention_mask=causal[None, None], training=training), training)
        x = self._residual(x, self.cross_attention(self.cross_norm(x), memory, training=training), training)
        return self.mlp_block(x, training=training)

    def cross_key_value(self, memory):
        """`[B, 2, heads, T, head_dim]`: this block's cross-attention keys and values (head-major)."""
        k, v = self.cross_attention.project_key_value(memory)
        return ops.transpose(ops.stack([k, v], axis=1), (0, 1, 3, 2, 4))

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "dropout": self.dropout,
            "drop_path": self.drop_path,
        }


@keras.saving.register_keras_serializable(package="pix2seq")
class Pix2SeqDecoder(keras.layers.Layer):
    """Token embedding + learned positions, `depth` DecoderBlocks, LayerNorm, tied output."""

    def __init__(self, vocab_size, max_seq_len, dim, depth, num_heads, mlp_dim, dropout=0.0, drop_path=0.0, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.max_seq_len = max_seq_len
        self.dim = dim
        self.depth = depth
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.mlp_dim = mlp_dim
        self.dropout = dropout
        self.drop_path = drop_path
        policy = self.dtype_policy
        self.token_embedding = keras.layers.Embedding(
            vocab_size,
            dim,
            embeddings_initializer=keras.initializers.TruncatedNormal(stddev=dim**-0.5),
            name="token_embedding",
            dtype=policy,
        )
        self.embedding_dropout = keras.layers.Dropout(dropout, dtype=policy)
        self.blocks = [
            DecoderBlock(dim, num_heads, mlp_dim, dropout, drop_path, name=f"block_{i}", dtype=policy)
            for i in range(depth)
        ]
        self.final_norm = layer_norm("final_norm", policy)

    def build(self, tokens_shape, memory_shape=None):
        memory_shape = (None, None, self.dim) if memory_shape is None else memory_shape
        self.token_embedding.build(tokens_shape)
        self.position_embedding = self.add_weight(
            shape=(self.max_seq_len, self.dim),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="position_embedding",
        )
        self.output_bias = self.add_weight(shape=(self.vocab_size,), initializer="zeros", name="output_bias")
        hidden_shape = tuple(tokens_shape) + (self.dim,)
        for block in self.blocks:
            block.build(hidden_shape, memory_shape)
        self.final_norm.build(hidden_shape)

    def _embed(self, tokens, positions):
        x = self.token_embedding(tokens) + ops.cast(positions, self.compute_dtype)[None]
        return x

    def _logits(self, x):
        x = self.final_norm(x)
        embeddings = ops.cast(self.token_embedding.embeddings, self.compute_dtype)
        logits = ops.einsum("bld,vd->blv", x, embeddings)
        return ops.cast(logits, "float32") + ops.cast(self.output_bias, "float32")

    def call(self, tokens, memory, training=False):
        """Teacher-forced pass: tokens `[B, L]`, memory `[B, T, dim]` -> float32 logits `[B, L, V]`."""
        length = tokens.shape[1]
        if length is not None and length > self.max_seq_len:
            raise ValueError(f"Sequence of length {length} exceeds the decoder's max_seq_len={self.max_seq_len}")
        positions = self.position_embedding[: ops.shape(tokens)[1]]
        x = self.embedding_dropout(self._embed(tokens, positions), training=training)
        memory = ops.cast(memory, self.compute_dtype)
        for block in self.blocks:
            x = block(x, memory, training=training)
        return self._logits(x)

    def compute_cross_cache(self, memory):
        """Image keys/values for every block: `[B, layers, 2, heads, T, head_dim]`."""
        memory = ops.cast(memory, self.compute_dtype)
        return ops.stack([block.cross_key_value(memory) for block in self.blocks], axis=1)

    def init_self_cache(self, batch_size, max_len):
        """Empty self-attention cache `[B, layers, 2, heads, max_len, head_dim]`."""
        if max_len > self.max_seq_len:
            raise ValueError(f"Cache length {max_len} exceeds the decoder's max_seq_len={self.max_seq_len}")
        shape = (batch_size, self.depth, 2, self.num_heads, max_len, self.head_dim)
        return ops.zeros(shape, dtype=self.compute_dtype)

    def call_cached(self, tokens, self_cache, cross_cache, index):
        """Run `n = tokens.shape[1]` tokens at positions `index ..`; returns `(logits [B, n, V], self_cache)`.

        Either cache may also be a list of per-layer tensors `[B, 2, heads, L, head_dim]`
        (the self cache then comes back as a list). Functional: the given cache is not
        modified. Loops should use `prepare_decoding`, which keeps the cache in a layout
        it can write in place.
        """
        cache_len = self_cache[0].shape[3] if isinstance(self_cache, (list, tuple)) else self_cache.shape[4]
        runner = self.prepare_decoding(cross_cache, cache_len, in_place=False)
        cache = [runner.to_layout(*tf.unstack(_layer(self_cache, i), axis=1)) for i in range(self.depth)]
        logits, cache = runner(tokens, cache, index)
        layers = [tf.stack(runner.from_layout(k, v), axis=1) for k, v in cache]
        if isinstance(self_cache, (list, tuple)):
            return logits, layers
        return logits, tf.stack(layers, axis=1)

    def prepare_decoding(self, cross_cache, max_len, vocab_limit=None, in_place=None):
        """A `CachedDecoder` for one decode against `cross_cache` with `max_len` cache slots."""
        return CachedDecoder(self, cross_cache, max_len, vocab_limit=vocab_limit, in_place=in_place)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "max_seq_len": self.max_seq_len,
            "dim": self.dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "dropout": self.dropout,
            "drop_path": self.drop_path,
        }


def _layer(cache, i):
    """Layer `i` of a stacked `[B, layers, ...]` cache or of a per-layer list."""
    return cache[i] if isinstance(cache, (list, tuple)) else cache[:, i]


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
    """LayerNorm without its scale and offset, which `_fold_norm` moves into the next matmul."""
    y = tf.cast(x, tf.float32)
    centered = y - tf.reduce_mean(y, axis=-1, keepdims=True)
    variance = tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True)
    return tf.cast(centered * tf.math.rsqrt(variance + epsilon), x.dtype)


def _dense(x, weights, normalize=False):
    """`x @ kernel + bias`, after `_normalize` when `weights` come from `_fold_norm`."""
    if normalize:
        kernel, bias, epsilon = weights
        x = _normalize(x, epsilon)
    else:
        kernel, bias = weights
    return tf.nn.bias_add(step_matmul(x, kernel), tf.cast(bias, x.dtype))


def _fold_norm(norm, kernel, bias, dtype):
    """`LayerNorm(x) @ kernel + bias == normalized(x) @ (gamma * kernel) + (beta @ kernel + bias)`:
    the (kernel, bias, epsilon) to use after `_normalize` (folded in float32, once per decode)."""
    gamma, beta = tf.cast(norm.gamma.value, tf.float32), tf.cast(norm.beta.value, tf.float32)
    kernel = tf.cast(kernel, tf.float32)
    folded_bias = tf.linalg.matvec(kernel, beta, transpose_a=True) + tf.cast(bias, tf.float32)
    return tf.cast(gamma[:, None] * kernel, dtype), folded_bias, norm.epsilon


class CachedDecoder:
    """A decoder's incremental forward pass, set up once per decode (see module docstring).

    `runner = decoder.prepare_decoding(cross_cache, max_len, vocab_limit)`, then
    `cache = runner.init_cache(batch)` and `logits, cache = runner(tokens [B, n], cache, index)`
    as often as needed (inside or outside `tf.while_loop`). Weights are read and fused
    and the cross cache laid out here, so build the runner outside the loop.

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
        # `identity`: a loop capturing a variable's value re-reads the variable every step.
        cast = lambda v: tf.identity(tf.cast(v.value, self.dtype))  # noqa: E731
        self.cross = [(tf.transpose(tf.cast(k, self.dtype), [0, 1, 3, 2]), tf.cast(v, self.dtype))
                      for k, v in _split_cross(cross_cache, decoder.depth)]
        self.layers = [self._block_weights(block, cast) for block in decoder.blocks]
        self.embeddings = cast(decoder.token_embedding.embeddings)
        self.positions = cast(decoder.position_embedding)
        # The tied output projection as a [dim, vocab_limit] kernel (x @ E^T with the
        # transpose flag ran ~4x slower for one row); the logits' bias stays float32.
        self.output = _fold_norm(decoder.final_norm, tf.transpose(self.embeddings[:vocab]),
                                 decoder.output_bias.value[:vocab], self.dtype)

    def _block_weights(self, block, cast):
        d = self.dim
        scale = tf.constant(1.0 / math.sqrt(self.head_dim), self.dtype)
        sa, ca, mlp = block.self_attention, block.cross_attention, block.mlp_block

        def proj(dense):  # EinsumDense "bld,dhk->blhk": kernel [d, H, Dh] -> [d, d], bias [H, Dh] -> [d]
            return tf.reshape(cast(dense.kernel), [d, d]), tf.reshape(cast(dense.bias), [d])

        def out(dense):  # EinsumDense "blhk,hkd->bld": kernel [H, Dh, d] -> [d, d]
            return tf.reshape(cast(dense.kernel), [d, d]), cast(dense.bias)

        (wq, bq), (wk, bk), (wv, bv) = proj(sa.query), proj(sa.key), proj(sa.value)
        cq, cbq = proj(ca.query)
        fold = lambda norm, kernel, bias: _fold_norm(norm, kernel, bias, self.dtype)  # noqa: E731
        return {
            "qkv": fold(block.self_norm, tf.concat([wq * scale, wk, wv], axis=1),
                        tf.concat([bq * scale, bk, bv], axis=0)),
            "self_out": out(sa.output_dense),
            "cross_q": fold(block.cross_norm, cq * scale, cbq * scale),
            "cross_out": out(ca.output_dense),
            "fc1": fold(mlp.norm, mlp.mlp.fc1.kernel.value, mlp.mlp.fc1.bias.value),
            "fc2": (cast(mlp.mlp.fc2.kernel), cast(mlp.mlp.fc2.bias)),
        }

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
