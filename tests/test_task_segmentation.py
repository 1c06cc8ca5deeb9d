"""model/tasks/segmentation.py: polygon sequences, resampling, grammar, decoding to masks."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings, strategies as st

from model import polygons, vocab
from model.tasks import get_task
from task_test_utils import HALF_BIN, assert_grammar_accepts, assert_same, response_of

CFG = vocab.TokenConfig(max_polygon_points=32, caption_vocab_size=64)
TASK = get_task("segmentation", CFG)


def example(rng, sizes, pad=0):
    parts = []
    for i, n in enumerate(sizes):
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        centre = rng.uniform(0.3, 0.7, 2)
        parts.append(np.stack([centre[0] + 0.2 * np.sin(ang), centre[1] + 0.2 * np.cos(ang)], 1))
    points = np.concatenate(parts + [np.zeros((pad, 2))]).astype(np.float32)
    part = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)] + [np.full(pad, -1)]).astype(np.int32)
    return {"box": np.array([0.1, 0.2, 0.9, 0.8], np.float32), "class": np.int32(44),
            "polygon_points": points, "polygon_part": part}


@pytest.mark.parametrize("sizes,pad", [((12,), 0), ((8, 5, 3), 4), ((3,), 2)])
def test_round_trip_ids_and_weights(sizes, pad):
    ex = example(np.random.default_rng(len(sizes)), sizes, pad)
    out = TASK.build_sequences(ex, 0, augment=False)
    inp, target, w = (out[k].numpy() for k in ("input_tokens", "target_tokens", "token_weights"))
    assert inp.shape == target.shape == w.shape == (TASK.max_seq_len,) == (6 + 2 * 32,)
    np.testing.assert_array_equal(inp[:6], [11, 1100, 1200, 1899, 1799, 144])
    np.testing.assert_array_equal(inp[1:], target[:-1])  # teacher forcing
    n_tokens = 2 * (sum(sizes) + len(sizes) - 1) + 1  # pairs + separators + EOS
    expected_w = np.zeros(TASK.max_seq_len, np.float32)
    expected_w[5:5 + n_tokens] = 1.0
    np.testing.assert_array_equal(w, expected_w)
    resp = response_of(TASK, out)
    assert resp[n_tokens - 1] == vocab.EOS and np.all(resp[n_tokens:] == vocab.PAD)
    body = resp[:n_tokens - 1]
    assert np.all(((body >= 1000) & (body < 2000)) | (body == vocab.SEPARATOR))
    assert_grammar_accepts(TASK, resp[:n_tokens + 1], inp[5])
    dec = TASK.decode(resp)
    part = dec["part"].numpy()
    keep = part >= 0
    np.testing.assert_array_equal(part[keep], ex["polygon_part"][ex["polygon_part"] >= 0])
    err = np.abs(dec["points"].numpy()[keep] - ex["polygon_points"][ex["polygon_part"] >= 0])
    assert err.max() <= HALF_BIN


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(3, 8), min_size=1, max_size=3), st.integers(0, 2**31 - 1))
def test_random_polygons_round_trip_within_half_bin(sizes, seed):
    ex = example(np.random.default_rng(seed), sizes)
    resp = response_of(TASK, TASK.build_sequences(ex, seed))
    assert np.all((resp >= 0) & (resp < 2000))
    dec = TASK.decode(resp)
    keep = dec["part"].numpy() >= 0
    np.testing.assert_array_equal(dec["part"].numpy()[keep], ex["polygon_part"])
    assert np.abs(dec["points"].numpy()[keep] - ex["polygon_points"]).max() <= HALF_BIN


def test_long_polygon_is_resampled_not_truncated():
    n = 400
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ex = {"box": np.array([0.2, 0.2, 0.8, 0.8], np.float32), "class": 3,
          "polygon_points": np.stack([0.5 + 0.3 * np.sin(ang), 0.5 + 0.3 * np.cos(ang)], 1).astype(np.float32),
          "polygon_part": np.zeros(n, np.int32)}
    out = TASK.build_sequences(ex, 0)
    resp = response_of(TASK, out)
    assert resp[64] == vocab.EOS and np.all((resp[:64] >= 1000) & (resp[:64] < 2000))
    dec = TASK.decode(resp[None], mask_size=(64, 64))
    mask = dec["mask"].numpy()[0]
    full = polygons.rasterize(ex["polygon_points"], ex["polygon_part"], 64, 64).numpy()
    assert (mask & full).sum() / (mask | full).sum() >= 0.95
    # the whole contour is covered: the decoded points go all the way round
    angles = np.arctan2(dec["points"].numpy()[0, :32, 1] - 0.5, dec["points"].numpy()[0, :32, 0] - 0.5)
    assert np.ptp(np.unwrap(angles)) > 1.9 * np.pi


def test_deterministic_and_eager_equals_graph():
    ex = example(np.random.default_rng(5), (9, 4), pad=3)
    a = TASK.build_sequences(ex, 1)
    assert_same(a, TASK.build_sequences(ex, 2))
    ds = tf.data.Dataset.from_tensors(ex).map(lambda e: TASK.build_sequences(e, 1))  # graph mode
    assert ds.element_spec["input_tokens"].shape == (TASK.max_seq_len,)
    assert_same(a, next(iter(ds)))


def test_grammar_mask_pairs_and_separators():
    mask = lambda step, prev: TASK.grammar_mask(tf.constant(step), tf.constant(prev)).numpy()
    m = mask(0, [144])[0]
    assert m[1000:2000].all() and m.sum() == 1000  # must start with a point
    m = mask(2, [1500])[0]
    assert m[vocab.SEPARATOR] and m[vocab.EOS] and m[1000:2000].all() and m.sum() == 1002
    assert mask(3, [vocab.SEPARATOR])[0].nonzero()[0].tolist() == [vocab.SEPARATOR]
    assert mask(4, [vocab.SEPARATOR])[0].sum() == 1000  # no empty part
    assert mask(3, [1500])[0].sum() == 1000
    assert mask(64, [1500])[0].nonzero()[0].tolist() == [0]
    assert mask(9, [0])[0].nonzero()[0].tolist() == [0]


def test_decode_batch_drops_broken_pairs_and_average_of_samples():
    resp = np.zeros((2, 20), np.int32)
    resp[0, :8] = [1100, 1100, 1100, 1900, 1900, 1900, 1900, 1100]
    resp[1, :9] = [1100, 1100, 1100, 1500, 41, 1500, 1500, 1100, 0]
    dec = TASK.decode(resp, mask_size=(10, 10))
    assert dec["part"].numpy()[0].tolist()[:5] == [0, 0, 0, 0, -1]
    assert dec["part"].numpy()[1].tolist()[:5] == [0, 0, -1, 0, -1]
    assert dec["mask"].shape == (2, 10, 10)
    assert dec["mask"].numpy()[0, 2:9, 2:9].all()
    avg = polygons.average_masks(tf.concat([dec["mask"][:1]] * 3 + [tf.zeros_like(dec["mask"][:1])] * 5, 0))
    assert not avg.numpy().any()


def test_bad_class_is_a_clear_error():
    ex = example(np.random.default_rng(0), (4,))
    ex["class"] = np.int32(300)
    with pytest.raises(tf.errors.InvalidArgumentError, match="class"):
        TASK.build_sequences(ex, 0)


def test_padding_weight_acts_in_training_only():
    """The paper trains the PAD targets after EOS at weight 1 (`segmentation_padding_weight`)."""
    ex = example(np.random.default_rng(5), (6,))
    n_tokens = 2 * 6 + 1
    trained = TASK.build_sequences(ex, 0)["token_weights"].numpy()
    np.testing.assert_array_equal(trained, np.r_[np.zeros(5), np.ones(TASK.max_seq_len - 5)].astype(np.float32))
    plain = TASK.build_sequences(ex, 0, augment=False)["token_weights"].numpy()
    assert plain[5 + n_tokens:].sum() == 0 and plain[5:5 + n_tokens].sum() == n_tokens
    half = get_task("segmentation", dataclasses.replace(CFG, segmentation_padding_weight=0.5))
    w = half.build_sequences(ex, 0)["token_weights"].numpy()
    assert np.all(w[5 + n_tokens:] == 0.5) and np.all(w[5:5 + n_tokens] == 1.0)


@pytest.mark.slow
def test_several_instances_per_image_are_one_row_each_and_missing_ones_weigh_nothing():
    rng = np.random.default_rng(6)
    first, second = example(rng, (5,)), example(rng, (4, 3))
    second["box"], second["class"] = np.array([0.5, 0.1, 0.7, 0.3], np.float32), np.int32(7)
    multi = {"boxes": np.stack([first["box"], second["box"]]), "classes": np.array([44, 7], np.int32),
             "polygon_points": np.concatenate([first["polygon_points"], second["polygon_points"]]),
             "polygon_part": np.concatenate([first["polygon_part"], second["polygon_part"]]),
             "polygon_instance": np.array([0] * 5 + [1] * 7, np.int32)}
    assert TASK.sequences_per_image == 10  # the paper's instances per image
    out = TASK.build_image_sequences(multi, 3)
    assert out["input_tokens"].shape == (10, TASK.max_seq_len)
    assert_same({k: v[0] for k, v in out.items()}, TASK.build_sequences(first, 3))
    assert_same({k: v[1] for k, v in out.items()}, TASK.build_sequences(second, 3))
    assert out["token_weights"].numpy()[2:].sum() == 0
    graph = tf.function(TASK.build_image_sequences)(multi, 3)
    assert_same(out, graph)
