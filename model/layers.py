"""Transformer building blocks shared by the ViT encoder and the token decoder.

Attention keeps its heads as a separate axis (`[B, L, heads, head_dim]`) so the
decoder can store keys/values in a static-shape cache and attend to it with a
position mask (see `model/decoder.py`). Softmax runs in float32 whatever the
compute dtype, so bfloat16/float16 training and cached decoding stay stable.
"""
import math

import keras
import numpy as np
from keras import ops

import pix2seq  # noqa: F401  (Keras 3 guard)


def sincos_2d(height, width, dim, temperature=10000.0):
    """Fixed 2-D sine-cosine position table `[height * width, dim]` (row-major).

    A quarter of the channels each encode sin(y), cos(y), sin(x), cos(x) at
    geometrically spaced frequencies (MoCo v3 / big_vision layout).
    """
    if dim % 4:
        raise ValueError(f"sin-cos 2-D positions need a width divisible by 4. Received: dim={dim}")
    quarter = dim // 4
    omega = 1.0 / (temperature ** (np.arange(quarter, dtype=np.float64) / quarter))
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    y = ys.reshape(-1)[:, None] * omega[None, :]
    x = xs.reshape(-1)[:, None] * omega[None, :]
    table = np.concatenate([np.sin(y), np.cos(y), np.sin(x), np.cos(x)], axis=1)
    return table.astype(np.float32)


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
        return self.query(x)

    def project_key_value(self, x):
        return self.key(x), self.value(x)

    def attend(self, q, k, v, mask=None, training=False):
        """q `[B, L, H, Dh]`, k/v `[B, T, H, Dh]`, mask broadcastable to `[B, H, L, T]` (True = may attend)."""
        q = q * ops.cast(1.0 / math.sqrt(self.head_dim), q.dtype)  # scale the small tensor, not the scores
        scores = ops.cast(ops.einsum("blhk,bthk->bhlt", q, k), "float32")
        if mask is not None:
            scores = ops.where(mask, scores, ops.full_like(scores, -1e9))
        probs = ops.cast(ops.softmax(scores, axis=-1), q.dtype)
        probs = self.attention_dropout(probs, training=training)
        out = ops.einsum("bhlt,bthk->blhk", probs, v)
        return self.output_dense(out)

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
        x = self.drop(self.fc1(x), training=training)
        return self.drop(self.fc2(x), training=training)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "hidden_dim": self.hidden_dim, "dropout": self.dropout}


def layer_norm(name, dtype_policy):
    """The LayerNorm every block uses (eps 1e-6, as ViT)."""
    return keras.layers.LayerNormalization(epsilon=1e-6, name=name, dtype=dtype_policy)


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
