"""One TrainConfig: presets, the pipeline's custom_config, the Trainer's run_fn and
`pix2seq train` all read the same typed settings."""
import argparse
import dataclasses
import json
import os

import pytest

from model.train_config import PAPER_TASK_WEIGHTS, TrainConfig, from_custom_config, to_custom_config
from pipeline import presets


def _through_json(config):
    return json.loads(json.dumps(to_custom_config(config)))


NON_DEFAULT = TrainConfig(
    model_preset="small", model_overrides={"num_bins": 64, "stem": "conv"}, steps=7, eval_steps=3, batch_size=4,
    task_batch_sizes={"detection": 6}, task_weights={"detection": 1.0, "captioning": 0.5, "keypoints": 0.0},
    learning_rate=3e-4, warmup_steps=2, weight_decay=0.1, end_fraction=0.5, clipnorm=None, checkpoint_every=3,
    keep_checkpoints=1, seed=5, precision="mixed_bfloat16", tpu="grpc://10.0.0.2:8470", devices=("/cpu:0",),
    jit_compile=False, steps_per_execution=2, tensorboard_every=1, init_checkpoint="gs://bucket/warm",
    required_tasks=("captioning",), inter_op_threads=0)
DATA_MIXING = NON_DEFAULT.replace(mixing="data", task_batch_sizes={})  # the two exclude each other


@pytest.mark.parametrize("config", [TrainConfig(), NON_DEFAULT, DATA_MIXING]
                         + [presets.get(n).train for n in presets.PRESETS],
                         ids=["defaults", "non-default", "data-mixing"] + list(presets.PRESETS))
def test_custom_config_round_trip(config):
    custom = _through_json(config)
    assert "steps" not in custom["train_config"]  # TrainArgs / EvalArgs carry the steps
    assert from_custom_config(custom, config.steps, config.eval_steps) == config
    # keys of TFX's extensions and of the cache sit beside it
    custom.update(code_fingerprint="x", ai_platform_enable_vertex=True)
    assert from_custom_config(custom, config.steps, config.eval_steps) == config


def test_every_field_differs_from_the_default_in_the_round_trip_case():
    defaults = TrainConfig()
    same = [f.name for f in dataclasses.fields(TrainConfig)
            if getattr(defaults, f.name) in (getattr(NON_DEFAULT, f.name), getattr(DATA_MIXING, f.name))]
    assert same == ["task_batch_sizes", "mixing"]  # each set in one of the two


def test_from_custom_config_errors():
    with pytest.raises(ValueError, match="has no 'train_config'"):
        from_custom_config({"batch_size": 8}, 10)
    custom = to_custom_config(TrainConfig())
    custom["train_config"]["learning_rte"] = 0.1
    with pytest.raises(ValueError, match="unknown fields \\['learning_rte'\\]"):
        from_custom_config(custom, 10)


@pytest.mark.parametrize("changes,message", [
    ({"mixing": "both"}, "mixing must be"),
    ({"precision": "float8"}, "precision must be"),
    ({"task_weights": {"detection": 0.0}}, "no task with a weight > 0"),
    ({"task_weights": {"depth": 1.0}}, "unknown tasks \\['depth'\\]"),
    ({"mixing": "data", "task_batch_sizes": {"detection": 2}}, "task_batch_sizes needs mixing='batch'"),
    ({"steps": 0}, "steps, batch_size and checkpoint_every >= 1"),
    ({"inter_op_threads": -1}, "inter_op_threads must be >= 0"),
])
def test_invalid_configs_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_derived_settings():
    config = TrainConfig(steps=10, checkpoint_every=4, batch_size=3,
                         task_weights={"detection": 1.0, "segmentation": 0.0, "captioning": 0.2},
                         task_batch_sizes={"detection": 8})
    assert config.tasks == ("detection", "captioning")
    assert config.active_task_weights == {"detection": 1.0, "captioning": 0.2}
    assert config.train_batch_size == {"detection": 8, "captioning": 3}
    assert config.interval == 2 and config.warmup == 1
    assert TrainConfig().task_weights == PAPER_TASK_WEIGHTS and TrainConfig().train_batch_size == 8


def test_demo_scratch_preset_keeps_what_make_demo_trained_from_random_weights():
    demo = presets.get("demo-scratch").train
    assert demo.init_checkpoint is None and demo.inter_op_threads == 1
    assert (demo.model_preset, demo.steps, demo.eval_steps, demo.batch_size, demo.learning_rate,
            demo.warmup_steps, demo.checkpoint_every, demo.weight_decay, demo.clipnorm, demo.mixing,
            demo.seed, demo.precision) == ("tiny", 1800, 0, 16, 2e-3, 50, 600, 0.05, 1.0, "batch", 0, "auto")
    assert demo.task_weights == {"detection": 0.7, "segmentation": 0.1, "keypoints": 0.1, "captioning": 0.1}
    assert demo.train_batch_size == {"detection": 16, "segmentation": 2, "keypoints": 2, "captioning": 2}
    assert demo.model_overrides == {"num_bins": 64, "dropout": 0.0, "drop_path": 0.0, "stem": "conv",
                                    "object_order": "area", "coordinate_init": "sincos"}


def test_demo_preset_fine_tunes_the_shipped_checkpoint_of_the_same_model():
    from model import warm_start
    from model.config import preset

    demo, scratch = presets.get("demo"), presets.get("demo-scratch")
    assert demo.train.init_checkpoint == presets.DEMO_CHECKPOINT == "pretrained/demo_tiny"
    assert demo.train == scratch.train.replace(init_checkpoint=presets.DEMO_CHECKPOINT)  # one option away
    assert (demo.coco_dir, demo.caption_vocab_size, demo.eval) == (scratch.coco_dir, scratch.caption_vocab_size,
                                                                   scratch.eval)
    assert demo.pipeline_root != scratch.pipeline_root and demo.serving_dir != scratch.serving_dir
    # the committed checkpoint is the demo's architecture and coordinate layout
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shipped = warm_start.source_config(os.path.join(root, presets.DEMO_CHECKPOINT))
    warm_start.check_architecture(shipped, preset("tiny", **demo.train.model_overrides))
    assert shipped.tokens.num_bins == demo.train.model_overrides["num_bins"]


def _train_args(*argv):
    from pix2seq import train_cli

    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    return train_cli.train_config(parser.parse_args(["--coco-dir", "d", "--out", "o", *argv]))


def test_train_cli_starts_from_a_preset_and_flags_replace_fields():
    assert _train_args("--preset", "demo") == presets.get("demo").train
    assert _train_args() == TrainConfig()
    changed = _train_args("--preset", "demo", "--steps", "5", "--precision", "float32", "--tpu", "none",
                          "--clipnorm", "0", "--captioning-weight", "0", "--model-preset", "small",
                          "--learning-rate", "0.01")
    assert changed == presets.get("demo").train.replace(
        steps=5, precision="float32", tpu="none", clipnorm=None, model_preset="small", learning_rate=0.01,
        task_weights={"detection": 0.7, "segmentation": 0.1, "keypoints": 0.1, "captioning": 0.0})
    # one batch size for every task replaces the preset's per-task sizes; data mixing then is allowed
    assert _train_args("--inter-op-threads", "0") == TrainConfig(inter_op_threads=0)
    mixed = _train_args("--preset", "demo", "--batch-size", "4", "--mixing", "data")
    assert (mixed.train_batch_size, mixed.mixing) == (4, "data")
    with pytest.raises(SystemExit, match="every task weight is 0"):
        _train_args(*[a for t in ("detection", "segmentation", "keypoints", "captioning")
                      for a in (f"--{t}-weight", "0")])


def test_pipeline_hands_the_preset_config_and_the_code_fingerprint_to_the_trainer():
    from data import fingerprint
    from pipeline import pipeline as pipeline_lib

    config = presets.get("micro")
    pipe = pipeline_lib.from_config(config)
    trainer = next(c for c in pipe.components if c.id == pipeline_lib.TRAINER)
    custom = json.loads(trainer.exec_properties["custom_config"])
    steps = json.loads(trainer.exec_properties["train_args"])["num_steps"]
    # proto3 JSON leaves a zero out: the micro preset runs no validation steps
    eval_steps = json.loads(trainer.exec_properties["eval_args"]).get("num_steps", 0)
    assert from_custom_config(custom, steps, eval_steps) == config.train
    assert custom["code_fingerprint"] == str(fingerprint.code_fingerprint(pipeline_lib.TRAIN_CODE))
    example_gen = next(c for c in pipe.components if c.id == pipeline_lib.EXAMPLE_GEN)
    assert example_gen.exec_properties["code_fingerprint"] == str(
        fingerprint.code_fingerprint(pipeline_lib.INGEST_CODE))


def test_a_local_warm_start_checkpoint_enters_the_trainer_cache_key(tmp_path):
    from pipeline import pipeline as pipeline_lib
    from pipeline import runner_local

    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "model.weights.h5").write_bytes(b"1")
    warm = TrainConfig(init_checkpoint=str(checkpoint))
    before = pipeline_lib.train_fingerprint(warm)
    assert "init_checkpoint" in before and "init_checkpoint" not in pipeline_lib.train_fingerprint(TrainConfig())
    (checkpoint / "model.weights.h5").write_bytes(b"retrained")
    assert pipeline_lib.train_fingerprint(warm) != before
    # gs:// sources are not read when the pipeline is built
    assert "init_checkpoint" not in pipeline_lib.train_fingerprint(TrainConfig(init_checkpoint="gs://b/ckpt"))
    # the local runner stores absolute paths in MLMD, the checkpoint's too
    assert runner_local.absolute(presets.get("demo")).train.init_checkpoint == os.path.abspath(presets.DEMO_CHECKPOINT)
