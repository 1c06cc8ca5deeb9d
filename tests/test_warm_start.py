"""Warm start (model/warm_start.py): what is loaded, reshaped, skipped or refused."""
import os

import numpy as np
import pytest

from model import official_checkpoint as oc
from model import warm_start
from model.pix2seq_model import Pix2SeqModel
from model.training import TrainConfig, save_model, train
from training_utils import micro_config, random_dataset_fn

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "official_tiny")
TOKENS = np.array([[10, 1200, 1300, 1500, 1600, 101, 0, 0]], np.int32)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The imported official fixture, saved as `pix2seq import-checkpoint` saves it."""
    model, _ = oc.import_checkpoint(FIXTURE, "official-tiny")
    out = str(tmp_path_factory.mktemp("imported"))
    save_model(model, out)
    return model, out


def _built(config):
    model = Pix2SeqModel(config)
    model.build()
    return model


def _logits(model):
    image = np.full([1, 64, 64, 3], 0.5, np.float32)
    return model({"image": image, "input_tokens": TOKENS}).numpy()


@pytest.mark.slow
def test_same_architecture_loads_everything_and_computes_the_same_function(source):
    model, out = source
    target = _built(warm_start.source_config(out))
    report = warm_start.warm_start(target, out)
    assert len(report.loaded) == len(target.weights) and not report.reshaped and not report.skipped
    np.testing.assert_array_equal(_logits(target), _logits(model))


def test_batch_norm_statistics_are_loaded_so_inference_matches_from_step_0():
    """The conv stem's moving mean and variance are not trainable but are what inference uses."""
    config = micro_config(stem="conv", patch_size=4)
    source, target = _built(config), _built(config)
    rng = np.random.default_rng(0)
    for v in source.weights:
        v.assign(rng.normal(size=v.shape).astype(v.dtype) * 0.05 + (5.0 if "moving_variance" in v.path else 0.0))
    statistics = [v for v in target.non_trainable_weights if "moving_" in v.path]
    assert statistics  # the conv stem has BatchNorm
    report = warm_start.copy_weights(source, target)
    assert {warm_start._relative(v) for v in statistics} <= set(report.loaded)
    assert len(report.loaded) == len(target.weights) > len(target.trainable_variables)
    for ours, theirs in zip(target.weights, source.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    image = np.full([1, 32, 32, 3], 0.5, np.float32)
    inputs = {"image": image, "input_tokens": TOKENS}
    np.testing.assert_array_equal(target(inputs, training=False).numpy(), source(inputs, training=False).numpy())


@pytest.mark.slow
def test_a_caption_range_and_longer_positions_are_added_to_a_detection_checkpoint(source):
    model, out = source
    config = warm_start.source_config(out).replace(caption_vocab_size=1000, max_seq_len=80)
    target = _built(config)
    report = warm_start.warm_start(target, out)
    assert sorted(r.split(" ")[0] for r in report.reshaped) == sorted(warm_start.RESIZABLE)
    # The detection vocabulary keeps its logits exactly; the new caption rows are fresh.
    np.testing.assert_allclose(_logits(target)[..., :3000], _logits(model), atol=1e-5, rtol=0)
    assert target.decoder.token_embedding.embeddings.shape == (4000, 32)


@pytest.mark.slow
def test_another_architecture_is_refused_before_anything_changes(source):
    _, out = source
    target = _built(warm_start.source_config(out).replace(decoder_depth=3))
    before = [v.numpy().copy() for v in target.trainable_variables]
    with pytest.raises(warm_start.ArchitectureMismatchError, match="decoder_depth: 2 vs 3"):
        warm_start.warm_start(target, out)
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, target.trainable_variables))


@pytest.mark.slow
def test_project_position_grid_is_an_architecture_difference(source):
    _, out = source
    target = _built(warm_start.source_config(out).replace(sincos_grid="index"))
    with pytest.raises(warm_start.ArchitectureMismatchError, match="sincos_grid"):
        warm_start.warm_start(target, out)


@pytest.mark.slow
def test_training_starts_from_the_warm_start_weights_and_a_resume_does_not_reload_them(tmp_path):
    config = micro_config()
    source = _built(config)
    (tmp_path / "source").mkdir()
    save_model(source, str(tmp_path / "source"))
    reports = []

    def initialize(model):
        reports.append(warm_start.warm_start(model, str(tmp_path / "source")))

    data = random_dataset_fn(config, ["detection"], 2)
    frozen = dict(batch_size=2, learning_rate=0.0, weight_decay=0.0, checkpoint_every=1, seed=7)  # lr 0: weights stay
    first = train(config, TrainConfig(steps=1, **frozen), str(tmp_path / "run"), data, verbose=0,
                  initialize=initialize).model
    assert len(reports) == 1 and len(reports[0].loaded) == len(first.trainable_variables)
    for ours, theirs in zip(first.trainable_variables, source.trainable_variables):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)
    resumed = train(config, TrainConfig(steps=2, **frozen), str(tmp_path / "run"), data, verbose=0,
                    initialize=initialize)
    assert resumed.initial_step == 1 and len(reports) == 1


def test_caption_rows_follow_the_piece_text_when_the_vocabularies_differ():
    source_pieces = ["", "", " ⁇ ", "▁a", "▁b", "▁c", "▁d", "s"]
    target_pieces = ["", "", " ⁇ ", "▁c", "▁a", "▁new", "s"]
    rows = warm_start.caption_row_map(source_pieces, target_pieces)
    assert rows == {3000: 3000, 3001: 3001, 3002: 3002, 3003: 3005, 3004: 3003, 3006: 3007}
    source = _built(micro_config(caption_vocab_size=len(source_pieces)))
    target = _built(micro_config(caption_vocab_size=len(target_pieces)))
    fresh = target.decoder.token_embedding.embeddings.numpy().copy()
    report = warm_start.copy_weights(source, target, rows)
    assert any("remapped: 3 of 4 caption pieces" in r for r in report.reshaped)
    theirs, ours = source.decoder.token_embedding.embeddings.numpy(), target.decoder.token_embedding.embeddings.numpy()
    np.testing.assert_array_equal(ours[:3003], theirs[:3003])  # every non-caption token, pad/EOS/unknown
    for t, s in rows.items():
        np.testing.assert_array_equal(ours[t], theirs[s])
    np.testing.assert_array_equal(ours[3005], fresh[3005])  # "▁new": not in the source, keeps its initial value
    bias_theirs, bias_ours = source.decoder.output_bias.numpy(), target.decoder.output_bias.numpy()
    assert [bias_ours[t] == bias_theirs[s] for t, s in rows.items()] == [True] * len(rows)


def test_warm_start_reads_the_source_caption_vocabulary_next_to_its_weights(tmp_path):
    from model.caption_tokenizer import load_pieces, train_sentencepiece

    spm = {name: train_sentencepiece(texts * 5, str(tmp_path / name), 24) for name, texts in {
        "source": ["a red circle on the left", "two blue squares", "a person and a star"],
        "target": ["a person and a star", "three green crosses", "a red circle on the left"]}.items()}
    assert load_pieces(spm["source"]) != load_pieces(spm["target"])
    config = micro_config(caption_vocab_size=24)
    source = _built(config)
    save_model(source, str(tmp_path))
    os.replace(spm["source"], str(tmp_path / warm_start.CAPTION_MODEL))
    same = warm_start.warm_start(_built(config), str(tmp_path))  # no vocabulary given: rows as they are
    assert not same.reshaped
    target = _built(config)
    report = warm_start.warm_start(target, str(tmp_path), caption_model=spm["target"])
    assert sorted(r.split(" ")[0] for r in report.reshaped) == sorted(warm_start.TOKEN_TABLES)
    rows = warm_start.caption_row_map(load_pieces(str(tmp_path / warm_start.CAPTION_MODEL)),
                                      load_pieces(spm["target"]))
    moved = [(t, s) for t, s in rows.items() if t != s]
    assert moved  # some piece changed its id
    for t, s in moved:
        np.testing.assert_array_equal(target.decoder.token_embedding.embeddings.numpy()[t],
                                      source.decoder.token_embedding.embeddings.numpy()[s])
