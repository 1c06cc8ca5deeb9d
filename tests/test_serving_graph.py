"""model/serving_graph.py in process: each signature head reports what the task's own
rules say about the tokens it decoded.

The tokens a head decoded are recomputed with the same decode call (same sampler,
seed and grammar: sampling is seeded), then the rules are applied to the logits of a
teacher-forced full pass over them: detection reports the argmax class and its
probability (also where the sampled class token is another class), segmentation
every sample's polygon in pixels in instance-major order. Keypoints: the person score
is the mean of the points' scores (the rule itself is pinned in test_decoding.py and
test_task_keypoints.py).
"""
import numpy as np
import pytest
import tensorflow as tf

import tiny_export
from model import decoding, serving_graph, vocab
from model.config import preset
from model.pix2seq_model import Pix2SeqModel
from test_decoding import biased_output

SIZES = [(100, 150), (200, 120)]


@pytest.fixture(scope="module")
def graph():
    import keras
    keras.utils.set_random_seed(3)
    model = Pix2SeqModel(preset("tiny", **tiny_export.TINY_TOKENS))
    model.build()
    pos = model.decoder.position_embedding  # varied predictions per step (see test_decoding)
    pos.assign(tf.random.stateless_normal(pos.shape, [7, 7]))
    g = serving_graph.InferenceGraph(model)
    images = tf.constant([tiny_export.encoded_image(*SIZES[0], 0, "PNG"), tiny_export.encoded_image(*SIZES[1], 1, "JPEG")])
    return g, images, g.frame(images)


def _full_pass_probs(g, images, prompt, tokens, rows, limit):
    """Softmax over ids below `limit` of the teacher-forced logits at the generated positions."""
    canvas = tf.stack([serving_graph.preprocess.canvas_image(tf.io.decode_image(d, 3, expand_animations=False),
                                                              g.size)[0] for d in images])
    full = g.model({"image": tf.gather(canvas, rows), "input_tokens": tf.concat([prompt, tokens[:, :-1]], 1)})
    return tf.nn.softmax(full[:, prompt.shape[1] - 1:, :limit], axis=-1).numpy()


def test_detect_reports_the_argmax_class_and_its_probability(graph):
    g, images, frame = graph
    task, m = g.detection, g.config.max_instances
    with biased_output(g.model, vocab.CLASS_OFFSET + 5, 4.0):
        got = {k: v.numpy() for k, v in g.detect(frame, m, 1.0, 1.0, 3).items()}
        # the same decode call as the head's
        prompt = task.inference_prompt(2)
        out = decoding.decode(g.model.decoder, frame["cross"], prompt, task.max_response_len,
                              sampler=serving_graph.nucleus_sampler(1.0, 1.0), seed=serving_graph._seed(3, 1),
                              constraint=decoding.task_constraint(task), vocab_limit=task.vocab_limit)
        probs = _full_pass_probs(g, images, prompt, out["tokens"], tf.range(2), task.vocab_limit)
    tokens = out["tokens"].numpy()
    classes = probs[:, 4:5 * m:5, vocab.CLASS_OFFSET + 1:vocab.CLASS_OFFSET + g.config.max_class_id + 1]
    parsed = task.decode(tokens)  # boxes and validity from the tokens alone
    valid = parsed["valid"].numpy()
    want_class = np.where(valid, classes.argmax(-1) + 1, 0)
    want_score = np.where(valid, classes.max(-1), 0.0)
    sampled = np.where(valid, parsed["classes"].numpy(), 0)
    assert np.any(sampled[valid] != want_class[valid])  # the sampled class token differs somewhere
    for b in range(2):
        order = np.argsort(-want_score[b], kind="stable")
        np.testing.assert_array_equal(got["classes"][b], want_class[b][order])
        np.testing.assert_allclose(got["scores"][b], want_score[b][order], rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(got["num_detections"], valid.sum(1))


def test_segment_returns_every_sample_in_pixels_instance_major(graph):
    g, images, frame = graph
    task, p = g.segmentation, g.config.max_polygon_points
    boxes = tf.constant([[[10, 20, 60, 90], [0, 0, 0, 0]], [[30, 10, 150, 100], [5, 5, 50, 40]]], tf.float32)
    classes = tf.constant([[3, 0], [1, 7]], tf.int32)
    got = g.segment(frame, boxes, classes, 3, 1.0, 0.8, 4)
    polygons, parts = got["polygons"].numpy(), got["polygon_parts"].numpy()
    assert polygons.shape == (2, 2, 3, p, 2) and parts.shape == (2, 2, 3, p)
    assert np.all(parts[0, 1] == -1) and np.all(polygons[0, 1] == 0)  # padding instance
    # rows of the head's decode: (image 0, box 0) x 3, (image 1, box 0) x 3, (image 1, box 1) x 3
    scale = frame["canvas_scale"].numpy()
    canvas_boxes = np.clip(np.array([[10, 20, 60, 90], [30, 10, 150, 100], [5, 5, 50, 40]], np.float32)
                           * np.tile(scale[[0, 1, 1]], 2) / g.size, 0, 1)
    prompt = task.inference_prompt(tf.repeat(canvas_boxes, 3, axis=0), tf.repeat([3, 1, 7], 3))
    rows = tf.repeat([0, 1, 1], 3)
    out = decoding.decode(g.model.decoder, decoding.gather_rows(frame["cross"], rows), prompt, task.max_response_len,
                          sampler=serving_graph.nucleus_sampler(1.0, 0.8), seed=serving_graph._seed(4, 2),
                          constraint=decoding.task_constraint(task), vocab_limit=task.vocab_limit)
    want = task.decode(out["tokens"])
    for i, (b, n) in enumerate([(0, 0), (1, 0), (1, 1)]):
        for s in range(3):
            row = 3 * i + s
            np.testing.assert_array_equal(parts[b, n, s], want["part"].numpy()[row])
            pixels = want["points"].numpy()[row] * g.size / scale[b]
            np.testing.assert_allclose(polygons[b, n, s], pixels, rtol=1e-5, atol=1e-3)
    used = parts >= 0
    assert used.any(axis=-1)[[0, 1, 1], [0, 0, 1]].all()
    assert len({polygons[1, 0, s].tobytes() for s in range(3)}) > 1  # samples differ


@pytest.mark.slow
def test_keypoints_report_point_and_person_scores(graph):
    g, images, _ = graph
    boxes = tf.constant([[[10, 20, 60, 90], [0, 0, 0, 0]], [[30, 10, 150, 100], [5, 5, 50, 40]]], tf.float32)
    hw = tf.constant(SIZES, tf.int32)
    got = {k: v.numpy() for k, v in g.keypoints(images, hw, boxes, 1.0, 0.1, 0).items()}
    kp, person = got["keypoints"], got["keypoint_scores"]
    k = g.config.num_keypoints
    assert kp.shape == (2, 2, k, 3) and person.shape == (2, 2)
    assert np.all(kp[0, 1] == 0) and person[0, 1] == 0  # padding person
    real = [(0, 0), (1, 0), (1, 1)]
    for b, n in real:
        np.testing.assert_allclose(person[b, n], kp[b, n, :, 2].mean(), rtol=1e-5)
        assert 0 < person[b, n] <= 1
