"""ModelConfig.stem="conv" and coordinate_init="sincos": the demo preset's fast-learning options."""
import numpy as np
import pytest
import tensorflow as tf

from model import vocab
from model.config import preset
from model.pix2seq_model import Pix2SeqModel, coordinate_embeddings
from model.training import TrainConfig, load_model, train
from training_utils import micro_config, random_dataset_fn


@pytest.mark.slow
def test_conv_stem_keeps_the_token_grid_and_trains_its_batch_norm(tmp_path):
    config = micro_config(stem="conv", patch_size=8)
    settings = TrainConfig(steps=2, batch_size=2, learning_rate=1e-3, warmup_steps=1,
                           task_weights={"detection": 1.0}, checkpoint_every=2)
    result = train(config, settings, str(tmp_path), random_dataset_fn(config, ["detection"], 2), verbose=0)
    model = result.model
    stem = model.encoder.patch_embedding
    convs = [layer for layer in stem.layers if layer.name.startswith("conv_")]
    assert len(convs) == 3  # 8 = 2**3 pixels per token side
    tokens = model.encoder(tf.zeros([1, config.image_size, config.image_size, 3]))
    assert tokens.shape == (1, config.num_image_tokens, config.encoder_dim)
    moving = [v for v in stem.non_trainable_variables if "moving_mean" in v.path]
    assert moving and any(np.abs(v.numpy()).max() > 0 for v in moving), "BatchNorm statistics never updated"

    # the saved weights and config rebuild the same function (inference-mode BatchNorm)
    again = load_model(str(tmp_path))
    assert again.config.stem == "conv"
    batch = {"image": tf.random.stateless_uniform([2, config.image_size, config.image_size, 3], [1, 2]),
             "input_tokens": tf.constant([[10, 1003, 1004], [10, 1001, 1002]], tf.int32)}
    np.testing.assert_allclose(model(batch).numpy(), again(batch).numpy(), atol=1e-5)


def test_patch_stem_is_the_default_and_bad_values_are_refused():
    assert preset("tiny").stem == "patch" and preset("base").coordinate_init == "random"
    with pytest.raises(ValueError, match="stem"):
        preset("tiny", stem="resnet")
    with pytest.raises(ValueError, match="coordinate_init"):
        preset("tiny", coordinate_init="zeros")
    with pytest.raises(ValueError, match="power-of-two"):
        micro_config(stem="conv", patch_size=12, image_size=36)


def test_sincos_coordinate_init_only_touches_coordinate_rows():
    config = micro_config(num_bins=64, coordinate_init="sincos")
    model = Pix2SeqModel(config)
    model.build()
    table = model.decoder.token_embedding.embeddings.numpy()
    rows = table[vocab.COORD_OFFSET:vocab.COORD_OFFSET + 64]
    np.testing.assert_allclose(rows, coordinate_embeddings(64, config.decoder_dim, float(np.std(table))),
                               rtol=1e-4, atol=1e-4)
    others = np.concatenate([table[:vocab.COORD_OFFSET], table[vocab.COORD_OFFSET + 64:]])
    assert 0.5 < rows.std() / others.std() < 2.0  # same scale as the random rows

    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    similarity = unit @ unit.T
    near = np.mean([similarity[i, i + 1] for i in range(63)])
    far = np.mean([similarity[i, (i + 32) % 64] for i in range(64)])
    assert near > 0.5 > far  # neighbouring bins start out alike, distant ones do not
    assert np.all(np.diag(similarity) > similarity.max(axis=1, where=~np.eye(64, dtype=bool), initial=-1) - 1e-6)


@pytest.mark.parametrize("stem", ["conv", "patch"])
def test_an_empty_batch_encodes_to_no_tokens(stem):
    """Serving encodes 0 person crops for an image without persons (graph mode, unknown batch)."""
    config = micro_config(stem=stem, patch_size=8)
    model = Pix2SeqModel(config)
    model.build()
    encode = tf.function(lambda images: model.encode(images),
                         input_signature=[tf.TensorSpec([None, config.image_size, config.image_size, 3])])
    assert encode(tf.zeros([0, config.image_size, config.image_size, 3])).shape == (0, config.num_image_tokens,
                                                                                   config.decoder_dim)
    assert encode(tf.zeros([2, config.image_size, config.image_size, 3])).shape[0] == 2
