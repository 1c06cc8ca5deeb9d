"""Cached decoding is exact and its early stop and grammar are sound.

* greedy tokens of the K/V-cached while_loop == the reference loop that recomputes
  every key/value each step == a teacher-forced full pass over the emitted sequence;
* stopping each row at its end token == running every row to the limit, then
  cutting after the first end token;
* one encoding serves many prompts (`gather_rows`) with the same tokens as decoding
  each image on its own;
* computing logits only below `vocab_limit` emits exactly the tokens of the full
  vocabulary under a detection / keypoint grammar (and matches the reference loop's
  option, tokens and scores);
* with random weights, 100 sampled outputs per task (detection, segmentation,
  keypoints) all parse into well-formed predictions;
* a task's per-step readout written inside the loop equals its rule applied to the
  logits of a teacher-forced full pass: detection reports the argmax class and its
  probability although the sampled class token differs, keypoints score tokens with
  the invisible token suppressed.
"""
import contextlib

import numpy as np
import pytest
import tensorflow as tf

import reference_decoding
from model import decoding, sampling, vocab
from model.config import preset
from model.pix2seq_model import Pix2SeqModel
from model.tasks.detection import DetectionTask
from model.tasks.keypoints import KeypointTask
from model.tasks.segmentation import SegmentationTask


@pytest.fixture(scope="module")
def tiny():
    keras_seed = 1234
    import keras
    keras.utils.set_random_seed(keras_seed)
    config = preset("tiny")
    model = Pix2SeqModel(config)
    model.build()
    # Random weights as initialized make greedy decoding repeat one token; larger random
    # positions make every step's prediction differ, so equal tokens mean something.
    pos = model.decoder.position_embedding
    pos.assign(tf.random.stateless_normal(pos.shape, [7, 7]))
    images = tf.random.stateless_uniform([3, config.image_size, config.image_size, 3], [4, 2])
    return model, config, images


def _greedy_cached(model, images, prompt, n, **kw):
    return decoding.generate(model, images, prompt, n, stop_at_end=False, **kw)


@pytest.mark.slow
def test_cached_greedy_equals_reference_and_full_pass(tiny):
    model, config, images = tiny
    prompt = DetectionTask(config.tokens).inference_prompt(3)
    n = 30
    ours = _greedy_cached(model, images, prompt, n)
    memory = model.encode(images)
    ref = reference_decoding.reference_decode(model.decoder, memory, prompt, n)
    tokens = ours["tokens"].numpy()
    np.testing.assert_array_equal(decoding.truncate_after_end(tokens, 0).numpy(), ref["tokens"].numpy())
    np.testing.assert_allclose(ours["scores"].numpy()[ref["tokens"].numpy() > 0],
                               ref["scores"].numpy()[ref["tokens"].numpy() > 0], rtol=1e-4, atol=1e-6)
    # Teacher-forced full pass over prompt + emitted tokens: argmax reproduces each token.
    full = model({"image": images, "input_tokens": tf.concat([prompt, tokens[:, :-1]], 1)})
    np.testing.assert_array_equal(tf.argmax(full, -1, output_type=tf.int32).numpy(), tokens)
    assert len(set(tokens.ravel())) > 10  # not a degenerate constant sequence


@pytest.mark.slow
def test_cached_equals_full_pass_with_a_long_prompt(tiny):
    model, config, images = tiny
    task = SegmentationTask(config.tokens)
    prompt = task.inference_prompt(tf.constant([[0.1, 0.2, 0.6, 0.7]] * 3), tf.constant([1, 5, 9]))
    ours = _greedy_cached(model, images, prompt, 12)["tokens"]
    full = model({"image": images, "input_tokens": tf.concat([prompt, ours[:, :-1]], 1)})
    np.testing.assert_array_equal(tf.argmax(full[:, 5:], -1, output_type=tf.int32).numpy(), ours.numpy())
    ref = reference_decoding.reference_decode(model.decoder, model.encode(images), prompt, 12)["tokens"]
    np.testing.assert_array_equal(decoding.truncate_after_end(ours, 0).numpy(), ref.numpy())


@pytest.mark.slow
def test_cached_equals_reference_with_prompt_constraint_and_sampling(tiny):
    model, config, images = tiny
    task = DetectionTask(config.tokens)
    constraint = decoding.task_constraint(task)
    sampler = sampling.TopPSampler(p=0.9)
    prompt = task.inference_prompt(3)
    ours = decoding.generate(model, images, prompt, 20, sampler=sampler, seed=[3, 4], constraint=constraint)
    ref = reference_decoding.reference_decode(
        model.decoder, model.encode(images), prompt, 20, sampler=sampler, seed=[3, 4], constraint=constraint)
    np.testing.assert_array_equal(ours["tokens"].numpy(), ref["tokens"].numpy())


@contextlib.contextmanager
def biased_output(model, token, amount):
    """Add `amount` to one token's output bias for the duration of a test."""
    bias = model.decoder.output_bias
    saved = bias.numpy()
    bias.assign(saved + np.eye(1, saved.shape[0], token, dtype=np.float32)[0] * amount)
    try:
        yield
    finally:
        bias.assign(saved)


@pytest.fixture()
def eos_biased(tiny):
    """Make the end token likely, so sampled rows end after different numbers of objects."""
    with biased_output(tiny[0], vocab.EOS, 9.0):
        yield tiny


@pytest.mark.slow
def test_per_row_early_stop_equals_running_to_max_length(eos_biased):
    model, config, images = eos_biased
    task = DetectionTask(config.tokens)
    rows = tf.repeat(tf.range(3), 8)  # 24 prompts, 3 encodings
    prompt = task.inference_prompt(24)
    n = task.max_response_len
    kw = dict(rows=rows, sampler=sampling.TopPSampler(p=0.95), seed=[11, 5],
              constraint=decoding.task_constraint(task))
    early = decoding.generate(model, images, prompt, n, stop_at_end=True, **kw)
    full = decoding.generate(model, images, prompt, n, stop_at_end=False, **kw)
    cut = decoding.truncate_after_end(full["tokens"], vocab.EOS).numpy()
    np.testing.assert_array_equal(early["tokens"].numpy(), cut)
    lengths = early["lengths"].numpy()
    assert len(set(lengths)) > 2, lengths  # rows really ended at different steps
    assert int(early["steps"]) == lengths.max() < n  # loop ended when the last row did
    assert int(full["steps"]) == n
    after = np.arange(n)[None, :] >= lengths[:, None]
    assert np.all(early["scores"].numpy()[after] == 0.0)
    assert np.all(early["scores"].numpy()[~after] > 0.0)


@pytest.mark.slow
def test_encode_once_decode_many_matches_per_image_decoding(tiny):
    model, config, images = tiny
    prompt = tf.constant([[vocab.DETECTION_PROMPT]] * 5)
    rows = tf.constant([2, 0, 1, 2, 0])
    many = decoding.generate(model, images, prompt, 12, rows=rows)["tokens"].numpy()
    for i, r in enumerate(rows.numpy()):
        single = decoding.generate(model, images[r:r + 1], prompt[:1], 12)["tokens"].numpy()
        np.testing.assert_array_equal(many[i], single[0])


@pytest.mark.slow
def test_100_sampled_detections_parse(tiny):
    model, config, images = tiny
    task = DetectionTask(config.tokens)
    rows = tf.repeat(tf.range(3), 34)[:100]
    out = decoding.generate(model, images, task.inference_prompt(100), task.max_response_len,
                            rows=rows, sampler=sampling.RandomSampler(temperature=1.5), seed=[1, 9],
                            constraint=decoding.task_constraint(task))
    tokens = out["tokens"].numpy()
    parsed = task.decode(tokens)
    lengths = out["lengths"].numpy()
    ended = np.any(tokens == vocab.EOS, axis=1)
    num_objects = np.where(ended, (lengths - 1) // 5, lengths // 5)
    np.testing.assert_array_equal(parsed["num_detections"].numpy(), num_objects)
    assert np.all(np.where(ended, (lengths - 1) % 5, 0) == 0)  # EOS only where an object may start
    valid = parsed["valid"].numpy()
    classes = parsed["classes"].numpy()[valid]
    assert classes.size > 0 and np.all((classes >= 1) & (classes <= config.tokens.max_class_id))
    boxes = parsed["boxes"].numpy()[valid]
    assert np.all((boxes >= 0) & (boxes <= 1))


def _random_boxes(n, seed):
    corners = tf.sort(tf.random.stateless_uniform([n, 2, 2], [seed, 1]), axis=1)  # (min, max) per axis
    return tf.reshape(tf.transpose(corners, [0, 2, 1]), [n, 4])  # ymin xmin ymax xmax


def _sample_100(model, images, task, prompt, seed, **kw):
    rows = tf.repeat(tf.range(3), 34)[:100]
    return decoding.generate(model, images, prompt, task.max_response_len, rows=rows,
                             sampler=sampling.RandomSampler(temperature=1.5), seed=seed,
                             constraint=decoding.task_constraint(task), **kw)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["detection", "keypoints"])
def test_restricted_output_vocabulary_emits_the_full_vocabulary_tokens(tiny, name):
    model, config, images = tiny
    task = DetectionTask(config.tokens) if name == "detection" else KeypointTask(config.tokens)
    prompt = task.inference_prompt(6) if name == "detection" else task.inference_prompt(_random_boxes(6, 3))
    rows = tf.repeat(tf.range(3), 2)
    limit = vocab.COORD_OFFSET + config.tokens.num_bins
    assert limit < config.tokens.vocab_size
    n = min(task.max_response_len, 30)
    for sampler in (sampling.GreedySampler(), sampling.TopPSampler(p=0.9, temperature=1.5)):
        kw = dict(rows=rows, sampler=sampler, seed=[5, 6], constraint=decoding.task_constraint(task))
        full = decoding.generate(model, images, prompt, n, **kw)
        cut = decoding.generate(model, images, prompt, n, vocab_limit=limit, **kw)
        np.testing.assert_array_equal(cut["tokens"].numpy(), full["tokens"].numpy())
        np.testing.assert_array_equal(cut["lengths"].numpy(), full["lengths"].numpy())
        # Scores are probabilities among fewer ids: never lower, zero exactly where padding.
        emitted = full["scores"].numpy() > 0
        np.testing.assert_array_equal(cut["scores"].numpy() > 0, emitted)
        assert np.all(cut["scores"].numpy()[emitted] >= full["scores"].numpy()[emitted] * (1 - 1e-5))
        # The reference loop with the same option: same tokens and scores.
        memory = tf.gather(model.encode(images), rows)
        ref = reference_decoding.reference_decode(
            model.decoder, memory, prompt, n, sampler=sampler, seed=[5, 6],
            constraint=decoding.task_constraint(task), vocab_limit=limit)
        np.testing.assert_array_equal(cut["tokens"].numpy(), ref["tokens"].numpy())
        np.testing.assert_allclose(cut["scores"].numpy(), ref["scores"].numpy(), rtol=1e-4, atol=1e-6)
    assert len(set(full["tokens"].numpy().ravel())) > 5


@pytest.mark.slow
def test_100_sampled_segmentations_parse(tiny):
    model, config, images = tiny
    task = SegmentationTask(config.tokens)
    classes = tf.random.stateless_uniform([100], [2, 2], 1, config.tokens.max_class_id + 1, tf.int32)
    prompt = task.inference_prompt(_random_boxes(100, 5), classes)
    out = _sample_100(model, images, task, prompt, [4, 4], vocab_limit=vocab.COORD_OFFSET + config.tokens.num_bins)
    tokens, lengths = out["tokens"].numpy(), out["lengths"].numpy()
    parsed = task.decode(tokens)
    points, part = parsed["points"].numpy(), parsed["part"].numpy()
    coord = (tokens >= vocab.COORD_OFFSET) & (tokens < vocab.COORD_OFFSET + config.tokens.num_bins)
    ends = set()
    for row in range(100):
        body = tokens[row, :lengths[row]]
        if body[-1] == vocab.EOS:
            body = body[:-1]
            ends.add(len(body))
        assert len(body) % 2 == 0 and not np.any(body == vocab.EOS)
        pairs = body.reshape(-1, 2)
        is_point = coord[row, :len(body)].reshape(-1, 2).all(axis=1)
        is_sep = (pairs == vocab.SEPARATOR).all(axis=1)
        assert np.all(is_point | is_sep) and is_point[0]  # every pair is a point or `40 40`
        assert not np.any(is_sep[1:] & is_sep[:-1])  # no empty part in the middle
        # decode: one row per pair; a point's part counts the separators before it, other rows -1.
        expected = np.full(part.shape[1], -1)
        expected[:len(pairs)][is_point] = np.cumsum(is_sep)[is_point]
        np.testing.assert_array_equal(part[row], expected)
        used = expected >= 0
        assert np.all((points[row][used] >= 0) & (points[row][used] <= 1)) and np.all(points[row][~used] == 0)
    assert len(ends) > 3  # sampled polygons have different lengths


@pytest.fixture()
def invisible_biased(tiny):
    """Make the invisible token compete with the ~1000 coordinates, so both kinds of pairs occur."""
    with biased_output(tiny[0], vocab.INVISIBLE, 6.0):
        yield tiny


def test_100_sampled_keypoints_parse(invisible_biased):
    model, config, images = invisible_biased
    task = KeypointTask(config.tokens)
    k = config.tokens.num_keypoints
    out = _sample_100(model, images, task, task.inference_prompt(_random_boxes(100, 7)), [8, 1],
                      vocab_limit=vocab.COORD_OFFSET + config.tokens.num_bins)
    tokens = out["tokens"].numpy()
    np.testing.assert_array_equal(out["lengths"].numpy(), 2 * k + 1)
    assert np.all(tokens[:, 2 * k] == vocab.EOS)
    pairs = tokens[:, :2 * k].reshape(100, k, 2)
    coord = (pairs >= vocab.COORD_OFFSET) & (pairs < vocab.COORD_OFFSET + config.tokens.num_bins)
    invisible = pairs == vocab.INVISIBLE
    assert np.all(coord.all(-1) | invisible.all(-1))  # a pair is two coordinates or `41 41`
    parsed = task.decode(tokens)
    np.testing.assert_array_equal(parsed["visible"].numpy(), coord.all(-1))
    assert 0 < parsed["visible"].numpy().mean() < 1
    yx = parsed["keypoints"].numpy()
    assert np.all((yx >= 0) & (yx <= 1))
    np.testing.assert_array_equal(yx[~parsed["visible"].numpy()], 0.0)


@pytest.mark.slow
def test_decoding_compiles_under_tf_function(tiny):
    model, config, images = tiny
    task = DetectionTask(config.tokens)
    cross = decoding.encode_for_decoding(model, images)
    kw = dict(sampler=sampling.TopPSampler(p=0.4), seed=[2, 2], constraint=decoding.task_constraint(task))

    @tf.function
    def graph_decode(cross):
        return decoding.decode(model.decoder, cross, task.inference_prompt(3), 16, **kw)["tokens"]

    eager = decoding.decode(model.decoder, cross, task.inference_prompt(3), 16, **kw)["tokens"]
    np.testing.assert_array_equal(graph_decode(cross).numpy(), eager.numpy())


def _full_pass_logits(model, images, prompt, tokens, rows=None, limit=None):
    """Teacher-forced logits [B, T, V] at the generated positions (ids below `limit`)."""
    if rows is not None:
        images = tf.gather(images, rows)
    full = model({"image": images, "input_tokens": tf.concat([prompt, tokens[:, :-1]], 1)})
    full = full[:, prompt.shape[1] - 1:]
    return full[..., :limit] if limit else full


@pytest.fixture()
def class_biased(tiny):
    """Make class 5 the argmax at every class position while sampling still picks others."""
    with biased_output(tiny[0], vocab.CLASS_OFFSET + 5, 4.0):
        yield tiny


@pytest.mark.slow
def test_detection_reports_the_argmax_class_and_its_probability(class_biased):
    """The loop's readout follows the paper's rule on the logits of a full pass, and the
    decoded class is that argmax (with its probability as score) even where the sampled
    class token is another one."""
    model, config, images = class_biased
    task = DetectionTask(config.tokens)
    limit = vocab.COORD_OFFSET + config.tokens.num_bins
    rows = tf.repeat(tf.range(3), 4)
    prompt = task.inference_prompt(12)
    out = decoding.generate(model, images, prompt, task.max_response_len, rows=rows,
                            sampler=sampling.TopPSampler(p=1.0), seed=[7, 7], vocab_limit=limit,
                            constraint=decoding.task_constraint(task), readout=decoding.task_readout(task))
    tokens = out["tokens"]
    logits = _full_pass_logits(model, images, prompt, tokens, rows, limit).numpy()
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    lengths = out["lengths"].numpy()
    class_pos = np.arange(tokens.shape[1]) % 5 == 4
    for name in ("class_id", "class_prob"):
        got = out["readout"][name].numpy()
        emitted = np.arange(tokens.shape[1])[None] < lengths[:, None]
        assert np.all(got[~(emitted & class_pos[None])] == 0), name  # 0 off class positions and after the end
    in_range = probs[..., vocab.CLASS_OFFSET + 1:vocab.CLASS_OFFSET + config.tokens.max_class_id + 1]
    want_id, want_prob = in_range.argmax(-1) + 1, in_range.max(-1)
    emitted = (np.arange(tokens.shape[1])[None] < lengths[:, None]) & class_pos[None]
    np.testing.assert_array_equal(out["readout"]["class_id"].numpy()[emitted], want_id[emitted])
    np.testing.assert_allclose(out["readout"]["class_prob"].numpy()[emitted], want_prob[emitted], rtol=1e-4)
    # The readout equals the task's own rule applied to the full pass's logits.
    full = task.full_readout(tokens, logits)
    np.testing.assert_array_equal(full["class_id"].numpy()[emitted], want_id[emitted])
    parsed = task.decode(tokens, readout=out["readout"])
    valid = parsed["valid"].numpy()
    assert valid.sum() >= 4
    m = config.tokens.max_instances
    objects = min(m, tokens.shape[1] // 5)
    sampled = vocab.token_to_class(tokens[:, 4:5 * objects:5]).numpy()
    reported, scores = parsed["classes"].numpy()[:, :objects], parsed["scores"].numpy()[:, :objects]
    valid = valid[:, :objects]
    np.testing.assert_array_equal(reported[valid], want_id[:, 4::5][:, :objects][valid])
    np.testing.assert_allclose(scores[valid], want_prob[:, 4::5][:, :objects][valid], rtol=1e-4)
    assert np.mean(reported[valid] == 5) > 0.5  # the biased class is the usual argmax ...
    assert np.any(sampled[valid] != reported[valid])  # ... while sampling also chose others
    assert np.all(scores[valid] < 1)


def test_keypoint_readout_scores_with_the_invisible_token_suppressed(invisible_biased):
    model, config, images = invisible_biased
    task = KeypointTask(config.tokens, suppress_invisible=True)
    k = config.tokens.num_keypoints
    limit = vocab.COORD_OFFSET + config.tokens.num_bins
    prompt = task.inference_prompt(_random_boxes(3, 2))
    out = decoding.generate(model, images, prompt, task.max_response_len, sampler=sampling.TopPSampler(p=0.9),
                            seed=[2, 5], vocab_limit=limit, constraint=decoding.task_constraint(task),
                            readout=decoding.task_readout(task))
    tokens = out["tokens"].numpy()[:, :2 * k]
    # The bias makes `41` likely: it is emitted and fed back (as in training), then replaced.
    invisible = tokens == vocab.INVISIBLE
    assert invisible.any() and not invisible.all()
    logits = _full_pass_logits(model, images, prompt, out["tokens"], limit=limit).numpy()[:, :2 * k]
    chosen = np.where(invisible, vocab.COORD_OFFSET + logits[..., vocab.COORD_OFFSET:limit].argmax(-1), tokens)
    logits[..., vocab.INVISIBLE] = -np.inf
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    token_prob = np.take_along_axis(probs, chosen[..., None], -1)[..., 0]
    np.testing.assert_array_equal(out["readout"]["coord"].numpy()[:, :2 * k], chosen)
    np.testing.assert_allclose(out["readout"]["coord_prob"].numpy()[:, :2 * k], token_prob, rtol=1e-4)
    parsed = task.decode(out["tokens"], readout=out["readout"])
    np.testing.assert_allclose(parsed["instance_scores"].numpy(), token_prob.mean(-1), rtol=1e-4)
    np.testing.assert_allclose(parsed["scores"].numpy(), token_prob.reshape(3, k, 2).mean(-1), rtol=1e-4)
    yx = vocab.dequantize(chosen.reshape(3, k, 2)).numpy()
    np.testing.assert_allclose(parsed["keypoints"].numpy(), yx, atol=1e-6)  # every point has a location
