"""`pix2seq train` on ingested synthetic Examples: progress lines, TensorBoard logs,
checkpoints and the saved model. (That every task learns: tests/test_memorize.py.)"""
import pytest
import tensorflow as tf

pytestmark = pytest.mark.slow  # ingests, then trains and saves through `pix2seq train`


@pytest.fixture(scope="module")
def examples_dir(synth_coco_dir, tmp_path_factory):
    import apache_beam as beam

    from components import beam_ingest

    out = tmp_path_factory.mktemp("train_cli_ingest")
    examples = str(out / "examples")
    beam_ingest.run_ingest(
        synth_coco_dir, examples, str(out / "vocab"), str(out / "report"), make_pipeline=beam.Pipeline,
        caption_vocab_size=1000,
    )
    return examples


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
