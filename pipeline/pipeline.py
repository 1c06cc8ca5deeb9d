"""The one TFX pipeline definition: COCO files in, a blessed and pushed SavedModel out.

CocoExampleGen -> StatisticsGen -> SchemaGen -> ExampleValidator
               -> Trainer (run_fn `model.trainer_module.run_fn`, by module path)
Resolver (latest blessed Model) ---------------\\
Trainer.model + CocoExampleGen.examples -> CocoEvaluator -> Pusher (filesystem, versioned)

`create_pipeline` is pure: explicit arguments in, a `tfx.dsl.Pipeline` out; the
runners (runner_local, runner_vertex) choose orchestration and metadata.

Cache keys: TFX reuses an execution whose input artifacts and properties repeat.
CocoExampleGen's driver adds the fingerprint of the files under `coco_dir`; the
ingestion and training code enter as `code_fingerprint` properties (`from_config`
hashes INGEST_CODE and TRAIN_CODE, and a local warm-start checkpoint's files). The Pusher does not publish a model equal to
the newest served version again (components/pusher.py).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Sequence

import pix2seq  # noqa: F401  (Keras 3 guard before tfx imports tensorflow_transform)
from tfx import v1 as tfx

from components import pusher as pusher_lib
from components.coco_evaluator.component import CocoEvaluator
from components.coco_example_gen.component import CocoExampleGen
from data import fingerprint
from model.train_config import TrainConfig, to_custom_config

RUN_FN = "model.trainer_module.run_fn"
# The code whose change must invalidate cached ingestion / training (data/fingerprint.py).
INGEST_CODE = ("data", "components.beam_ingest", "components.coco_example_gen")
TRAIN_CODE = ("model", "data")

# Component ids (also the node names in MLMD and in the compiled Vertex spec).
EXAMPLE_GEN = "CocoExampleGen"
STATISTICS_GEN = "StatisticsGen"
SCHEMA_GEN = "SchemaGen"
EXAMPLE_VALIDATOR = "ExampleValidator"
TRAINER = "Trainer"
RESOLVER = "latest_blessed_model_resolver"
EVALUATOR = "CocoEvaluator"
PUSHER = "Pusher"
COMPONENT_IDS = (EXAMPLE_GEN, STATISTICS_GEN, SCHEMA_GEN, EXAMPLE_VALIDATOR, TRAINER, RESOLVER,
                 EVALUATOR, PUSHER)


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    coco_dir: str,
    serving_dir: str,
    train_config: TrainConfig,
    eval_config: Mapping[str, Any],
    caption_vocab_size: int = 1000,
    max_error_fraction: float = 0.01,
    beam_pipeline_args: Sequence[str] = (),
    metadata_connection_config: Optional[Any] = None,
    enable_cache: bool = True,
    trainer_extension_config: Optional[Mapping[str, Any]] = None,
    ingest_code_fingerprint: str = "",
    train_code_fingerprint: str = "",
) -> tfx.dsl.Pipeline:
    """Builds the pipeline.

    Args:
      pipeline_name / pipeline_root: TFX identity and artifact root (local path or gs://).
      coco_dir: COCO-format directory to ingest (local path or gs://).
      serving_dir: Pusher's filesystem destination; versions are `<serving_dir>/<unix time>/`.
      train_config: the model.train_config.TrainConfig the run_fn trains (steps -> TrainArgs /
        EvalArgs, the rest -> `custom_config`).
      eval_config: CocoEvaluator settings (pipeline.presets.EvalConfig.to_dict()).
      caption_vocab_size / max_error_fraction: ingestion settings.
      beam_pipeline_args: Beam options for ingestion, statistics and evaluation
        (DirectRunner workers locally, `--runner=DataflowRunner ...` at scale).
      metadata_connection_config: MLMD connection (the local runner uses SQLite; None on Vertex).
      enable_cache: reuse outputs of executions whose inputs and properties did not change.
      trainer_extension_config: when set, the Trainer runs as a Vertex AI training job
        (TPU/GPU): keys `project`, `region`, `worker_pool_specs` (see runner_vertex).
      ingest_code_fingerprint / train_code_fingerprint: of the ingestion / training code;
        a new value reruns that component and everything downstream.
    """
    example_gen = CocoExampleGen(coco_dir=coco_dir, caption_vocab_size=caption_vocab_size,
                                 max_error_fraction=max_error_fraction,
                                 code_fingerprint=ingest_code_fingerprint).with_id(EXAMPLE_GEN)
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"]).with_id(STATISTICS_GEN)
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=False).with_id(SCHEMA_GEN)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"]).with_id(EXAMPLE_VALIDATOR)

    custom_config: Dict[str, Any] = dict(to_custom_config(train_config), code_fingerprint=train_code_fingerprint)
    trainer_kwargs = dict(
        run_fn=RUN_FN,
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(num_steps=int(train_config.steps)),
        eval_args=tfx.proto.EvalArgs(num_steps=int(train_config.eval_steps)),
    )
    if trainer_extension_config:
        vertex = tfx.extensions.google_cloud_ai_platform
        custom_config[vertex.ENABLE_VERTEX_KEY] = True
        custom_config[vertex.VERTEX_REGION_KEY] = trainer_extension_config["region"]
        custom_config[vertex.TRAINING_ARGS_KEY] = {
            "project": trainer_extension_config["project"],
            "worker_pool_specs": list(trainer_extension_config["worker_pool_specs"]),
        }
        trainer = vertex.Trainer(custom_config=custom_config, **trainer_kwargs)
    else:
        trainer = tfx.components.Trainer(custom_config=custom_config, **trainer_kwargs)
    trainer = trainer.with_id(TRAINER)

    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id(RESOLVER)

    evaluator = CocoEvaluator(
        model=trainer.outputs["model"],
        examples=example_gen.outputs["examples"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=eval_config,
    ).with_id(EVALUATOR)

    pusher = pusher_lib.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_dir)),
    ).with_id(PUSHER)

    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[example_gen, statistics_gen, schema_gen, example_validator, trainer,
                    model_resolver, evaluator, pusher],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )


def from_config(config, metadata_connection_config=None, trainer_extension_config=None) -> tfx.dsl.Pipeline:
    """`create_pipeline` with every argument taken from a pipeline.presets.PipelineConfig,
    and the fingerprints of the code found on this machine."""
    return create_pipeline(
        pipeline_name=config.name,
        pipeline_root=config.pipeline_root,
        coco_dir=config.coco_dir,
        serving_dir=config.serving_dir,
        train_config=config.train,
        eval_config=config.eval.to_dict(),
        caption_vocab_size=config.caption_vocab_size,
        max_error_fraction=config.max_error_fraction,
        beam_pipeline_args=config.beam_pipeline_args,
        metadata_connection_config=metadata_connection_config,
        enable_cache=config.enable_cache,
        trainer_extension_config=trainer_extension_config,
        ingest_code_fingerprint=str(fingerprint.code_fingerprint(INGEST_CODE)),
        train_code_fingerprint=train_fingerprint(config.train),
    )


def train_fingerprint(train_config: TrainConfig) -> str:
    """The training code's fingerprint, plus the files of a local warm-start checkpoint
    (retrained in place, it must not be served from the Trainer's cache)."""
    text = str(fingerprint.code_fingerprint(TRAIN_CODE))
    source = train_config.init_checkpoint
    if source and "://" not in source and os.path.isdir(source):
        text += f"; init_checkpoint {fingerprint.tree_fingerprint(source, lambda rel: True)}"
    return text
