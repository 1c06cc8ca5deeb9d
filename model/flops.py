"""Analytic FLOP and parameter counts of the model (multiply-add = 2 FLOPs), for
benchmarks and for sizing a preset without building it (ViT-L has ~0.4 B weights).

Counts the matrix products (dense layers, attention scores and mixing, the tied
output projection), which are all but a few percent of the work; elementwise
ops, norms and softmax are left out. A training step is 3x the forward pass
(backward = 2x forward: a gradient for each operand of every product) less the
first convolution's input gradient, which nothing needs (images are not trained).
The optional conv stem (`ModelConfig.stem="conv"`) counts its convolutions;
BatchNorm is elementwise and left out.
"""
import pix2seq  # noqa: F401  (Keras 3 guard)
from model.config import conv_stem_channels
from model.tasks import seq_len


def _attention(q_len, kv_len, dim):
    return 2 * 2 * q_len * kv_len * dim  # scores + weighted sum


def _stem_convolutions(config):
    """(output pixels, kernel taps x input channels, output channels) of each stem convolution."""
    if config.stem == "patch":
        return [(config.num_image_tokens, config.patch_size**2 * 3, config.encoder_dim)]
    convs, side, channels = [], config.image_size, 3
    for out in conv_stem_channels(config.patch_size, config.encoder_dim):  # stride-2 3x3 stages
        side //= 2
        convs.append((side * side, 9 * channels, out))
        channels = out
    return convs + [(config.num_image_tokens, channels, config.encoder_dim)]  # 1x1 projection


def patch_embedding_flops(config):
    """Forward FLOPs of the patch embedding (one strided convolution, or the conv stem) for one image."""
    return sum(2 * pixels * taps * out for pixels, taps, out in _stem_convolutions(config))


def image_gradient_flops(config):
    """FLOPs of the first convolution's input gradient for one image: never computed (images are not trained)."""
    pixels, taps, out = _stem_convolutions(config)[0]
    return 2 * pixels * taps * out


def encoder_flops(config):
    """Forward FLOPs of the ViT + projection for one image."""
    t, d, m = config.num_image_tokens, config.encoder_dim, config.encoder_mlp_dim
    patch = patch_embedding_flops(config)
    layer = 2 * t * 4 * d * d + _attention(t, t, d) + 2 * t * 2 * d * m
    dd, dm = config.decoder_dim, config.decoder_mlp_dim
    projection = 2 * t * d * dd + 2 * t * 2 * dd * dm
    return patch + config.encoder_depth * layer + projection


def decoder_flops(config, length):
    """Forward FLOPs of the decoder for one sequence of `length` tokens (teacher forcing)."""
    t, d, m = config.num_image_tokens, config.decoder_dim, config.decoder_mlp_dim
    self_attention = 2 * length * 4 * d * d + _attention(length, length, d)
    cross_attention = 2 * length * 2 * d * d + 2 * t * 2 * d * d + _attention(length, t, d)
    mlp = 2 * length * 2 * d * m
    logits = 2 * length * d * config.vocab_size
    return config.decoder_depth * (self_attention + cross_attention + mlp) + logits


def train_step_flops(config, batch_size, tasks):
    """FLOPs of one batch-mixing training step: `batch_size` images and sequences per task."""
    forward = sum(batch_size * (encoder_flops(config) + decoder_flops(config, seq_len(t, config.tokens))) for t in tasks)
    return 3 * forward - len(tasks) * batch_size * image_gradient_flops(config)


def _dense(fan_in, fan_out):
    return fan_in * fan_out + fan_out


def _attention_params(dim):
    return 4 * _dense(dim, dim)  # query, key, value, output


def _mlp_block_params(dim, hidden):
    return 2 * dim + _dense(dim, hidden) + _dense(hidden, dim)  # LayerNorm + two Dense


def parameter_count(config):
    """Every weight `Pix2SeqModel(config).count_params()` counts (BatchNorm's moving
    statistics included), from the config alone."""
    d, dd = config.encoder_dim, config.decoder_dim
    if config.stem == "patch":
        stem = _dense(config.patch_size**2 * 3, d)
    else:
        stem, channels = 0, 3
        for out in conv_stem_channels(config.patch_size, d):
            stem += 9 * channels * out + 4 * out  # bias-free conv + BatchNorm (gamma, beta, mean, variance)
            channels = out
        stem += _dense(channels, d)
    encoder = (stem + (2 * d if config.stem_norm else 0) + 2 * d  # final LayerNorm
               + config.encoder_depth * (2 * d + _attention_params(d) + _mlp_block_params(d, config.encoder_mlp_dim)))
    projection = _dense(d, dd) + 2 * dd + _mlp_block_params(dd, config.decoder_mlp_dim)
    block = 2 * (2 * dd + _attention_params(dd)) + _mlp_block_params(dd, config.decoder_mlp_dim)
    decoder = (config.vocab_size * dd + config.max_seq_len * dd + config.vocab_size  # tokens, positions, output bias
               + config.decoder_depth * block + 2 * dd)
    return encoder + projection + decoder
