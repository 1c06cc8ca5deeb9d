"""CocoEvaluator: COCO metrics of a trained Pix2Seq SavedModel on the eval split,
and the blessing that decides whether Pusher ships it.

Inputs: `model` (the Trainer's Model), `examples` (CocoExampleGen's Examples;
the `eval_split` is read) and optionally `baseline_model` (the latest blessed
Model from a Resolver with LatestBlessedModelStrategy). Outputs: `evaluation`
(ModelEvaluation: metrics.json, COCO result JSONs, prediction pictures) and
`blessing` (ModelBlessing with the `blessed` property Pusher and the resolver
read, plus a BLESSED / NOT_BLESSED file).
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Optional

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.coco_evaluator import executor

MODEL_KEY = "model"
BASELINE_MODEL_KEY = "baseline_model"
EXAMPLES_KEY = "examples"
EVALUATION_KEY = "evaluation"
BLESSING_KEY = "blessing"
EVAL_CONFIG_KEY = "eval_config"
EVAL_SPLIT_KEY = "eval_split"


class CocoEvaluatorSpec(ComponentSpec):
    PARAMETERS = {
        # JSON of pipeline.presets.EvalConfig.to_dict(): tasks, thresholds, margin, ...
        EVAL_CONFIG_KEY: ExecutionParameter(type=str),
        EVAL_SPLIT_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        BASELINE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True),
    }
    OUTPUTS = {
        EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
        BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class CocoEvaluator(base_beam_component.BaseBeamComponent):
    """Runs the exported SavedModel over the eval split in Beam, scores it the COCO way, blesses."""

    SPEC_CLASS = CocoEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, examples: types.BaseChannel,
                 eval_config: Mapping[str, Any], baseline_model: Optional[types.BaseChannel] = None,
                 eval_split: str = "eval"):
        """Args:
          model: the candidate Model channel (Trainer output).
          examples: the Examples channel holding `eval_split`.
          eval_config: dict as `pipeline.presets.EvalConfig.to_dict()` returns it.
          baseline_model: latest blessed Model (Resolver output), optional.
          eval_split: split name to evaluate on.
        """
        spec = CocoEvaluatorSpec(
            model=model,
            examples=examples,
            baseline_model=baseline_model,
            eval_config=json.dumps(dict(eval_config), sort_keys=True),
            eval_split=eval_split,
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing),
        )
        super().__init__(spec=spec)
