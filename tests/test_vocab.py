"""model/vocab.py: token layout, quantization round trip, TokenConfig validation."""
import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings, strategies as st

from model import vocab
from model.tasks import seq_len


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=50),
       st.sampled_from([10, 999, 1000, 2000]))
def test_quantize_round_trip_within_half_bin(values, num_bins):
    tokens = vocab.quantize(values, num_bins).numpy()
    assert tokens.min() >= vocab.COORD_OFFSET and tokens.max() < vocab.COORD_OFFSET + num_bins
    back = vocab.dequantize(tokens, num_bins).numpy()
    assert np.max(np.abs(back - np.asarray(values, np.float32))) <= 0.5 / (num_bins - 1) + 1e-6


def test_quantize_matches_rounding_rule_and_clips():
    values = np.array([-0.3, 0.0, 0.0005, 0.5, 0.9995, 1.0, 1.7], np.float32)
    expected = np.clip(np.round(values * 999), 0, 999).astype(np.int32) + 1000
    np.testing.assert_array_equal(vocab.quantize(values).numpy(), expected)
    assert vocab.quantize(0.5).numpy() == 1000 + 500  # 499.5 rounds half to even


def test_class_and_text_tokens():
    np.testing.assert_array_equal(vocab.class_to_token([1, 90]).numpy(), [101, 190])
    np.testing.assert_array_equal(vocab.token_to_class([101, 190, 30, 1000, 0]).numpy(), [1, 90, 0, 0, 0])
    np.testing.assert_array_equal(vocab.text_to_token([1, 5]).numpy(), [vocab.CAPTION_EOS, 3005])
    np.testing.assert_array_equal(vocab.token_to_text([3005, 3001, 1500]).numpy(), [5, 1, -1])
    assert vocab.is_class([30, 100, 101, 999, 1000]).numpy().tolist() == [False, False, True, True, False]


def test_layout_constants_are_the_official_ones():
    assert (vocab.PAD, vocab.DETECTION_PROMPT, vocab.SEGMENTATION_PROMPT, vocab.KEYPOINT_PROMPT,
            vocab.CAPTION_PROMPT, vocab.FAKE_CLASS, vocab.SEPARATOR, vocab.INVISIBLE,
            vocab.CLASS_OFFSET, vocab.COORD_OFFSET, vocab.TEXT_OFFSET, vocab.CAPTION_EOS) == (
        0, 10, 11, 12, 13, 30, 40, 41, 100, 1000, 3000, 3001)


def test_token_config_lengths_and_vocab():
    cfg = vocab.TokenConfig()
    assert cfg.vocab_size == 35000
    assert [seq_len(t, cfg) for t in ("detection", "segmentation", "keypoints", "captioning")] == [
        501, 262, 40, 128]
    with pytest.raises(ValueError, match="Unknown task"):
        seq_len("panoptic", cfg)


@pytest.mark.parametrize("field,value", [
    ("num_bins", 2001), ("num_bins", 1), ("max_instances", 0), ("max_class_id", 900),
    ("person_class_id", 91), ("caption_vocab_size", 3), ("keypoint_flip_pairs", ((0, 17),)),
])
def test_token_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        vocab.TokenConfig(**{field: value})


def test_token_config_is_frozen_and_survives_json():
    cfg = vocab.TokenConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_bins = 10
    again = vocab.TokenConfig(**json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg and hash(again) == hash(cfg)


def test_as_seed_and_masks():
    np.testing.assert_array_equal(vocab.as_seed(7).numpy(), [7, 0])
    np.testing.assert_array_equal(vocab.as_seed(tf.constant([3, 4])).numpy(), [3, 4])
    with pytest.raises(ValueError, match="seed"):
        vocab.as_seed(1.5)
    assert vocab.range_mask(10, 2, 5).numpy().nonzero()[0].tolist() == [2, 3, 4]
    assert vocab.token_mask(10, [0, 7]).numpy().nonzero()[0].tolist() == [0, 7]
