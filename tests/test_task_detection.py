"""model/tasks/detection.py: sequence building, augmentation, grammar and decoding."""
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings, strategies as st

from model import vocab
from model.tasks import task_names, detection, get_task
from task_test_utils import HALF_BIN, assert_grammar_accepts, assert_same, response_of

CFG = vocab.TokenConfig(max_instances=10, caption_vocab_size=64, max_class_id=90)
TASK = get_task("detection", CFG)
M = CFG.max_instances


def random_example(rng, n, pad=0):
    lo = rng.uniform(0.0, 0.8, (n, 2))
    hi = lo + rng.uniform(0.01, 0.2, (n, 2))
    boxes = np.concatenate([lo, hi], 1).astype(np.float32)
    classes = rng.integers(1, 91, n).astype(np.int32)
    boxes = np.concatenate([boxes, np.zeros((pad, 4), np.float32)])
    classes = np.concatenate([classes, np.zeros(pad, np.int32)])
    return {"boxes": boxes, "classes": classes}


def reference_weights(num_real, augment=True):
    """NumPy reference of DESIGN.md §4's detection weights over the L target positions."""
    w = np.zeros([5 * M + 1], np.float32)
    n = min(num_real, M)
    w[:5 * n] = 1.0
    if augment:
        w[5 * n:5 * M] = np.tile([0, 0, 0, 0, 1], M - n)
        w[5 * M] = 0.1
    else:
        w[5 * n] = 0.1
    return w


def sorted_objects(boxes, classes):
    rows = np.concatenate([np.asarray(classes, np.float32)[:, None], boxes], 1)
    return rows[np.lexsort(rows.T[::-1])]


def test_registry_order_and_errors():
    assert task_names() == ("detection", "segmentation", "keypoints", "captioning")
    assert isinstance(TASK, detection.DetectionTask)
    with pytest.raises(ValueError, match="Unknown task"):
        get_task("panoptic", CFG)
    with pytest.raises(TypeError, match="TokenConfig"):
        detection.DetectionTask({"num_bins": 1000})


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 12), st.integers(0, 3), st.integers(0, 2**31 - 1))
def test_round_trip_ids_and_weights(n, pad, seed):
    ex = random_example(np.random.default_rng(seed), n, pad)
    out = TASK.build_sequences(ex, seed)
    for key in out:
        assert out[key].shape == (TASK.max_seq_len,)
    target, inp = out["target_tokens"].numpy(), out["input_tokens"].numpy()
    np.testing.assert_array_equal(out["token_weights"].numpy(), reference_weights(n))
    # Ids in range: coordinates, real/fake classes, EOS.
    objs_t = target[:5 * M].reshape(M, 5)
    objs_i = inp[1:5 * M + 1].reshape(M, 5)
    assert inp[0] == vocab.DETECTION_PROMPT and target[-1] == vocab.EOS
    assert np.all((objs_t[:, :4] >= 1000) & (objs_t[:, :4] < 2000))
    np.testing.assert_array_equal(objs_t[:, :4], objs_i[:, :4])
    k = min(n, M)
    assert np.all((objs_t[:k, 4] >= 101) & (objs_t[:k, 4] <= 190))
    assert np.all(objs_t[k:, 4] == vocab.FAKE_CLASS)
    assert np.all((objs_i[:, 4] == vocab.FAKE_CLASS) | ((objs_i[:, 4] >= 101) & (objs_i[:, 4] <= 190)))
    # Round trip: the real objects come back (shuffled) within half a bin.
    dec = TASK.decode(response_of(TASK, out))
    valid = dec["valid"].numpy()
    assert valid.sum() == k
    got = sorted_objects(dec["boxes"].numpy()[valid], dec["classes"].numpy()[valid])
    if n <= M:
        want = sorted_objects(ex["boxes"][:n], ex["classes"][:n])
        np.testing.assert_array_equal(got[:, 0], want[:, 0])
        assert np.max(np.abs(got[:, 1:] - want[:, 1:]), initial=0.0) <= HALF_BIN


def test_noise_boxes_are_valid_and_class_corruption_is_half_fake():
    ex = random_example(np.random.default_rng(0), 2)
    task = get_task("detection", vocab.TokenConfig(max_instances=100, caption_vocab_size=64))
    fakes = []
    for seed in range(4):
        out = task.build_sequences(ex, seed)
        objs = out["target_tokens"].numpy()[:500].reshape(100, 5)
        boxes = vocab.dequantize(objs[:, :4]).numpy()
        assert np.all(boxes[:, 2] >= boxes[:, 0]) and np.all(boxes[:, 3] >= boxes[:, 1])
        fakes.append(out["input_tokens"].numpy()[1:501].reshape(100, 5)[:, 4] == vocab.FAKE_CLASS)
    assert 0.4 < np.mean(fakes) < 0.6
    noise, kind = detection.noise_boxes(tf.zeros([0, 4]), 50, 3)
    assert noise.shape == (50, 4) and noise.numpy().min() >= 0 and noise.numpy().max() <= 1
    assert np.all(kind.numpy() == 2)  # no real box: random boxes only


@pytest.mark.slow
def test_noise_boxes_follow_the_papers_mix_and_its_config_fields_act():
    """Duplicate count uniform in {0..num} per sequence, duplicates within `noise_jitter`
    of their box, the rest half shifted / half random, random sizes |N(0, size/2)|."""
    real = tf.constant([[0.2, 0.3, 0.5, 0.7], [0.6, 0.1, 0.9, 0.4]])
    num = 8
    dup_counts, kinds, rand_hw = [], [], []
    for seed in range(300):
        boxes, kind = detection.noise_boxes(real, num, seed)
        boxes, kind = boxes.numpy(), kind.numpy()
        dup_counts.append(int(np.sum(kind == 0)))
        kinds.append(kind)
        rand_hw.append(boxes[kind == 2][:, 2:] - boxes[kind == 2][:, :2])
    counts = np.bincount(dup_counts, minlength=num + 1)
    assert counts.min() >= 10, counts  # every count 0..8 occurs (uniform: ~33 each)
    assert abs(np.mean(dup_counts) - num / 2) < 0.6
    bad = np.concatenate(kinds)[np.concatenate(kinds) > 0]
    assert 0.4 < np.mean(bad == 1) < 0.6
    # Random boxes: |truncated normal| of std 0.5 has mean ~0.37 before clipping to the canvas.
    assert 0.2 < np.mean(np.concatenate(rand_hw)) < 0.4

    def max_dup_offset(jitter):
        worst = 0.0
        for seed in range(100):
            boxes, kind = detection.noise_boxes(real[:1], num, seed, jitter=jitter)
            dup = boxes.numpy()[kind.numpy() == 0]
            size = np.array([0.3, 0.4, 0.3, 0.4])
            worst = max(worst, float(np.max(np.abs(dup - real.numpy()[0]) / size, initial=0.0)))
        return worst

    assert 0.05 < max_dup_offset(0.1) <= 0.1 + 1e-5
    assert max_dup_offset(0.02) <= 0.02 + 1e-5
    small = np.concatenate([
        (lambda b, k: (b[k == 2][:, 2:] - b[k == 2][:, :2]))(*[t.numpy() for t in detection.noise_boxes(
            real, num, seed, random_box_size=0.2)]) for seed in range(50)])
    assert small.max() <= 0.2 + 1e-5 and small.mean() < 0.1


def test_same_seed_same_sequence_eager_equals_function_and_tf_data():
    ex = random_example(np.random.default_rng(1), 4, pad=2)
    a = TASK.build_sequences(ex, 5)
    assert_same(a, TASK.build_sequences(ex, 5))
    assert not np.array_equal(a["target_tokens"].numpy(), TASK.build_sequences(ex, 6)["target_tokens"].numpy())
    assert_same(a, tf.function(TASK.build_sequences)(ex, tf.constant(5)))
    ds = tf.data.Dataset.from_tensors(ex).map(lambda e: TASK.build_sequences(e, 5))
    assert ds.element_spec["target_tokens"].shape == (TASK.max_seq_len,)
    assert_same(a, next(iter(ds)))


def test_padding_rows_crowd_and_empty_boxes_are_dropped():
    ex = random_example(np.random.default_rng(2), 5)
    ex["is_crowd"] = np.array([0, 1, 0, 0, 0], np.int32)
    ex["valid"] = np.array([True, True, True, False, True])
    ex["boxes"][4, 2] = ex["boxes"][4, 0]  # empty box
    out = TASK.build_sequences(ex, 0, augment=False)
    np.testing.assert_array_equal(out["token_weights"].numpy(), reference_weights(2, augment=False))
    dec = TASK.decode(response_of(TASK, out))
    np.testing.assert_array_equal(dec["classes"].numpy()[:2], ex["classes"][[0, 2]])
    assert_grammar_accepts(TASK, response_of(TASK, out)[:12], vocab.DETECTION_PROMPT)


def test_bad_class_id_is_a_clear_error():
    ex = {"boxes": np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), "classes": np.array([95], np.int32)}
    with pytest.raises(tf.errors.InvalidArgumentError, match="classes"):
        TASK.build_sequences(ex, 0)


def test_grammar_mask():
    v = TASK.vocab_size
    mask = lambda step, prev: TASK.grammar_mask(tf.constant(step), tf.constant(prev)).numpy()
    m0 = mask(0, [10])[0]
    assert m0[0] and m0[1000:2000].all() and not m0[101] and m0.sum() == 1001
    m4 = mask(4, [1500])[0]
    assert m4[101:191].all() and m4.sum() == 90 and not m4[vocab.FAKE_CLASS]
    m5 = mask(5, [105])[0]
    assert m5[0] and m5[1000:2000].all()
    assert mask(5 * M, [105])[0].nonzero()[0].tolist() == [0]
    ended = mask(7, [0, 1500])
    assert ended.shape == (2, v) and ended[0].nonzero()[0].tolist() == [0] and ended[1, 1000:2000].all()


def test_decode_with_logits_scores_class_range():
    rng = np.random.default_rng(3)
    ex = random_example(rng, 3)
    resp = response_of(TASK, TASK.build_sequences(ex, 0, augment=False))
    logits = np.zeros([len(resp), TASK.vocab_size], np.float32)
    for i in range(3):
        logits[5 * i + 4, vocab.FAKE_CLASS] = 9.0  # fake class never wins at inference
        logits[5 * i + 4, 100 + 7] = 3.0
    dec = TASK.decode(resp[None], logits[None])
    probs = tf.nn.softmax(logits[4]).numpy()
    np.testing.assert_array_equal(dec["classes"].numpy()[0, :3], [7, 7, 7])
    np.testing.assert_allclose(dec["scores"].numpy()[0, :3], probs[107], rtol=1e-5)
    assert dec["num_detections"].numpy().tolist() == [3]
    assert dec["boxes"].shape == (1, M, 4)
    # The decoding loop's per-step readout (no logits kept) decodes the same; the
    # sampled class token (the real class here) does not matter.
    steps = [TASK.step_readout(t, tf.constant(logits[t:t + 1]), tf.constant(resp[t:t + 1])) for t in range(len(resp))]
    readout = {k: tf.stack([s[k] for s in steps], axis=1) for k in TASK.readout_dtypes}
    assert {k: v.dtype for k, v in readout.items()} == TASK.readout_dtypes
    again = TASK.decode(resp[None], readout=readout)
    for key in ("classes", "scores", "boxes", "valid"):
        np.testing.assert_allclose(again[key].numpy(), dec[key].numpy(), rtol=1e-6, err_msg=key)
    # A sequence cut short by EOS: objects after it are invalid.
    cut = resp.copy()
    cut[5] = 0
    assert TASK.decode(cut)["valid"].numpy().tolist() == [True] + [False] * (M - 1)


@pytest.mark.parametrize("order", ["area", "dist2ori"])
def test_fixed_object_orders(order):
    """`object_order` sorts the real objects of an augmented sequence the same way every time."""
    ex = random_example(np.random.default_rng(3), 6, pad=2)
    task = get_task("detection", vocab.TokenConfig(max_instances=10, caption_vocab_size=64, object_order=order))
    boxes = ex["boxes"][:6]
    if order == "area":
        key = -(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    else:
        key = np.hypot(boxes[:, 0], boxes[:, 1])
    expected = vocab.quantize(tf.constant(boxes[np.argsort(key, kind="stable")]), task.config.num_bins).numpy()
    for seed in (0, 1, 2):
        objects = task.build_sequences(ex, seed)["target_tokens"].numpy()[:30].reshape(6, 5)  # prompt excluded
        np.testing.assert_array_equal(objects[:, :4], expected)


def test_random_object_order_varies_and_bad_order_is_refused():
    ex = random_example(np.random.default_rng(4), 6)
    firsts = {tuple(TASK.build_sequences(ex, s)["target_tokens"].numpy()[:4]) for s in range(8)}
    assert len(firsts) > 1
    with pytest.raises(ValueError, match="object_order"):
        vocab.TokenConfig(object_order="size")
