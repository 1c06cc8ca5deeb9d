"""Image side of Pix2Seq: a ViT over 16-pixel patches and the projection to decoder width.

The ViT has fixed 2-D sine-cosine positions and no class token (every patch is an
image token the decoder can attend to). The projection follows the paper's code:
Dense to the decoder width, LayerNorm, sine-cosine positions again, one residual
MLP block.

`stem="conv"` replaces the single strided patch projection by stride-2 3x3
convolutions (BatchNorm, ReLU) down to the same patch grid, then a 1x1 projection
("Early convolutions help transformers see better", Xiao et al. 2021): the token
grid, positions and everything after are unchanged, but a small model trained from
scratch on little data learns to localize objects far sooner.
"""
import keras
import tensorflow as tf
from keras import ops

import pix2seq  # noqa: F401  (Keras 3 guard)
from model.config import STEMS, conv_stem_channels
from model.layers import EncoderBlock, MlpBlock, layer_norm, sincos_2d


@keras.saving.register_keras_serializable(package="pix2seq")
class VisionTransformer(keras.layers.Layer):
    """Images `[B, S, S, 3]` in [0, 1] -> patch tokens `[B, (S/patch)^2, dim]` (pre-LN, final LN).

    `stem_norm` adds a LayerNorm right after the stem (the official code's `stem_ln`);
    `sincos_grid` picks the position coordinates (`model.layers.sincos_2d`).
    """

    def __init__(self, image_size, patch_size, dim, depth, num_heads, mlp_dim, dropout=0.0, drop_path=0.0,
                 stem="patch", stem_norm=False, sincos_grid="index", **kwargs):
        super().__init__(**kwargs)
        if image_size % patch_size:
            raise ValueError(
                f"image_size must be a multiple of patch_size. Received: image_size={image_size}, patch_size={patch_size}"
            )
        self.image_size = image_size
        self.patch_size = patch_size
        self.dim = dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout = dropout
        self.drop_path = drop_path
        self.stem = stem
        self.stem_norm = stem_norm
        self.sincos_grid = sincos_grid
        self.grid = image_size // patch_size
        policy = self.dtype_policy
        if stem == "conv":
            self.patch_embedding = conv_stem(patch_size, dim, policy)
        elif stem == "patch":
            self.patch_embedding = keras.layers.Conv2D(
                dim, patch_size, strides=patch_size, padding="valid", name="patch_embedding", dtype=policy
            )
        else:
            raise ValueError(f"stem must be one of {STEMS}. Received: {stem!r}")
        self.patch_norm = layer_norm("stem_norm", policy) if stem_norm else None
        self.embedding_dropout = keras.layers.Dropout(dropout, dtype=policy)
        self.blocks = [
            EncoderBlock(dim, num_heads, mlp_dim, dropout, drop_path, name=f"block_{i}", dtype=policy)
            for i in range(depth)
        ]
        self.final_norm = layer_norm("final_norm", policy)
        self.positions = sincos_2d(self.grid, self.grid, dim, grid=sincos_grid)

    @property
    def num_tokens(self):
        return self.grid * self.grid

    def build(self, input_shape):
        self.patch_embedding.build((None, self.image_size, self.image_size, 3))
        tokens_shape = (None, self.num_tokens, self.dim)
        if self.patch_norm is not None:
            self.patch_norm.build(tokens_shape)
        for block in self.blocks:
            block.build(tokens_shape)
        self.final_norm.build(tokens_shape)

    def call(self, images, training=False):
        x = self._embed_patches(ops.cast(images, self.compute_dtype), training)
        x = ops.reshape(x, (-1, self.num_tokens, self.dim))
        if self.patch_norm is not None:
            x = self.patch_norm(x)
        x = x + ops.cast(self.positions, self.compute_dtype)[None]
        x = self.embedding_dropout(x, training=training)
        for block in self.blocks:
            x = block(x, training=training)
        return self.final_norm(x)

    def _embed_patches(self, images, training):
        """The stem, guarded against an empty batch at inference.

        TF 2.16's CPU Conv2D returns its *input* shape for a batch of 0 (seen with
        "same" padding), which breaks everything after it; serving hits empty batches
        (e.g. the keypoint stage of an image without persons). Static batch sizes
        (training, TPU) skip the guard.
        """
        if training or (images.shape[0] is not None and images.shape[0] > 0):
            return self.patch_embedding(images, training=training)
        return tf.cond(
            tf.shape(images)[0] > 0,
            lambda: self.patch_embedding(images, training=False),
            lambda: tf.zeros([0, self.grid, self.grid, self.dim], images.dtype),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "dim": self.dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "dropout": self.dropout,
            "drop_path": self.drop_path,
            "stem": self.stem,
            "stem_norm": self.stem_norm,
            "sincos_grid": self.sincos_grid,
        }


def conv_stem(patch_size, dim, dtype_policy):
    """log2(patch_size) stride-2 3x3 conv + BatchNorm + ReLU stages, then a 1x1 conv to `dim`."""
    layers = []
    for i, channels in enumerate(conv_stem_channels(patch_size, dim)):
        layers += [
            keras.layers.Conv2D(channels, 3, strides=2, padding="same", use_bias=False, name=f"conv_{i}",
                                dtype=dtype_policy),
            keras.layers.BatchNormalization(name=f"norm_{i}", dtype=dtype_policy),
            keras.layers.ReLU(name=f"relu_{i}", dtype=dtype_policy),
        ]
    layers.append(keras.layers.Conv2D(dim, 1, name="projection", dtype=dtype_policy))
    return keras.Sequential(layers, name="patch_embedding")


@keras.saving.register_keras_serializable(package="pix2seq")
class ImageProjection(keras.layers.Layer):
    """Encoder tokens -> decoder-width memory: Dense, LayerNorm, + sin-cos positions, MLP block."""

    def __init__(self, grid, dim, mlp_dim, dropout=0.0, drop_path=0.0, sincos_grid="index", **kwargs):
        super().__init__(**kwargs)
        self.grid = grid
        self.sincos_grid = sincos_grid
        self.dim = dim
        self.mlp_dim = mlp_dim
        self.dropout = dropout
        self.drop_path = drop_path
        policy = self.dtype_policy
        self.dense = keras.layers.Dense(dim, name="dense", dtype=policy)
        self.norm = layer_norm("norm", policy)
        self.mlp_block = MlpBlock(dim, mlp_dim, dropout, drop_path, name="mlp_block", dtype=policy)
        self.positions = sincos_2d(grid, grid, dim, grid=sincos_grid)

    def build(self, input_shape):
        self.dense.build(input_shape)
        out_shape = tuple(input_shape[:-1]) + (self.dim,)
        self.norm.build(out_shape)
        self.mlp_block.build(out_shape)

    def call(self, x, training=False):
        x = self.norm(self.dense(x))
        x = x + ops.cast(self.positions, self.compute_dtype)[None]
        return self.mlp_block(x, training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "grid": self.grid,
            "dim": self.dim,
            "mlp_dim": self.mlp_dim,
            "dropout": self.dropout,
            "drop_path": self.drop_path,
            "sincos_grid": self.sincos_grid,
        }
