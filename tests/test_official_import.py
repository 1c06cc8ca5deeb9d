"""Official checkpoint import: parity with the official model's own outputs, and the error paths.

The fixture (tests/data/official_tiny) was made by the official code itself
(tools/official_fixture.py): a tiny random `encoder_ar_decoder` with the 3,000-token
vocabulary, its checkpoint (AdamW slots included) and what that model computed.
"""
import os

import numpy as np
import pytest
import tensorflow as tf

from data import preprocess
from model import decoding
from model import official_checkpoint as oc
from model.layers import sincos_2d

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "official_tiny")
TOL = 1e-4


@pytest.fixture(scope="module")
def fixture():
    return dict(np.load(f"{FIXTURE}/fixture.npz"))


@pytest.fixture(scope="module")
def imported():
    return oc.import_checkpoint(FIXTURE, "official-tiny")


@pytest.mark.slow
def test_every_variable_is_imported_or_deliberately_dropped(imported):
    model, report = imported
    assert len(report.mapped) == len(model.trainable_variables)
    assert sorted(report.mapped.values()) == sorted(v.path for v in model.trainable_variables)
    assert all(oc.is_dropped(k) for k in report.dropped)
    assert any(k.startswith("optimizer/") for k in report.dropped)  # AdamW slots, not weights


@pytest.mark.slow
def test_encoder_output_and_teacher_forced_logits_match_the_official_model(imported, fixture):
    model, _ = imported
    canvas = fixture["canvas"][None]
    np.testing.assert_allclose(model.encoder(canvas).numpy()[0], fixture["vit_output"], atol=TOL, rtol=0)
    np.testing.assert_allclose(model.encode(canvas).numpy()[0], fixture["memory"], atol=TOL, rtol=0)
    logits = model({"image": canvas, "input_tokens": fixture["tokens"][None]}).numpy()[0]
    np.testing.assert_allclose(logits, fixture["logits"], atol=TOL, rtol=0)


@pytest.mark.slow
def test_greedy_detection_tokens_equal_the_official_ones(imported, fixture):
    model, _ = imported
    expected = fixture["greedy_tokens"]
    assert fixture["greedy_margin"] > 100 * TOL  # the official choices are not near-ties
    out = decoding.generate(model, fixture["canvas"][None], tf.constant([[10]]), len(expected), stop_at_end=False)
    np.testing.assert_array_equal(out["tokens"].numpy()[0], expected)


@pytest.mark.slow
def test_project_positions_do_not_reproduce_the_official_encoder(fixture):
    """The 2*pi grid option is what makes the encoder match (not a loose tolerance)."""
    model, _ = oc.import_checkpoint(FIXTURE, oc.official_config("official-tiny").replace(sincos_grid="index"))
    diff = np.abs(model.encoder(fixture["canvas"][None]).numpy()[0] - fixture["vit_output"]).max()
    assert diff > 100 * TOL


def test_2pi_grid_spans_zero_to_two_pi_with_the_same_channel_layout():
    index, scaled = sincos_2d(4, 4, 8), sincos_2d(4, 4, 8, grid="2pi")
    np.testing.assert_allclose(scaled[0], index[0])  # position (0, 0) is the same
    last_row_y = np.arcsin(scaled[12, 0])  # first y frequency is 1: sin(2*pi) == 0
    assert abs(last_row_y) < 1e-6 and scaled[12, 2] == pytest.approx(1.0)  # cos(2*pi)


@pytest.mark.parametrize("change, message", [
    (dict(decoder_depth=3), "missing in the checkpoint: model/decoder/decoder/dec_layers/2/"),
    (dict(decoder_depth=1), "not used by the model config: model/decoder/decoder/dec_layers/1/"),
    (dict(max_seq_len=80), "shape mismatch: model/decoder/ar_decoder.Sseq_pos_embedding is (64, 32)"),
    (dict(caption_vocab_size=1000), "shape mismatch: model/decoder/ar_decoder.Stoken_embedding is (3000, 32)"),
])
def test_a_config_that_does_not_fit_is_refused_naming_the_variable(change, message):
    config = oc.official_config("official-tiny").replace(**change)
    with pytest.raises(oc.CheckpointMismatchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        oc.import_checkpoint(FIXTURE, config)


def test_project_architecture_without_stem_norm_is_refused():
    with pytest.raises(oc.UnsupportedCheckpointError, match="stem_norm"):
        oc.import_checkpoint(FIXTURE, oc.official_config("official-tiny").replace(stem_norm=False))


def test_resnet_encoder_checkpoints_are_not_supported(tmp_path):
    resnet = tf.Module()
    resnet.kernel = tf.Variable(tf.zeros([7, 7, 3, 8]))
    encoder = tf.Module()
    encoder.resnet = resnet
    model = tf.Module()
    model.encoder = encoder
    prefix = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    with pytest.raises(oc.UnsupportedCheckpointError, match="ResNet"):
        oc.import_checkpoint(prefix, "official-tiny")


def test_unknown_config_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="det-vit-b-640"):
        oc.official_config("vit-huge")


@pytest.mark.slow
def test_official_canvas_style_reproduces_the_official_eval_preprocessing(fixture):
    image = tf.io.decode_png(fixture["image_png"].tobytes(), channels=3)
    style = oc.official_config("official-tiny").canvas_style()
    canvas, _ = preprocess.canvas_image(image, 64, style)
    np.testing.assert_allclose(canvas.numpy(), fixture["canvas"], atol=1e-6, rtol=0)
    project_default, _ = preprocess.canvas_image(image, 64)
    assert np.abs(project_default.numpy() - fixture["canvas"]).max() == pytest.approx(0.3)


@pytest.mark.slow
def test_import_checkpoint_cli_converts_the_fixture_and_the_export_detects(tmp_path, fixture, capsys):
    from model.training import load_model
    from pix2seq import cli

    out, export = tmp_path / "imported", tmp_path / "export"
    assert cli.main(["import-checkpoint", "--official", FIXTURE, "--config", "official-tiny", "--out", str(out),
                     "--export", str(export)]) == 0
    assert "105 variables imported, 214 training-state entries dropped" in capsys.readouterr().out
    reloaded = load_model(str(out))
    np.testing.assert_allclose(reloaded.encoder(fixture["canvas"][None]).numpy()[0], fixture["vit_output"],
                               atol=TOL, rtol=0)
    served = tf.saved_model.load(str(export))
    image = tf.constant([fixture["image_png"].tobytes()])
    answer = served.signatures["detect"](images=image)
    assert answer["boxes"].shape == (1, 10, 4) and 0 <= int(answer["num_detections"][0]) <= 10
    assert (answer["boxes"].numpy()[..., 2] <= 72.0 + 1e-3).all()  # pixels of the 72 x 120 image
    assert served.signatures["caption"](images=image)["captions"].numpy()[0] == b""  # no caption range


def test_import_checkpoint_cli_says_when_there_is_no_checkpoint(tmp_path):
    from pix2seq import cli

    with pytest.raises(SystemExit, match="no TF checkpoint in directory"):
        cli.main(["import-checkpoint", "--official", str(tmp_path), "--config", "official-tiny",
                  "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
