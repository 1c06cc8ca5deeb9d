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
from model.tasks import get_task

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
    info = D.info_fields(cats, [])
    assert info["category_ids"] == list(DECLARED) and info["class_category_ids"] == []
    assert datasets.dataset_token_fields(info) == {"declared_classes": DECLARED}
    dense = D.info_fields([{"id": 500}, {"id": 700}], [])
    assert datasets.dataset_token_fields(dense) == {"class_category_ids": (500, 700), "max_class_id": 2}
    assert vocab.TokenConfig(class_category_ids=(500, 700), max_class_id=2).reportable_classes() == (1, 2)
    with pytest.raises(ValueError, match="declared_classes"):
        vocab.TokenConfig(class_category_ids=(500, 700), max_class_id=90, declared_classes=(3,))


def test_model_favouring_an_undeclared_class_reports_declared_ids(tmp_path):
    """A micro random model whose output bias favours class token 101 (undeclared) and
    never ends early: every detection the exported SavedModel and `model.generate`
    report is one of the three declared ids, and the two agree."""
    import keras

    from model import export, generate
    from model.config import preset
    from model.pix2seq_model import Pix2SeqModel
    from test_own_dataset import MICRO
    from tiny_export import encoded_image

    keras.utils.set_random_seed(0)
    model = Pix2SeqModel(preset("tiny", **MICRO, caption_vocab_size=0, declared_classes=DECLARED))
    model.build()
    bias = np.zeros(model.decoder.output_bias.shape, np.float32)
    bias[vocab.EOS] = -30.0  # every object slot is filled
    bias[vocab.CLASS_OFFSET + UNDECLARED] = 30.0
    model.decoder.output_bias.assign(bias)
    images = [encoded_image(40, 60, 1), encoded_image(64, 48, 2, "JPEG")]
    results = model.generate(images, task="detect")  # per-image results, through model/results.py
    assert results and all(o["category_id"] in DECLARED for r in results for o in r["objects"])
    in_process = generate.backend_for(model).predict("detect", images)
    out = export.export_saved_model(model, str(tmp_path / "export"), tasks=["detection"], warmup_batch_sizes=())
    served = tf.saved_model.load(out).signatures["detect"](images=tf.constant(images))
    classes = served["classes"].numpy()
    assert served["num_detections"].numpy().tolist() == [MICRO["max_instances"]] * 2
    assert set(classes.ravel().tolist()) <= set(DECLARED)
    for key, value in served.items():
        np.testing.assert_allclose(value.numpy(), in_process[key], rtol=1e-4, atol=1e-4, err_msg=key)
