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
uses `prepare_decoding(...)` -> `CachedDecoder` (model/cached_decoder.py), which writes
its cache in place; the layers hand it their weights fused (`fused_weights`).

Only core TF ops (no XLA dynamic-update-slice), so an exported loop loads in stock TF
Serving. The input and output token embeddings are shared, with a separate output bias.
"""
import math

import keras
import tensorflow as tf
from keras import ops

import pix2seq  # noqa: F401  (Keras 3 guard)
from model.cached_decoder import CachedDecoder
from model.layers import Attention, DropPath, MlpBlock, fold_norm, layer_norm


def _step_cast(variable, dtype):
    """A variable's value in `dtype`; `identity`: a loop capturing a variable's value
    re-reads the variable every step."""
    return tf.identity(tf.cast(variable.value, dtype))


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

    def fused_weights(self, dtype):
        """This block's weights for `CachedDecoder`, fused once per decode, in `dtype`:
        `qkv` (one kernel for query, key and value, the query scale and the self-attention
        LayerNorm folded in: kernel, bias, epsilon), `self_out`, `cross_q` (cross LayerNorm
        and scale folded in), `cross_out`, `fc1` (MLP LayerNorm folded in), `fc2`: each a
        `[dim, out]` kernel and its bias."""
        d = self.dim
        scale = tf.constant(1.0 / math.sqrt(d // self.num_heads), dtype)
        sa, ca, mlp = self.self_attention, self.cross_attention, self.mlp_block
        cast = lambda v: _step_cast(v, dtype)  # noqa: E731

        def proj(dense):  # EinsumDense "bld,dhk->blhk": kernel [d, H, Dh] -> [d, d], bias [H, Dh] -> [d]
            return tf.reshape(cast(dense.kernel), [d, d]), tf.reshape(cast(dense.bias), [d])

        def out(dense):  # EinsumDense "blhk,hkd->bld": kernel [H, Dh, d] -> [d, d]
            return tf.reshape(cast(dense.kernel), [d, d]), cast(dense.bias)

        (wq, bq), (wk, bk), (wv, bv) = proj(sa.query), proj(sa.key), proj(sa.value)
        cq, cbq = proj(ca.query)
        fold = lambda norm, kernel, bias: fold_norm(norm, kernel, bias, dtype)  # noqa: E731
        return {
            "qkv": fold(self.self_norm, tf.concat([wq * scale, wk, wv], axis=1),
                        tf.concat([bq * scale, bk, bv], axis=0)),
            "self_out": out(sa.output_dense),
            "cross_q": fold(self.cross_norm, cq * scale, cbq * scale),
            "cross_out": out(ca.output_dense),
            "fc1": fold(mlp.norm, mlp.mlp.fc1.kernel.value, mlp.mlp.fc1.bias.value),
            "fc2": (cast(mlp.mlp.fc2.kernel), cast(mlp.mlp.fc2.bias)),
        }

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

    def embed(self, tokens, positions):
        """Token embeddings plus the given position embeddings `[L, dim]`."""
        x = self.token_embedding(tokens) + ops.cast(positions, self.compute_dtype)[None]
        return x

    def logits(self, x):
        """Final LayerNorm and the tied output projection: hidden `[B, L, dim]` -> float32 logits."""
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
        x = self.embedding_dropout(self.embed(tokens, positions), training=training)
        memory = ops.cast(memory, self.compute_dtype)
        for block in self.blocks:
            x = block(x, memory, training=training)
        return self.logits(x)

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

    def fused_weights(self, dtype, vocab_limit=None):
        """The weights `CachedDecoder` runs on, in `dtype`: `blocks` (each block's
        `fused_weights`), `embeddings` [V, dim], `positions` [max_seq_len, dim] and
        `output` (final LayerNorm folded into the tied output projection, as a
        `[dim, vocab_limit]` kernel, float32 bias, epsilon)."""
        vocab = self.vocab_size if vocab_limit is None else int(vocab_limit)
        blocks = [block.fused_weights(dtype) for block in self.blocks]
        embeddings = _step_cast(self.token_embedding.embeddings, dtype)
        positions = _step_cast(self.position_embedding, dtype)
        # A [dim, vocab_limit] kernel (x @ E^T with the transpose flag ran ~4x slower for one row).
        output = fold_norm(self.final_norm, tf.transpose(embeddings[:vocab]), self.output_bias.value[:vocab], dtype)
        return {"blocks": blocks, "embeddings": embeddings, "positions": positions, "output": output}

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
