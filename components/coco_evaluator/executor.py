"""CocoEvaluator executor: Beam inference over the eval split, COCO metrics,
blessing, and the artifacts Pusher / the resolver / people read.

The Beam workers read the eval shards themselves; the driver holds the ground truth
(examples without image bytes) and the per-image results, never the images, so its
memory does not grow with image bytes (bench/eval_memory.py, BENCHMARKS.md).

Layout of the outputs:
  evaluation/metrics.json           {"candidate": {task: {metric: v}}, "baseline": ..., "blessing": ...}
  evaluation/results/<model>/{bbox,segm,keypoints,captions}.json   COCO result files
  evaluation/ground_truth/{instances,keypoints,captions}.json       what was scored against
  evaluation/pictures/*.png         a few eval images with the candidate's predictions drawn
  evaluation/model_card/model_card.{json,md}   the candidate's model card (components/model_card.py)
  evaluation/raw/                   what the Beam workers return: per-image results (<model>/images*.jsonl),
                                    the evaluated examples without images, the pictured examples
  blessing/BLESSED | NOT_BLESSED    plus custom properties `blessed`, `current_model`, ...
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional

import apache_beam as beam
import tensorflow as tf
from absl import logging
from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

from components import blessing as blessing_rule
from components import model_card
from components.coco_evaluator import eval_examples, evaluation
from components.coco_evaluator import ground_truth as gt_lib
from components.coco_evaluator import pictures as pictures_lib
from components.coco_evaluator import predict
from data import features as F
from model import signatures
from model.tasks import task_class
from pix2seq import progress

# Property names the TFX Pusher and LatestBlessedModelStrategy read (tfx.components.evaluator.constants).
BLESSED_KEY = "blessed"
CURRENT_MODEL_KEY = "current_model"
CURRENT_MODEL_ID_KEY = "current_model_id"
BASELINE_MODEL_KEY = "baseline_model"
BASELINE_MODEL_ID_KEY = "baseline_model_id"
BLESSING_MESSAGE_KEY = "blessing_message"
BLESSED_FILE = "BLESSED"
NOT_BLESSED_FILE = "NOT_BLESSED"
METRICS_FILE = "metrics.json"
# Under evaluation/raw/: what the Beam workers hand back besides the per-image results.
GT_EXAMPLES = "ground_truth_examples"  # the evaluated examples without their images
PICTURED_EXAMPLES = "pictured_examples"  # the first `num_pictures` examples by image id


def serving_dir(model: types.Artifact) -> str:
    """The SavedModel the Trainer exported (`<model.uri>/Format-Serving`)."""
    return path_utils.serving_model_path(model.uri)


def _write_json(path: str, value) -> None:
    io_utils.write_string_file(path, json.dumps(value, indent=1, sort_keys=True))


def _read_jsonl(pattern: str) -> List[dict]:
    rows = []
    for path in sorted(tf.io.gfile.glob(pattern)):
        with tf.io.gfile.GFile(path) as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return rows


def _read_decoded(pattern: str) -> List[dict]:
    """Examples written by the pipeline, decoded (data.features.decode_example), by image id."""
    if not tf.io.gfile.glob(pattern):
        return []
    return sorted((F.decode_example(r) for r in gt_lib.read_examples(pattern)), key=lambda d: d[F.IMAGE_ID])


class Executor(base_beam_executor.BaseBeamExecutor):
    """Evaluates `model` (and `baseline_model`) on the eval split; writes evaluation + blessing."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        config = json.loads(exec_properties["eval_config"])
        split = exec_properties.get("eval_split") or "eval"
        model = artifact_utils.get_single_instance(input_dict["model"])
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        # EvalConfig.tasks, or (empty) the tasks the model serves that the data has
        tasks = evaluation.tasks_to_score(config.get("tasks") or (), signatures.exported_tasks(serving_dir(model)),
                                          gt_lib.load_tasks(examples.uri), serving_dir(model), examples.uri)
        baselines = input_dict.get("baseline_model") or []
        baseline = baselines[0] if baselines else None
        evaluation_artifact = artifact_utils.get_single_instance(output_dict["evaluation"])
        blessing = artifact_utils.get_single_instance(output_dict["blessing"])

        pattern = os.path.join(artifact_utils.get_split_uri([examples], split), "*")
        models = {"candidate": serving_dir(model)}
        model_tasks = {"candidate": tuple(tasks)}
        if baseline is not None and baseline.id != model.id:
            # scored on the tasks both serve: a baseline trained for other tasks still compares
            model_tasks["baseline"] = evaluation.baseline_tasks(
                tasks, signatures.exported_tasks(serving_dir(baseline)))
            if model_tasks["baseline"]:
                models["baseline"] = serving_dir(baseline)
        raw_dir = os.path.join(evaluation_artifact.uri, "raw")
        num_pictures = int(config.get("num_pictures") or 0)
        categories = gt_lib.load_categories(examples.uri)
        kp_default = config.get("keypoint_category_ids") or (1,)
        options = evaluation.EvalOptions.from_config(
            config, tasks, gt_lib.keypoint_categories(categories, kp_default))
        # Workers read the shards; the driver gets back examples without images, results
        # and the few pictured examples (components/coco_evaluator/eval_examples.py).
        max_examples = int(config.get("max_examples") or 0)
        total = gt_lib.split_size(examples.uri, split)
        if total is not None:
            total = len(models) * (min(total, max_examples) if max_examples else total)
        with progress.track("evaluate", total, kinds=tuple(models)) as tally, \
                self._make_beam_pipeline() as pipeline:
            serialized = pipeline | "EvalExamples" >> eval_examples.ReadEvalExamples(pattern, max_examples)
            _ = (serialized
                 | "WithoutImages" >> beam.Map(eval_examples.without_image)
                 | "WriteGroundTruth" >> beam.io.WriteToTFRecord(os.path.join(raw_dir, GT_EXAMPLES),
                                                                 file_name_suffix=".gz"))
            if num_pictures > 0:
                _ = (serialized
                     | "PicturedExamples" >> eval_examples.FirstById(num_pictures)
                     | "WritePictured" >> beam.io.WriteToTFRecord(os.path.join(raw_dir, PICTURED_EXAMPLES),
                                                                  file_name_suffix=".gz"))
            for name, path in models.items():
                _ = (serialized
                     | f"Batch[{name}]" >> beam.BatchElements(min_batch_size=options.batch_size,
                                                               max_batch_size=options.batch_size)
                     | f"Predict[{name}]" >> beam.ParDo(predict.PredictDoFn(
                         path, dataclasses.replace(options, tasks=model_tasks[name]), tally.counter(name)))
                     | f"ToJson[{name}]" >> beam.Map(json.dumps, sort_keys=True)
                     | f"Write[{name}]" >> beam.io.WriteToText(os.path.join(raw_dir, name, "images"),
                                                               file_name_suffix=".jsonl"))

        decoded = _read_decoded(os.path.join(raw_dir, GT_EXAMPLES + "*"))
        gt = evaluation.ground_truth(decoded, categories, kp_default, gt_lib.load_class_map(examples.uri))
        for name, dataset in gt.datasets.items():
            _write_json(os.path.join(evaluation_artifact.uri, "ground_truth", f"{name}.json"), dataset)

        report: Dict[str, Any] = {"eval_split": split, "num_images": len(decoded), "tasks": list(tasks),
                                  "model": model.uri}
        candidate_images = []
        for name in models:
            per_image = _read_jsonl(os.path.join(raw_dir, name, "images*.jsonl"))
            if name == "candidate":
                candidate_images = per_image
            metrics, results = evaluation.score(gt, per_image, model_tasks[name])
            report[name] = metrics
            for kind, rows in results.items():
                _write_json(os.path.join(evaluation_artifact.uri, "results", name, f"{kind}.json"), rows)
        if baseline is not None and "baseline" not in report:
            # the baseline is this very model, or it serves none of the scored tasks
            report["baseline"] = report["candidate"] if baseline.id == model.id else {}
        if baseline is not None:
            report["baseline_model"] = baseline.uri
            report["baseline_tasks"] = list(model_tasks.get("baseline", tasks))

        # a threshold of a task not evaluated (the model or the data lacks it) does not apply
        thresholds = {t: m for t, m in (config.get("thresholds") or {}).items() if t in tasks}
        decision = blessing_rule.decide(report["candidate"], thresholds,
                                        report.get("baseline"), float(config.get("baseline_margin") or 0.0))
        report["blessing"] = decision.to_dict()
        pictured = _read_decoded(os.path.join(raw_dir, PICTURED_EXAMPLES + "*")) if num_pictures > 0 else []
        pictures = pictures_lib.write(
            pictured, candidate_images, os.path.join(evaluation_artifact.uri, "pictures"), categories,
            num_pictures, config.get("picture_min_score"))
        report["pictures"] = pictures
        _write_json(os.path.join(evaluation_artifact.uri, METRICS_FILE), report)
        write_blessing(blessing, decision, model, baseline)
        card = model_card.build(report, model, examples, baseline, evaluation_artifact, blessing, serving_dir(model),
                                categories or (), getattr(self._context, "pipeline_run_id", None) or "")
        card_dir = os.path.join(evaluation_artifact.uri, model_card.CARD_DIR)
        model_card.write(card, os.path.join(card_dir, model_card.JSON_FILE),
                         os.path.join(card_dir, model_card.MARKDOWN_FILE))
        for task, value in blessing_rule.metric_summary(report["candidate"]).items():
            if value is not None:
                evaluation_artifact.set_float_custom_property(f"{task}_{task_class(task).headline_metric}", value)
        logging.info("CocoEvaluator: %s; %s", "BLESSED" if decision.blessed else "NOT BLESSED",
                     "; ".join(decision.checks))


def write_blessing(blessing: types.Artifact, decision: blessing_rule.BlessingDecision,
                   model: types.Artifact, baseline: Optional[types.Artifact]) -> None:
    """Set what Pusher (`blessed`) and LatestBlessedModelStrategy (`current_model_id`) read."""
    name = BLESSED_FILE if decision.blessed else NOT_BLESSED_FILE
    io_utils.write_string_file(os.path.join(blessing.uri, name), "\n".join(decision.checks))
    blessing.set_int_custom_property(BLESSED_KEY, 1 if decision.blessed else 0)
    blessing.set_string_custom_property(CURRENT_MODEL_KEY, model.uri)
    blessing.set_int_custom_property(CURRENT_MODEL_ID_KEY, model.id)
    if baseline is not None:
        blessing.set_string_custom_property(BASELINE_MODEL_KEY, baseline.uri)
        blessing.set_int_custom_property(BASELINE_MODEL_ID_KEY, baseline.id)
    blessing.set_string_custom_property(BLESSING_MESSAGE_KEY,
                                        "; ".join(decision.reasons) or "all checks passed")
