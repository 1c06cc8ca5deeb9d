"""Pix2Seq token decoder: pre-LN Transformer with a static-shape key/value cache.

Training runs `decoder(tokens, memory)` on whole sequences (causal self-attention,
cross-attention to the image tokens). Decoding uses the cache API pinned in
docs/CONTRACTS.md:

- `compute_cross_cache(memory)` projects the image tokens to keys/values once per
  image: `[B, layers, 2, heads, T, head_dim]`.
- `init_self_cache(batch, max_len)` gives zeros `[B, layers, 2, heads, max_len, head_dim]`.

Caches are head-major so each step's attention is two batched matmuls over the
cache as stored; the `[B, T, heads, head_dim]` layout needed a transpose of the
whole cache per step (measured ~10x slower for the 1600 image tokens of `base`).
- `call_cached(tokens [B, n], self_cache, cross_cache, index)` runs `n` new tokens
  at positions `index .. index + n - 1` and returns `(logits [B, n, V], self_cache)`.

Cache writes use gather + select (core TF ops) rather than XLA's dynamic-update-slice,
so an exported decoding loop loads in stock TF Serving. The input and output token
embeddings are shared, with a separate output bias.
"""
import math

import keras
from keras import ops

import pix2seq  # noqa: F401  (Keras 3 guard)
from model.layers import Attention, DropPath, MlpBlock, layer_norm


def _length(x):
    """Static length of axis 1 when known, else the dynamic one."""
    return x.shape[1] if x.shape[1] is not None else ops.shape(x)[1]


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

    def call_cached(self, x, self_kv, cross_kv, index):
        """Inference step on `n` tokens at `index`; `self_kv` is `[B, 2, heads, max_len, head_dim]`."""
        n = _length(x)
        max_len = self_kv.shape[3]
        h = self.self_norm(x)
        k_new, v_new = self.self_attention.project_key_value(h)
        new = ops.transpose(ops.stack([k_new, v_new], axis=1), (0, 1, 3, 2, 4))  # [B, 2, H, n, Dh]
        slots = ops.arange(max_len)
        offset = slots - index
        written = (offset >= 0) & (offset < n)
        spread = ops.take(new, ops.clip(offset, 0, n - 1), axis=3)
        self_kv = ops.where(written[None, None, None, :, None], ops.cast(spread, self_kv.dtype), self_kv)
        query_positions = index + ops.arange(n)
        mask = slots[None, :] <= query_positions[:, None]  # [n, max_len]
        q = self.self_attention.project_query(h)
        x = x + _attend_cached(self.self_attention, q, self_kv[:, 0], self_kv[:, 1], mask=mask[None, None])
        q = self.cross_attention.project_query(self.cross_norm(x))
        x = x + _attend_cached(self.cross_attention, q, cross_kv[:, 0], cross_kv[:, 1])
        return self.mlp_block(x), self_kv

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
        (the self cache then comes back as a list): slicing a layer out of the stacked
        tensor copies it, so a decoding loop splits the caches once, outside the loop.
        """
        n = _length(tokens)
        index = ops.convert_to_tensor(index, "int32")
        positions = ops.take(self.position_embedding, index + ops.arange(n), axis=0)
        x = self._embed(tokens, positions)
        layers = []
        for i, block in enumerate(self.blocks):
            x, kv = block.call_cached(x, _layer(self_cache, i), _layer(cross_cache, i), index)
            layers.append(kv)
        if isinstance(self_cache, (list, tuple)):
            return self._logits(x), layers
        return self._logits(x), ops.stack(layers, axis=1)

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


def _attend_cached(attention, q, k, v, mask=None):
    """`attention`'s dot-product attention with head-major keys/values `[B, H, T, Dh]`
    (the cache layout): q `[B, n, H, Dh]`, mask broadcastable to `[B, H, n, T]`."""
    q = q * ops.cast(1.0 / math.sqrt(attention.head_dim), q.dtype)
    q = ops.transpose(q, (0, 2, 1, 3))  # [B, H, n, Dh], small
    scores = ops.cast(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))), "float32")  # grappler folds the transpose
    if mask is not None:
        scores = ops.where(mask, scores, ops.full_like(scores, -1e9))
    probs = ops.cast(ops.softmax(scores, axis=-1), q.dtype)
    out = ops.transpose(ops.matmul(probs, v), (0, 2, 1, 3))  # [B, n, H, Dh]
    return attention.output_dense(out)
