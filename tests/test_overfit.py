"""Learning test: the tiny preset memorizes 8 synthetic images, all four tasks mixed.

Real data path: `pix2seq synth` images -> ingestion (Beam) -> data/pipelines.py
sequences (unaugmented, so the targets are fixed) -> `training.train` with batch
mixing -> greedy teacher-free decoding through the K/V cache. Every ground-truth box
must come back within one bin with its exact class, and most captions exactly.
"""
import numpy as np
import pytest
import tensorflow as tf

NUM_IMAGES = 8
STEPS = 300


@pytest.fixture(scope="module")
def examples_dir(synth_coco_dir, tmp_path_factory):
    import apache_beam as beam

    from components import beam_ingest

    out = tmp_path_factory.mktemp("overfit_ingest")
    examples = str(out / "examples")
    beam_ingest.run_ingest(
        synth_coco_dir, examples, str(out / "vocab"), str(out / "report"), make_pipeline=beam.Pipeline,
        caption_vocab_size=1000,
    )
    return examples


def _fixed_batches(files, token_config):
    """`{task: batch of the first 8 unaugmented elements}` as numpy."""
    from data import pipelines

    out = {}
    for task in pipelines.TASK_NAMES:
        ds = pipelines.eval_examples(files, task, token_config).take(NUM_IMAGES).batch(NUM_IMAGES)
        out[task] = {k: v.numpy() for k, v in next(iter(ds)).items()}
    return out


def _objects(tokens):
    """Groups of 5 (ymin xmin ymax xmax class) before the first 0."""
    objects = []
    for i in range(0, len(tokens) - 4, 5):
        group = tokens[i : i + 5]
        if 0 in group:
            break
        objects.append(group)
    return objects


def test_train_cli_shows_progress_and_writes_logs_and_checkpoints(examples_dir, tmp_path, capsys):
    from pix2seq import cli

    out = tmp_path / "run"
    argv = ["train", "--examples", examples_dir, "--model-preset", "tiny", "--steps", "2", "--checkpoint-every", "1",
            "--batch-size", "2", "--keypoints-weight", "0", "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "train: 2/2 steps" in printed and "detection_loss" in printed  # pix2seq/progress.py lines
    assert "keypoints_loss" not in printed
    assert tf.io.gfile.glob(str(out / "tensorboard" / "train" / "events.out.tfevents.*"))
    assert tf.train.latest_checkpoint(str(out / "checkpoints")).endswith("ckpt-2")
    assert (out / "model.weights.h5").exists() and (out / "model_config.json").exists()


@pytest.mark.slow
def test_tiny_overfits_eight_images_on_all_tasks(examples_dir, tmp_path):
    from model import decoding, reference_decoding, train_data
    from model.training import TrainConfig, train
    from model.vocab import CAPTION_EOS, CAPTION_PROMPT, DETECTION_PROMPT

    config = train_data.model_config_for("tiny", examples_dir, dropout=0.0, drop_path=0.0)
    batches = _fixed_batches(train_data.split_pattern(examples_dir, "train"), config.tokens)
    assert all(b["image"].shape[0] == NUM_IMAGES for b in batches.values())

    def dataset_fn(input_context, start_step):
        return tf.data.Dataset.from_tensors(batches).repeat()

    weights = {"detection": 1.0, "segmentation": 0.5, "keypoints": 0.5, "captioning": 1.0}
    settings = TrainConfig(
        steps=STEPS, batch_size=NUM_IMAGES, learning_rate=2e-3, warmup_steps=20, weight_decay=0.0,
        task_weights=weights, checkpoint_every=STEPS // 3, seed=0,
    )
    result = train(config, settings, str(tmp_path), dataset_fn, verbose=0)
    assert result.history["loss"][-1] < 0.1 * result.history["loss"][0], result.history
    model = result.model

    det = batches["detection"]
    length = det["target_tokens"].shape[1]
    prompt = np.full((NUM_IMAGES, 1), DETECTION_PROMPT, np.int32)
    out = decoding.generate(model, det["image"], prompt, length, end_token=0)["tokens"].numpy()
    # On trained weights too, the K/V-cached loop emits exactly the recompute-everything loop's tokens.
    reference = reference_decoding.reference_decode(
        model.decoder, model.encode(det["image"]), prompt, length, end_token=0)["tokens"].numpy()
    np.testing.assert_array_equal(out, reference)
    for row in range(NUM_IMAGES):
        truth = _objects(det["target_tokens"][row].tolist())
        found = _objects(out[row].tolist())
        assert truth, f"image {row} has no objects"
        for obj in truth:
            assert any(
                f[4] == obj[4] and max(abs(a - b) for a, b in zip(f[:4], obj[:4])) <= 1 for f in found
            ), f"image {row}: object {obj} not recovered; decoded {found}"

    cap = batches["captioning"]
    length = cap["target_tokens"].shape[1]
    prompt = np.full((NUM_IMAGES, 1), CAPTION_PROMPT, np.int32)
    out = decoding.generate(model, cap["image"], prompt, length, end_token=CAPTION_EOS)["tokens"].numpy()
    exact = 0
    for row in range(NUM_IMAGES):
        truth = cap["target_tokens"][row].tolist()
        truth = truth[: truth.index(CAPTION_EOS) + 1]
        exact += out[row][: len(truth)].tolist() == truth
    assert exact >= NUM_IMAGES // 2 + 1, f"only {exact} of {NUM_IMAGES} captions recovered"
