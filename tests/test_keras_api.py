"""The Keras surface (docs/KERAS.md): from_preset, examples_dataset, compile/fit with stock
Keras optimizers and callbacks, .keras and preset round trips, generate == `pix2seq predict`,
mixed precision. A micro-sized model on the session's synthetic COCO data, ingested once."""
import json
import os
import re
import shutil
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

import training_utils
from data.dataset_info import DatasetError
from model import datasets, generate
from model.config import preset
from model.tasks import seq_len
from model.pix2seq_model import Pix2SeqModel

pytestmark = pytest.mark.slow  # ingests, then fits and exports a model

# Small enough to trace fast on CPU; the token interface keeps all four tasks.
MICRO = dict(image_size=32, max_instances=2, max_polygon_points=4, max_caption_len=8, encoder_depth=1,
             decoder_depth=1, encoder_dim=32, decoder_dim=32, encoder_mlp_dim=64, decoder_mlp_dim=64)
TASKS = ("detection", "segmentation", "keypoints", "captioning")
FIT_TASKS = ("detection", "captioning")  # each task's decoder pass adds tracing time


@pytest.fixture(scope="module")
def examples(synth_coco_dir, tmp_path_factory):
    from components.beam_ingest import ingest

    work = str(tmp_path_factory.mktemp("keras_ingest"))
    out, summary = ingest(synth_coco_dir, work, caption_vocab_size=64)
    assert summary["dropped"] == 0
    # The same files and vocabulary size again: the earlier ingestion is kept (no summary).
    assert ingest(synth_coco_dir, work, caption_vocab_size=64, reuse=True) == (out, None)
    return out


@pytest.fixture(scope="module")
def val_files(synth_coco_dir):
    with open(os.path.join(synth_coco_dir, "annotations", "instances_val.json")) as f:
        images = json.load(f)["images"]
    return [os.path.join(synth_coco_dir, "images", "val", im["file_name"]) for im in images[:2]]


def batches(config, tasks, count, batch_size=2, offset=0):
    """`count` deterministic random `{task: batch}` elements (tests/training_utils.py): no
    input pipeline to build, so fitting traces only the model."""
    return tf.data.Dataset.range(offset, offset + count).map(
        lambda step: training_utils.global_batch(config, tasks, step, batch_size))


@pytest.fixture(scope="module")
def trained(examples, tmp_path_factory):
    """A micro model (sized for the ingested data) fit for 2 epochs of 1 step with Adam + a
    Keras schedule and the three callbacks, validated on 2 batches."""
    out = tmp_path_factory.mktemp("keras_fit")
    keras.utils.set_random_seed(0)
    model = Pix2SeqModel.from_preset("tiny", examples=examples, **MICRO)
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, 2)))
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=5)
    val = batches(model.config, FIT_TASKS, 2, offset=100)
    history = model.fit(batches(model.config, FIT_TASKS, 2).repeat(), validation_data=val, epochs=2,
                        steps_per_epoch=1, verbose=0, callbacks=[
                            keras.callbacks.ModelCheckpoint(str(out / "best.keras"), monitor="val_loss",
                                                            save_best_only=True),
                            keras.callbacks.TensorBoard(str(out / "logs")), stop])
    return SimpleNamespace(model=model, history=history.history, out=out, stop=stop, val=val)


def test_from_preset_names_overrides_and_errors(tmp_path):
    shrink = dict(encoder_depth=1, decoder_depth=1, image_size=64, caption_vocab_size=16)
    for name in ("tiny", "small", "base", "large"):
        model = Pix2SeqModel.from_preset(name, **shrink)
        expected = preset(name, **shrink)
        assert model.built and model.config == expected and model.config.name == name
        assert model.config.encoder_dim == preset(name).encoder_dim and model.config.encoder_depth == 1
    with pytest.raises(ValueError, match=r"Unknown preset 'huge'.*'tiny', 'small', 'base', 'large'"):
        Pix2SeqModel.from_preset("huge")
    with pytest.raises(TypeError):
        Pix2SeqModel.from_preset("tiny", no_such_field=1)
    model = Pix2SeqModel.from_preset("tiny", **MICRO)
    model.save_to_preset(str(tmp_path))
    again = Pix2SeqModel.from_preset(str(tmp_path))
    assert again.config == model.config and again.task_weights == model.task_weights
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="no overrides"):
        Pix2SeqModel.from_preset(str(tmp_path), encoder_depth=2)


def test_from_preset_sizes_the_model_for_the_data(examples):
    info = datasets.dataset_info(examples)
    model = Pix2SeqModel.from_preset("tiny", examples=examples, **MICRO)
    assert model.config.tokens.caption_vocab_size == info["caption_vocab_size"] != preset("tiny").tokens.caption_vocab_size
    assert model.caption_vocab_file == datasets.caption_model_file(examples)


def test_examples_dataset_tasks_batches_and_errors(examples, tmp_path):
    config = preset("tiny", **MICRO, caption_vocab_size=64)
    tokens = config.tokens
    with pytest.raises(ValueError, match="per-task batch sizes need mixing='batch'"):
        datasets.examples_dataset(examples, config, batch_size={"detection": 2}, mixing="data")
    with pytest.raises(FileNotFoundError, match="not an ingested Examples directory"):
        datasets.examples_dataset(str(tmp_path), config)
    # A dataset that only supports detection: tasks default to it, asking for more is an error.
    only = tmp_path / "only_detection"
    shutil.copytree(examples, only)
    info = json.loads((only / "dataset_info.json").read_text())
    (only / "dataset_info.json").write_text(json.dumps({**info, "tasks": ["detection"]}))
    with pytest.raises(DatasetError, match="captioning"):
        datasets.examples_dataset(str(only), config, tasks=["captioning"])
    batch = next(iter(datasets.examples_dataset(str(only), config, batch_size={"detection": 3}, augment=False)))
    assert set(batch) == {"detection"}  # by default, the tasks the data supports
    assert batch["detection"]["image"].shape == (3, 32, 32, 3)
    assert batch["detection"]["input_tokens"].shape == (3, seq_len("detection", tokens))
    mixed = datasets.examples_dataset(str(only), config, batch_size=4, mixing="data")  # specs only: cheap
    assert mixed.element_spec["task_id"].shape == (4,)
    assert mixed.element_spec["input_tokens"].shape == (4, seq_len("detection", tokens))


def test_fit_with_stock_optimizer_schedule_and_callbacks(trained):
    history = trained.history
    for key in ["loss"] + [f"{t}_loss" for t in FIT_TASKS]:
        assert len(history[key]) == 2 and np.all(np.isfinite(history[key])), key
        assert len(history[f"val_{key}"]) == 2 and np.all(np.isfinite(history[f"val_{key}"])), key
    # val_loss is the task-weighted sum of the per-task validation losses.
    weights = trained.model.task_weights
    expected = sum(weights[t] * history[f"val_{t}_loss"][-1] for t in FIT_TASKS)
    assert history["val_loss"][-1] == pytest.approx(expected, rel=1e-4)
    assert trained.stop.best == min(history["val_loss"])
    best = keras.saving.load_model(str(trained.out / "best.keras"))
    assert isinstance(best, Pix2SeqModel) and isinstance(best.optimizer, keras.optimizers.Adam)
    assert any(name.startswith("events") for _, _, files in os.walk(trained.out / "logs") for name in files)


def test_keras_file_round_trip_predicts_the_same(trained, tmp_path, val_files):
    model = trained.model
    path = str(tmp_path / "run.keras")
    model.save(path)
    again = keras.saving.load_model(path)
    assert again.config == model.config and again.optimizer.iterations.numpy() == 2
    batch = next(iter(trained.val))["detection"]
    np.testing.assert_array_equal(model(batch).numpy(), again(batch).numpy())
    for a, b in zip(model.optimizer.variables, again.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with open(again.caption_vocab_file, "rb") as a, open(model.caption_vocab_file, "rb") as b:
        assert a.read() == b.read()  # the caption vocabulary travels inside the .keras file
    assert model.generate(val_files, task="detect") == again.generate(val_files, task="detect")


def _same(a, b, path="result"):
    """Results equal up to float rounding (eager vs. SavedModel graph)."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-4), path
    else:
        assert a == b, path


def test_generate_equals_pix2seq_predict(trained, tmp_path, val_files):
    from model.export import export_saved_model
    from pix2seq import predict_cli

    export_dir = export_saved_model(trained.model, str(tmp_path / "export"),
                                    signatures=["detect_and_describe", "detect_with_options"],
                                    warmup_batch_sizes=())
    backend = predict_cli.SavedModelBackend(export_dir)
    for task, options in (("all", {}), ("detect", {"max_objects": 1, "temperature": 0.0})):
        unset = {name: None for name in generate.OPTION_NAMES}
        args = SimpleNamespace(task=task, images=val_files, json_out=None, viz=None, annotations=None,
                               min_score=0.0, person_class=1, **{**unset, **options})
        expected = predict_cli.run(backend, args)
        _same(trained.model.generate(val_files, task=task, person_class=1, **options), expected)
    # Pixels (a decoded tensor batch) give the results of their files.
    pixels = tf.stack([tf.io.decode_jpeg(tf.io.read_file(f), channels=3) for f in val_files[:1]])
    from_pixels = trained.model.generate(pixels, task="all")
    from_files = trained.model.generate(val_files[:1], task="all")
    _same(from_pixels, [{k: v for k, v in r.items() if k not in ("file", "image_id")} | {"image_id": 1}
                        for r in from_files])
    assert not re.fullmatch(r"[\d ]+", from_files[0]["caption"])  # text (the model's vocabulary), not piece ids
    picture = generate.draw(pixels[0].numpy(), from_pixels[0])
    assert picture.size[0] == pixels.shape[2] and picture.size[1] >= pixels.shape[1]
    with pytest.raises(ValueError, match="Unknown sampling options"):
        trained.model.generate(val_files, task="detect", topp=0.5)


def test_mixed_precision_trains_and_exports_float32(examples, tmp_path, val_files):
    from model.export import export_saved_model

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = Pix2SeqModel.from_preset("tiny", examples=examples, **MICRO)
        assert model.encoder.compute_dtype == "bfloat16" and model.encoder.variable_dtype == "float32"
        model.compile(optimizer=keras.optimizers.AdamW(1e-3))
        history = model.fit(batches(model.config, ["detection"], 2), verbose=0).history
        assert np.all(np.isfinite(history["loss"])) and np.isfinite(history["detection_loss"][-1])
        export_dir = export_saved_model(model, str(tmp_path / "export"), signatures=["detect"],
                                        warmup_batch_sizes=())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    loaded = tf.saved_model.load(export_dir)
    with open(val_files[0], "rb") as f:
        out = loaded.signatures["detect"](images=tf.constant([f.read()]))
    assert out["boxes"].dtype == tf.float32 and out["scores"].dtype == tf.float32
    assert np.all(np.isfinite(out["scores"].numpy()))
