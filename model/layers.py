"""Transformer building blocks shared by the ViT encoder and the token decoder.

Attention keeps its heads as a separate axis (`[B, L, heads, head_dim]`) so the
decoder can store keys/values in a static-shape cache and attend to it with a
position mask (see `model/decoder.py`). Softmax runs in float32 whatever the
compute dtype, so bfloat16/float16 training and cached decoding stay stable.
"""
import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

import pix2seq  # noqa: F401  (Keras 3 guard)


SINCOS_GRIDS = ("index", "2pi")


def sincos_2d(height, width, dim, temperature=10000.0, grid="index"):
    """Fixed 2-D sine-cosine position table `[height * width, dim]` (row-major).

    A quarter of the channels each encode sin(y), cos(y), sin(x), cos(x) at
    geometrically spaced frequencies (MoCo v3 / big_vision layout). `grid` says what
    y and x are: "index" the row/column index, "2pi" the index scaled so the grid spans
    [0, 2*pi] (what the official Pix2Seq code computes; its released checkpoints
    were trained with it).
    """
    if dim % 4:
        raise ValueError(f"sin-cos 2-D positions need a width divisible by 4. Received: dim={dim}")
    if grid not in SINCOS_GRIDS:
        raise ValueError(f"sin-cos grid must be one of {SINCOS_GRIDS}. Received: {grid!r}")
    quarter = dim // 4
    omega = 1.0 / (temperature ** (np.arange(quarter, dtype=np.float64) / quarter))
    rows, cols = np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64)
    if grid == "2pi":
        rows, cols = (c * (2.0 * np.pi / max(len(c) - 1, 1)) for c in (rows, cols))
    ys, xs = np.meshgrid(rows, cols, indexing="ij")
    y = ys.reshape(-1)[:, None] * omega[None, :]
    x = xs.reshape(-1)[:, None] * omega[None, :]
    table = np.concatenate([np.sin(y), np.cos(y), np.sin(x), np.cos(x)], axis=1)
    return table.astype(np.float32)


def _einsum_dense_2d(layer, x, dtype):
    """`layer(x)` for the Attention's EinsumDense layers, as one 2-D MatMul.

    The projections contract x's trailing axes (`d` or `h, k`) with the kernel's
    leading ones; flattening both sides to matrices gives the same numbers with the
    fast 2-D MatMul (+ fused bias) instead of Einsum's batched one. The layers keep
    their weights (names, shapes), so checkpoints and model/cached_decoder.py's fused
    decoding weights are unchanged.
    """
    kernel = ops.cast(layer.kernel, dtype)
    bias = ops.reshape(ops.cast(layer.bias, dtype), (-1,))
    contracted = len(kernel.shape) - len(layer.bias.shape)  # kernel axes x contributes
    inner = math.prod(kernel.shape[:contracted])
    leading = ops.shape(x)[: len(x.shape) - contracted]
    y = ops.add(ops.matmul(ops.reshape(x, (-1, inner)), ops.reshape(kernel, (inner, -1))), bias)
    return ops.reshape(y, tuple(leading) + tuple(kernel.shape[contracted:]))


def _softmax_scores(q, k, mask):
    """float32 softmax(q k^T) of head-major `[B, H, L, Dh]` / `[B, H, T, Dh]`, masked positions 0."""
    scores = tf.cast(tf.matmul(q, k, transpose_b=True), tf.float32)
    if mask is not None:
        scores = tf.where(mask, scores, tf.constant(-1e9, tf.float32))
    return tf.nn.softmax(scores, axis=-1)


def _softmax_attention(q, k, v, mask):
    """softmax(q k^T) v (head-major) with a hand-written gradient.

    Same forward ops as the plain path. The backward pass uses
    rowsum(dP * P) = rowsum(dO * O) (O = P V): a product of the small `[B, H, L, Dh]`
    tensors, so the softmax gradient over the `[B, H, L, T]` scores takes two
    elementwise passes instead of four (a 1600-token image has 30 M scores per layer).
    Masked positions have P = 0 and get no gradient, as with autodiff.
    """

    @tf.custom_gradient
    def core(q, k, v):
        probs = _softmax_scores(q, k, mask)
        p = tf.cast(probs, q.dtype)
        out = tf.matmul(p, v)

        def grad(d_out):
            d_v = tf.matmul(p, d_out, transpose_a=True)
            d_p = tf.cast(tf.matmul(d_out, v, transpose_b=True), tf.float32)
            rows = tf.reduce_sum(tf.cast(d_out, tf.float32) * tf.cast(out, tf.float32), axis=-1, keepdims=True)
            d_scores = tf.cast(probs * (d_p - rows), q.dtype)
            return tf.matmul(d_scores, k), tf.matmul(d_scores, q, transpose_a=True), d_v

        return out, grad

    return core(q, k, v)


@keras.saving.register_keras_serializable(package="pix2seq")
class DropPath(keras.layers.Layer):
    """Stochastic depth: drops a whole residual branch per example while training."""

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"DropPath rate must be in [0, 1). Received: rate={rate}")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True  # no weights

    def call(self, x, training=False):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype) < keep
        return ops.where(mask, x / ops.cast(keep, x.dtype), ops.zeros_like(x))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="pix2seq")
class Attention(keras.layers.Layer):
    """Multi-head dot-product attention with separately callable projections.

    `project_query` / `project_key_value` / `attend` let a caller compute key and
    value projections once (cross-attention over image tokens) or append them to a
    cache (self-attention), while `call` runs the whole thing in one pass.
    """

    def __init__(self, dim, num_heads, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise ValueError(f"Attention width must divide into heads. Received: dim={dim}, num_heads={num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        shape = (None, num_heads, self.head_dim)
        self.query = keras.layers.EinsumDense("bld,dhk->blhk", shape, bias_axes="hk", name="query", dtype=self.dtype_policy)
        self.key = keras.layers.EinsumDense("bld,dhk->blhk", shape, bias_axes="hk", name="key", dtype=self.dtype_policy)
        self.value = keras.layers.EinsumDense("bld,dhk->blhk", shape, bias_axes="hk", name="value", dtype=self.dtype_policy)
        self.output_dense = keras.layers.EinsumDense(
            "blhk,hkd->bld", (None, dim), bias_axes="d", name="output", dtype=self.dtype_policy
        )
        self.attention_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, query_shape, value_shape=None):
        value_shape = query_shape if value_shape is None else value_shape
        self.query.build(query_shape)
        self.key.build(value_shape)
        self.value.build(value_shape)
        self.output_dense.build(tuple(query_shape[:2]) + (self.num_heads, self.head_dim))

    def project_query(self, x):
        return _einsum_dense_2d(self.query, x, self.compute_dtype)

    def project_key_value(self, x):
        return _einsum_dense_2d(self.key, x, self.compute_dtype), _einsum_dense_2d(self.value, x, self.compute_dtype)

    def attend(self, q, k, v, mask=None, training=False):
        """q `[B, L, H, Dh]`, k/v `[B, T, H, Dh]`, mask broadcastable to `[B, H, L, T]` (True = may attend)."""
        q = q * ops.cast(1.0 / math.sqrt(self.head_dim), q.dtype)  # scale the small tensor, not the scores
        q, k, v = (ops.transpose(t, (0, 2, 1, 3)) for t in (q, k, v))  # head-major: plain batched matmuls
        if training and self.dropout == 0.0:
            out = _softmax_attention(q, k, v, mask)
        else:  # inference (exported graphs: no custom gradient) or dropout on the probabilities
            probs = _softmax_scores(q, k, mask)
            probs = self.attention_dropout(ops.cast(probs, q.dtype), training=training)
            out = tf.matmul(probs, v)
        return _einsum_dense_2d(self.output_dense, ops.transpose(out, (0, 2, 1, 3)), self.compute_dtype)

    def call(self, query, value=None, attention_mask=None, training=False):
        value = query if value is None else value
        k, v = self.project_key_value(value)
        return self.attend(self.project_query(query), k, v, mask=attention_mask, training=training)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads, "dropout": self.dropout}


@keras.saving.register_keras_serializable(package="pix2seq")
class Mlp(keras.layers.Layer):
    """Dense -> GELU -> dropout -> Dense -> dropout."""

    def __init__(self, dim, hidden_dim, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.fc1 = keras.layers.Dense(hidden_dim, activation="gelu", name="fc1", dtype=self.dtype_policy)
        self.fc2 = keras.layers.Dense(dim, name="fc2", dtype=self.dtype_policy)
        self.drop = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.fc1.build(input_shape)
        self.fc2.build(tuple(input_shape[:-1]) + (self.hidden_dim,))

    def call(self, x, training=False):
        # Flatten the token axes: on CPU a 2-D MatMul runs ~1.8x faster than the batched
        # MatMul a rank-3 Dense input becomes, and oneDNN fuses bias + GELU into it.
        leading = ops.shape(x)[:-1]
        h = ops.reshape(x, (-1, x.shape[-1]))
        h = self.drop(self.fc1(h), training=training)
        h = self.drop(self.fc2(h), training=training)
        return ops.reshape(h, tuple(leading) + (self.dim,))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "hidden_dim": self.hidden_dim, "dropout": self.dropout}


def layer_norm(name, dtype_policy):
    """The LayerNorm every block uses (eps 1e-6, as ViT)."""
    return keras.layers.LayerNormalization(epsilon=1e-6, name=name, dtype=dtype_policy)


def fold_norm(norm, kernel, bias, dtype):
    """`LayerNorm(x) @ kernel + bias == normalized(x) @ (gamma * kernel) + (beta @ kernel + bias)`:
    the (kernel, bias, epsilon) to use after normalizing without scale and offset
    (model/cached_decoder.py), folded in float32 once per decode."""
    gamma, beta = tf.cast(norm.gamma.value, tf.float32), tf.cast(norm.beta.value, tf.float32)
    kernel = tf.cast(kernel, tf.float32)
    folded_bias = tf.linalg.matvec(kernel, beta, transpose_a=True) + tf.cast(bias, tf.float32)
    return tf.cast(gamma[:, None] * kernel, dtype), folded_bias, norm.epsilon


@keras.saving.register_keras_serializable(package="pix2seq")
class MlpBlock(keras.layers.Layer):
    """Pre-LN residual MLP: `x + drop_path(mlp(ln(x)))`."""

    def __init__(self, dim, hidden_dim, dropout=0.0, drop_path=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.drop_path = drop_path
        self.norm = layer_norm("norm", self.dtype_policy)
        self.mlp = Mlp(dim, hidden_dim, dropout, name="mlp", dtype=self.dtype_policy)
        self.path_drop = DropPath(drop_path, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.mlp.build(input_shape)

    def call(self, x, training=False):
        return x + self.path_drop(self.mlp(self.norm(x), training=training), training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "hidden_dim": self.hidden_dim,
            "dropout": self.dropout,
            "drop_path": self.drop_path,
        }


@keras.saving.register_keras_serializable(package="pix2seq")
class EncoderBlock(keras.layers.Layer):
    """Pre-LN Transformer encoder block (bidirectional self-attention + MLP)."""

    def __init__(self, dim, num_heads, mlp_dim, dropout=0.0, drop_path=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout = dropout
        self.drop_path = drop_path
        self.norm = layer_norm("norm", self.dtype_policy)
        self.attention = Attention(dim, num_heads, name="attention", dtype=self.dtype_policy)
        self.drop = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        self.path_drop = DropPath(drop_path, dtype=self.dtype_policy)
        self.mlp_block = MlpBlock(dim, mlp_dim, dropout, drop_path, name="mlp_block", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.attention.build(input_shape)
        self.mlp_block.build(input_shape)

    def call(self, x, training=False):
        h = self.drop(self.attention(self.norm(x), training=training), training=training)
        x = x + self.path_drop(h, training=training)
        return self.mlp_block(x, training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "dropout": self.dropout,
            "drop_path": self.drop_path,
        }
