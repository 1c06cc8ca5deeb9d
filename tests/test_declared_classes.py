"""Inference names only the classes the dataset declares.

A model early in training (or untrained) may favour a class token no category stands
for: an id of [1, 90] the identity map leaves undeclared, or an index past the end of
a dense class map. The detection task's grammar (what may be sampled) and readout (the
argmax class and its score) both come from `TokenConfig.reportable_classes()`, so the
serving signatures, `model.generate` / `pix2seq predict` and the evaluator all report
declared categories only.
"""
import numpy as np
import pytest
import tensorflow as tf

from data import dataset_info as D
from model import datasets, vocab
from model.tasks import get_task, supported_tasks

DECLARED = (2, 5, 9)  # an identity-map dataset declaring three COCO ids
UNDECLARED = 1        # the class token the logits favour (101)


def _favouring_logits(config, length, favoured):
    """[1, length, V] logits: coordinate tokens at object positions, class token
    100 + `favoured` far above any other class at class positions."""
    logits = np.zeros([1, length, config.vocab_size], np.float32)
    logits[..., vocab.COORD_OFFSET + 500] = 5.0
    logits[..., vocab.CLASS_OFFSET + favoured] = 50.0
    return tf.constant(logits)


@pytest.mark.parametrize("fields, favoured, allowed", [
    (dict(declared_classes=DECLARED), UNDECLARED, set(DECLARED)),
    # a dense map shorter than the class range: indices past its end name no category
    (dict(class_category_ids=(500, 600, 700), max_class_id=90), 50, {1, 2, 3}),
], ids=["identity-map", "dense-map"])
def test_grammar_and_readout_name_declared_classes_only(fields, favoured, allowed):
    config = vocab.TokenConfig(max_instances=3, caption_vocab_size=0, **fields)
    assert set(config.reportable_classes()) == allowed
    task = get_task("detection", config)
    mask = task.grammar_mask(tf.constant(4), tf.constant([1000]))[0].numpy()
    class_tokens = {i - vocab.CLASS_OFFSET for i in np.flatnonzero(mask)}
    assert class_tokens == allowed  # the class position samples declared classes only
    length = task.max_response_len
    tokens = tf.constant([[1500, 1500, 1600, 1600, vocab.CLASS_OFFSET + favoured] * 3 + [0]], tf.int32)
    out = task.decode(tokens, logits=_favouring_logits(config, length, favoured))
    classes = out["classes"].numpy()[0]
    assert out["num_detections"].numpy()[0] == 3 and set(classes) <= allowed
    # its score is a probability under the raw softmax, low when the model favoured another class
    assert np.all(out["scores"].numpy()[0] < 1e-3)
    # without logits the emitted (undeclared) token is no detection
    assert task.decode(tokens)["num_detections"].numpy()[0] == 0


def test_dataset_declares_its_classes_to_the_token_config():
    cats = [{"id": i, "name": f"c{i}"} for i in DECLARED]
    info = D.info_fields(cats, [], supported_tasks)
    assert info["category_ids"] == list(DECLARED) and info["class_category_ids"] == []
    assert datasets.dataset_token_fields(info) == {"declared_classes": DECLARED}
    dense = D.info_fields([{"id": 500}, {"id": 700}], [], supported_tasks)
    assert datasets.dataset_token_fields(dense) == {"class_category_ids": (500, 700), "max_class_id": 2}
    assert vocab.TokenConfig(class_category_ids=(500, 700), max_class_id=2).reportable_classes() == (1, 2)
    with pytest.raises(ValueError, match="declared_classes"):
        vocab.TokenConfig(class_category_ids=(500, 700), max_class_id=90, declared_classes=(3,))


KEYPOINT_CLASS = 5  # the declared class whose detections get keypoints (not COCO's person 1)


@pytest.fixture(scope="module")
def favouring_model(tmp_path_factory):
    """A micro random model for detection + 3-point keypoints whose output bias favours
    class token 101 (undeclared), then 105 (declared, the keypoint class), and never
    ends early; and its export (the plain detect and keypoints signatures and model_info,
    no warm-up: what the tests call, traced in less time)."""
    import keras

    from model import export
    from model.config import preset
    from model.pix2seq_model import Pix2SeqModel
    from own_datasets import MICRO

    keras.utils.set_random_seed(0)
    model = Pix2SeqModel(preset("tiny", **MICRO, caption_vocab_size=0, declared_classes=DECLARED,
                                person_class_id=KEYPOINT_CLASS, num_keypoints=3, keypoint_flip_pairs=()))
    model.build()
    bias = np.zeros(model.decoder.output_bias.shape, np.float32)
    bias[vocab.EOS] = -30.0  # every object slot is filled
    bias[vocab.CLASS_OFFSET + UNDECLARED] = 30.0
    bias[vocab.CLASS_OFFSET + KEYPOINT_CLASS] = 20.0
    model.decoder.output_bias.assign(bias)
    out = str(tmp_path_factory.mktemp("favouring") / "export")
    export.export_saved_model(model, out, signatures=["detect", "keypoints", "model_info"],
                              tasks=["detection", "keypoints"], warmup_batch_sizes=())
    return model, out


def _image_files(tmp_path):
    from tiny_export import encoded_image

    paths = []
    for i, (h, w, fmt) in enumerate([(40, 60, "PNG"), (64, 48, "JPEG")]):
        paths.append(str(tmp_path / f"{i + 1}.{fmt.lower()}"))
        with open(paths[-1], "wb") as f:
            f.write(encoded_image(h, w, i + 1, fmt))
    return paths


@pytest.mark.slow
def test_model_favouring_an_undeclared_class_reports_declared_ids(favouring_model, tmp_path):
    """Every detection the exported SavedModel and `model.generate` report is a declared
    id, and the two agree."""
    from model import generate

    model, export_dir = favouring_model
    images = [open(p, "rb").read() for p in _image_files(tmp_path)]
    results = model.generate(images, task="detect")  # per-image results, through model/results.py
    assert results and all(o["category_id"] in DECLARED for r in results for o in r["objects"])
    in_process = generate.backend_for(model).predict("detect", images)
    served = tf.saved_model.load(export_dir).signatures["detect"](images=tf.constant(images))
    classes = served["classes"].numpy()
    assert served["num_detections"].numpy().tolist() == [model.config.tokens.max_instances] * 2
    assert set(classes.ravel().tolist()) <= set(DECLARED)
    for key, value in served.items():
        np.testing.assert_allclose(value.numpy(), in_process[key], rtol=1e-4, atol=1e-4, err_msg=key)
    info = tf.saved_model.load(export_dir).signatures["model_info"]()
    assert int(info["keypoint_category_id"]) == KEYPOINT_CLASS
    assert info["category_ids"].numpy().tolist() == list(DECLARED)


@pytest.mark.slow
def test_predict_over_grpc_uses_the_served_keypoint_category(favouring_model, tmp_path):
    """`pix2seq predict --server --task keypoints` without --person-class decodes keypoints
    for the served model's keypoint category (its model_info signature over real gRPC)."""
    import json
    import os

    import portpicker

    from pix2seq import cli
    from serving.server import ModelServer, ServerConfig
    from test_own_dataset import _predict

    _, export_dir = favouring_model
    images = _image_files(tmp_path)
    base = tmp_path / "serving"
    base.mkdir()
    os.symlink(export_dir, base / "1")
    config = ServerConfig(str(base), host="127.0.0.1", port=portpicker.pick_unused_port(), poll_seconds=0)
    with ModelServer(config) as server:
        served = _predict(cli, ["--server", server.address], images, str(tmp_path / "served.json"), "keypoints")
    with open(tmp_path / "served_bbox.json") as f:
        boxes = json.load(f)
    # every detection is of the keypoint class and gets its 3 points (with the old default,
    # person 1, none would)
    assert served and len(served) == len(boxes) and {d["category_id"] for d in boxes} == {KEYPOINT_CLASS}
    assert all(p["category_id"] == KEYPOINT_CLASS and len(p["keypoints"]) == 9 for p in served)
