"""Architecture: parameter counts, presets, layer configs, decoder cache == full pass."""
import numpy as np
import pytest

import keras

from model import layers as L
from model.config import ModelConfig, preset
from model.tasks import seq_len, task_names
from model.decoder import DecoderBlock, Pix2SeqDecoder
from model.encoder import ImageProjection, VisionTransformer
from model.flops import parameter_count
from model.pix2seq_model import Pix2SeqModel


@pytest.fixture(scope="module")
def tiny_model():
    model = Pix2SeqModel(preset("tiny"))
    model.build()
    return model


def _random_batch(config, task, batch_size=2, seed=0):
    rng = np.random.default_rng(seed)
    length = seq_len(task, config.tokens)
    size = config.image_size
    return {
        "image": rng.random((batch_size, size, size, 3)).astype("float32"),
        "input_tokens": rng.integers(0, config.vocab_size, (batch_size, length)).astype("int32"),
        "target_tokens": rng.integers(0, config.vocab_size, (batch_size, length)).astype("int32"),
        "token_weights": rng.random((batch_size, length)).astype("float32"),
    }


@pytest.mark.slow
def test_base_has_the_papers_parameter_count():
    assert preset("base").vocab_size == 35000
    assert abs(parameter_count(preset("base")) - 131.6e6) / 131.6e6 < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("name", ["small", "base"])
def test_every_preset_builds_and_runs_each_task(name):
    """The real architecture of each preset on a 32-pixel canvas (positions are fixed sin-cos
    tables, so the canvas changes no weight); batch 1, each task's full sequence length.
    `large` (ViT-L, ~0.4 B weights) is not built: it is the same code at other sizes, and its
    size comes from the config (`parameter_count`, equal to the built models' here)."""
    config = preset(name, image_size=32)
    model = Pix2SeqModel(config)
    model.build()
    memory = model.encode(np.zeros((1, 32, 32, 3), "float32"))
    assert tuple(memory.shape) == (1, 4, config.decoder_dim)
    for task in task_names():
        tokens = np.ones((1, seq_len(task, config.tokens)), "int32")
        logits = model.decoder(tokens, memory)
        assert tuple(logits.shape) == (1, seq_len(task, config.tokens), config.vocab_size)
    assert model.count_params() == parameter_count(config)


@pytest.mark.parametrize("changes", [{}, {"stem": "conv"}, {"stem": "conv", "stem_norm": True}])
def test_parameter_count_from_the_config_equals_the_built_model(tiny_model, changes):
    model = tiny_model
    if changes:
        model = Pix2SeqModel(preset("tiny", image_size=32, **changes))
        model.build()
    assert model.count_params() == parameter_count(model.config)
    assert parameter_count(preset("large")) > 2 * parameter_count(preset("base"))


def test_canvas_size_changes_no_weight(tiny_model):
    small_canvas = Pix2SeqModel(preset("tiny", image_size=32))
    small_canvas.build()
    assert small_canvas.count_params() == tiny_model.count_params()


@pytest.mark.parametrize("name", ["tiny", "small", "base", "large"])
def test_presets_are_consistent(name):
    config = preset(name)
    assert config.max_seq_len >= max(seq_len(t, config.tokens) for t in task_names())
    assert config.image_size % config.patch_size == 0
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_preset_overrides_reach_the_token_config():
    config = preset("tiny", caption_vocab_size=500, dropout=0.0)
    assert config.vocab_size == 3500 and config.dropout == 0.0
    with pytest.raises(ValueError, match="Unknown model preset"):
        preset("huge")
    with pytest.raises(ValueError, match="multiple of patch_size"):
        preset("tiny", image_size=100)


def test_tiny_forward_on_every_task(tiny_model):
    config = tiny_model.config
    for task in task_names():
        batch = _random_batch(config, task)
        logits = tiny_model({"image": batch["image"], "input_tokens": batch["input_tokens"]})
        assert logits.shape == (2, seq_len(task, config.tokens), config.vocab_size)
        assert logits.dtype == "float32"
        assert np.isfinite(np.asarray(logits)).all()
    assert 1e6 < tiny_model.count_params() < 10e6


def test_test_step_reports_weighted_task_losses(tiny_model):
    config = tiny_model.config
    data = {task: _random_batch(config, task, seed=i) for i, task in enumerate(task_names())}
    tiny_model.compile()
    tiny_model.reset_metrics()
    logs = {k: float(v) for k, v in tiny_model.test_step(data).items()}
    expected = sum(tiny_model.task_weights[t] * logs[f"{t}_loss"] for t in task_names())
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    assert all(logs[f"{t}_loss"] > 0 for t in task_names())


def test_several_sequences_per_image_equal_the_image_repeated(tiny_model):
    """[B, K, L] tokens (K instances or captions of one image) give the loss of the
    flat [B*K, L] batch with each image repeated K times: one encoding serves K rows."""
    config = tiny_model.config
    flat = _random_batch(config, "segmentation", batch_size=6, seed=3)
    flat["image"] = np.repeat(flat["image"][::3], 3, axis=0)
    nested = {k: v.reshape((2, 3) + v.shape[1:]) for k, v in flat.items() if k != "image"}
    nested["image"] = flat["image"][::3]
    want = tiny_model.compute_task_losses({"segmentation": flat, "detection": _random_batch(config, "detection")})
    got = tiny_model.compute_task_losses({"segmentation": nested, "detection": _random_batch(config, "detection")})
    np.testing.assert_allclose(float(got[0]), float(want[0]), rtol=1e-5)
    for task in ("segmentation", "detection"):
        np.testing.assert_allclose([float(x) for x in got[1][task]], [float(x) for x in want[1][task]], rtol=1e-5)


LAYERS = [
    (L.Attention(32, 4), (2, 5, 32)),
    (L.Mlp(32, 64, dropout=0.1), (2, 5, 32)),
    (L.MlpBlock(32, 64, dropout=0.1, drop_path=0.2), (2, 5, 32)),
    (L.EncoderBlock(32, 4, 64, dropout=0.1, drop_path=0.1), (2, 5, 32)),
    (L.DropPath(0.3, seed=1), (2, 5, 32)),
    (VisionTransformer(32, 16, 32, 2, 4, 64), (2, 32, 32, 3)),
    (VisionTransformer(32, 16, 32, 1, 4, 64, stem_norm=True, sincos_grid="2pi"), (2, 32, 32, 3)),
    (ImageProjection(2, 32, 64), (2, 4, 48)),
    (ImageProjection(2, 32, 64, sincos_grid="2pi"), (2, 4, 48)),
]


@pytest.mark.parametrize("layer,shape", LAYERS, ids=lambda x: type(x).__name__ if not isinstance(x, tuple) else "")
def test_layer_config_round_trip(layer, shape):
    x = np.random.default_rng(0).random(shape).astype("float32")
    y = layer(x)
    clone = type(layer).from_config(layer.get_config())
    clone(x)
    clone.set_weights(layer.get_weights())
    assert clone.get_config() == layer.get_config()
    np.testing.assert_allclose(clone(x), y, atol=1e-6)
    assert len(clone.weights) == len(layer.weights)


def test_decoder_config_round_trip():
    decoder = Pix2SeqDecoder(50, 16, 32, 2, 4, 64, dropout=0.1, drop_path=0.1)
    tokens = np.arange(12, dtype="int32").reshape(2, 6)
    memory = np.random.default_rng(0).random((2, 3, 32)).astype("float32")
    y = decoder(tokens, memory)
    clone = Pix2SeqDecoder.from_config(decoder.get_config())
    clone(tokens, memory)
    clone.set_weights(decoder.get_weights())
    np.testing.assert_allclose(clone(tokens, memory), y, atol=1e-6)
    block = DecoderBlock(32, 4, 64)
    assert DecoderBlock.from_config(block.get_config()).get_config() == block.get_config()


def test_cached_decoding_equals_full_pass():
    """Prompt in one call, then one token at a time through the K/V cache == one teacher-forced pass."""
    decoder = Pix2SeqDecoder(60, 20, 32, 3, 4, 64, dropout=0.1, drop_path=0.1)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 60, (3, 12)).astype("int32")
    memory = rng.normal(size=(3, 7, 32)).astype("float32")
    full = np.asarray(decoder(tokens, memory, training=False))
    cross = decoder.compute_cross_cache(memory)
    assert tuple(cross.shape) == (3, 3, 2, 4, 7, 8)
    cache = decoder.init_self_cache(3, 16)
    assert tuple(cache.shape) == (3, 3, 2, 4, 16, 8)
    prompt = 4
    logits, cache = decoder.call_cached(tokens[:, :prompt], cache, cross, 0)
    steps = [np.asarray(logits)]
    for i in range(prompt, 12):
        logits, cache = decoder.call_cached(tokens[:, i : i + 1], cache, cross, i)
        steps.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)
    # Slots past the last written position stay empty.
    assert not np.asarray(cache)[:, :, :, :, 12:].any()


def test_cached_call_works_inside_tf_function(tiny_model):
    import tensorflow as tf

    decoder = tiny_model.decoder
    images = np.random.default_rng(2).random((2, 128, 128, 3)).astype("float32")
    tokens = np.random.default_rng(3).integers(0, 3000, (2, 6)).astype("int32")
    memory = tiny_model.encode(images)
    full = np.asarray(decoder(tokens, memory))

    @tf.function
    def run(tokens, memory):
        cross = decoder.compute_cross_cache(memory)
        cache = decoder.init_self_cache(2, 8)

        def body(i, cache, out):
            logits, cache = decoder.call_cached(tokens[:, i : i + 1], cache, cross, i)
            return i + 1, cache, out.write(i, logits[:, 0])

        _, _, out = tf.while_loop(lambda i, *_: i < 6, body, (0, cache, tf.TensorArray(tf.float32, 6)))
        return tf.transpose(out.stack(), [1, 0, 2])

    np.testing.assert_allclose(run(tokens, memory), full, atol=1e-5)


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="divide into heads"):
        L.Attention(30, 4)
    with pytest.raises(ValueError, match="max_seq_len"):
        Pix2SeqDecoder(50, 8, 32, 1, 4, 64).init_self_cache(1, 9)
    with pytest.raises(ValueError, match="unknown tasks"):
        Pix2SeqModel(preset("tiny"), task_weights={"depth": 1.0})
    assert keras.config.backend() == "tensorflow"


def _reference_attention(layer, query, value, mask=None):
    """Multi-head attention written out with einsums over the layer's own weights."""
    w = {name: np.asarray(getattr(layer, name).kernel) for name in ("query", "key", "value", "output_dense")}
    b = {name: np.asarray(getattr(layer, name).bias) for name in ("query", "key", "value", "output_dense")}
    q = np.einsum("bld,dhk->blhk", query, w["query"]) + b["query"]
    k = np.einsum("bld,dhk->blhk", value, w["key"]) + b["key"]
    v = np.einsum("bld,dhk->blhk", value, w["value"]) + b["value"]
    scores = np.einsum("blhk,bthk->bhlt", q, k) / np.sqrt(layer.head_dim)
    if mask is not None:
        scores = np.where(mask, scores, -1e9)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = np.einsum("bhlt,bthk->blhk", probs, v)
    return np.einsum("blhk,hkd->bld", out, w["output_dense"]) + b["output_dense"]


@pytest.mark.parametrize("masked", [False, True])
def test_attention_matches_the_einsum_formula(masked):
    layer = L.Attention(32, 4)
    rng = np.random.default_rng(4)
    query = rng.normal(size=(2, 6, 32)).astype("float32")
    value = query if masked else rng.normal(size=(2, 9, 32)).astype("float32")
    mask = (np.arange(6)[None, :] <= np.arange(6)[:, None])[None, None] if masked else None
    for training in (False, True):  # training uses the hand-written-gradient path
        out = layer(query, None if masked else value, attention_mask=mask, training=training)
        np.testing.assert_allclose(out, _reference_attention(layer, query, value, mask), atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_attention_training_gradient_equals_autodiff(masked):
    """The training path's hand-written softmax-attention gradient == autodiff of the inference path."""
    import tensorflow as tf

    layer = L.Attention(32, 4)
    rng = np.random.default_rng(5)
    query = tf.constant(rng.normal(size=(2, 7, 32)).astype("float32"))
    value = query if masked else tf.constant(rng.normal(size=(2, 11, 32)).astype("float32"))
    mask = tf.constant((np.arange(7)[None, :] <= np.arange(7)[:, None])[None, None]) if masked else None
    probe = tf.constant(rng.normal(size=(2, 7, 32)).astype("float32"))

    def grads(training):
        with tf.GradientTape() as tape:
            tape.watch([query, value])
            loss = tf.reduce_sum(layer(query, value, attention_mask=mask, training=training) * probe)
        return tape.gradient(loss, [query, value] + layer.trainable_variables)

    for got, want in zip(tf.function(lambda: grads(True))(), grads(False)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_attention_gradient_runs_in_bfloat16():
    import tensorflow as tf

    layer = L.Attention(32, 4, dtype="mixed_bfloat16")
    x = tf.constant(np.random.default_rng(6).normal(size=(2, 5, 32)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.cast(layer(x, training=True), tf.float32) ** 2)
    grads = tape.gradient(loss, layer.trainable_variables)
    assert all(g is not None and np.isfinite(np.asarray(g)).all() for g in grads)


def test_mlp_flattens_tokens_and_keeps_static_shapes():
    import tensorflow as tf

    mlp = L.Mlp(32, 64)
    x = np.random.default_rng(7).normal(size=(2, 5, 32)).astype("float32")
    fc1, fc2 = mlp.fc1, mlp.fc2
    mlp.build((None, 5, 32))
    hidden = np.asarray(keras.activations.gelu(x @ np.asarray(fc1.kernel) + np.asarray(fc1.bias)))
    np.testing.assert_allclose(mlp(x), hidden @ np.asarray(fc2.kernel) + np.asarray(fc2.bias), atol=1e-5)
    spec = tf.TensorSpec([None, 5, 32], tf.float32)
    assert tf.function(mlp).get_concrete_function(spec).output_shapes.as_list() == [None, 5, 32]
    attention = L.Attention(32, 4)
    assert tf.function(attention).get_concrete_function(spec).output_shapes.as_list() == [None, 5, 32]


def _graph_matmul_flops(fn, *specs):
    """2 x multiply-adds of every MatMul / BatchMatMul / Einsum / Conv2D in `fn`'s traced graph."""
    import re

    import tensorflow as tf

    graph = tf.function(fn).get_concrete_function(*specs).graph
    total = 0
    for op in graph.get_operations():
        if op.type in ("MatMul", "BatchMatMulV2", "BatchMatMulV3"):
            a, b = (t.shape.as_list() for t in op.inputs)
            ta = op.get_attr("transpose_a") if op.type == "MatMul" else op.get_attr("adj_x")
            tb = op.get_attr("transpose_b") if op.type == "MatMul" else op.get_attr("adj_y")
            m, k = (a[-1], a[-2]) if ta else (a[-2], a[-1])
            n = b[-2] if tb else b[-1]
            total += 2 * int(np.prod(op.outputs[0].shape.as_list()[:-2], dtype=np.int64)) * m * n * k
        elif op.type == "Einsum":
            equation = op.get_attr("equation").decode()
            sizes = {}
            for letters, t in zip(re.split(",|->", equation)[:2], op.inputs):
                sizes.update(zip(letters, t.shape.as_list()))
            total += 2 * int(np.prod(list(sizes.values()), dtype=np.int64))
        elif op.type == "Conv2D":
            kh, kw, cin, _ = op.inputs[1].shape.as_list()
            total += 2 * int(np.prod(op.outputs[0].shape.as_list(), dtype=np.int64)) * kh * kw * cin
    return total


def test_analytic_flops_equal_the_graphs_matmuls(tiny_model):
    """model/flops.py counts exactly the products the traced forward pass computes."""
    import tensorflow as tf

    from model import flops

    config = tiny_model.config
    length = seq_len("detection", config.tokens)
    image = tf.TensorSpec([1, config.image_size, config.image_size, 3], tf.float32)
    memory = tf.TensorSpec([1, config.num_image_tokens, config.decoder_dim], tf.float32)
    tokens = tf.TensorSpec([1, length], tf.int32)
    assert _graph_matmul_flops(tiny_model.encode, image) == flops.encoder_flops(config)
    assert _graph_matmul_flops(tiny_model.decoder, tokens, memory) == flops.decoder_flops(config, length)
    train = flops.train_step_flops(config, 2, ["detection", "keypoints"])
    forward = 2 * sum(flops.encoder_flops(config) + flops.decoder_flops(config, seq_len(t, config.tokens))
                      for t in ("detection", "keypoints"))
    assert train == 3 * forward - 4 * flops.patch_embedding_flops(config)


def test_analytic_flops_count_the_conv_stem():
    import tensorflow as tf

    from model import flops

    config = preset("tiny", stem="conv")
    model = Pix2SeqModel(config)
    model.build()
    image = tf.TensorSpec([1, config.image_size, config.image_size, 3], tf.float32)
    assert _graph_matmul_flops(model.encode, image) == flops.encoder_flops(config)
    assert flops.patch_embedding_flops(config) > flops.patch_embedding_flops(preset("tiny"))
    first = 2 * (config.image_size // 2) ** 2 * 27 * 32
    assert flops.train_step_flops(config, 1, ["detection"]) == 3 * (
        flops.encoder_flops(config) + flops.decoder_flops(config, seq_len("detection", config.tokens))) - first
