"""The evaluation both the CocoEvaluator and `pix2seq evaluate` run: ground truth
from decoded examples, the SavedModel's results per batch, COCO scoring.

The executor spreads `predict_batch` over Beam workers; `pix2seq evaluate` loops
over it in one process (`predict`). Everything else is the same call, so the two
report the same metrics for the same model and images.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from components import coco_metrics
from components.coco_evaluator import ground_truth as gt_lib
from components.coco_evaluator.model_runner import MissingSignatureError
from data import dataset_info as data_info
from data import features as F
from model import results as results_lib
from model import signatures as signatures_lib
from model.tasks import check_tasks, task_class, task_names

COCO_KEYPOINTS = 17  # COCO's person keypoints: pycocotools' own OKS sigmas apply
OTHER_KEYPOINT_SIGMA = 0.05


def tasks_to_score(asked: Sequence[str], model_tasks: Sequence[str], data_tasks: Sequence[str],
                   model: str, data: str) -> Tuple[str, ...]:
    """The tasks an evaluation scores: `asked` when given, else every task the model serves
    (its signatures) that the data has ground truth for. A task asked for that the data
    cannot feed is a DatasetError, one the model does not serve a MissingSignatureError;
    both name what is missing and the fix."""
    if asked:
        check_tasks(list(asked), list(data_tasks), data)
        if any(t not in model_tasks for t in asked):
            raise MissingSignatureError(signatures_lib.missing_task_message(model, asked, model_tasks))
        return tuple(t for t in task_names() if t in asked)
    tasks = tuple(t for t in model_tasks if t in data_tasks)
    if not tasks:
        raise data_info.DatasetError(
            f"nothing to evaluate: the model {model} serves {', '.join(model_tasks) or 'no task'}, the data "
            f"{data} has ground truth for {', '.join(data_tasks)}. Evaluate on data with annotations for "
            f"one of the model's tasks.")
    return tasks


def baseline_tasks(tasks: Sequence[str], baseline_served: Sequence[str]) -> Tuple[str, ...]:
    """The candidate's scored `tasks` that the baseline serves too: the baseline is scored
    on these and the comparison runs over them (components/blessing.py); a candidate task
    the baseline lacks is judged by its thresholds only."""
    return tuple(t for t in tasks if t in baseline_served)


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """What to predict and how results are made (a subset of pipeline.presets.EvalConfig)."""

    tasks: Tuple[str, ...]
    batch_size: int = 8
    keypoint_category_ids: Tuple[int, ...] = (1,)
    score_threshold: float = 0.0
    mask_threshold: float = 0.5
    # decoding options for detect_and_describe_with_options; empty: the paper's defaults
    decoding: Tuple[Tuple[str, float], ...] = ()

    @classmethod
    def from_config(cls, config: Mapping[str, Any], tasks: Sequence[str],
                    keypoint_category_ids: Sequence[int]) -> "EvalOptions":
        """From an eval_config dict (EvalConfig.to_dict())."""
        return cls(tasks=tuple(tasks), batch_size=int(config.get("batch_size") or 8),
                   keypoint_category_ids=tuple(int(c) for c in keypoint_category_ids),
                   score_threshold=float(config.get("score_threshold") or 0.0),
                   decoding=tuple(sorted((config.get("decoding") or {}).items())))

    def result_options(self) -> results_lib.ResultOptions:
        return results_lib.ResultOptions(min_score=self.score_threshold, mask_threshold=self.mask_threshold,
                                         keypoint_category_ids=self.keypoint_category_ids, tasks=self.tasks)


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """COCO ground truth of the evaluated images and how keypoints are scored."""

    datasets: Dict[str, dict]  # {"instances", "keypoints", "captions"}: COCO dataset dicts
    keypoint_category_ids: Tuple[int, ...]
    kpt_oks_sigmas: Optional[List[float]]  # None: COCO's 17 person sigmas


def ground_truth(decoded: Sequence[Mapping], categories: Optional[Sequence[Mapping]],
                 default_keypoint_category_ids: Sequence[int] = (1,),
                 class_category_ids: Sequence[int] = ()) -> GroundTruth:
    """Decoded examples (data.features.decode_example) -> the COCO ground truth they hold.

    Keypoint categories are those with keypoint names (COCO: person), else the default;
    `class_category_ids` is ingestion's class map (examples hold class indices)."""
    kp_cats = tuple(gt_lib.keypoint_categories(categories, default_keypoint_category_ids))
    datasets = gt_lib.build_ground_truth(decoded, categories, kp_cats, class_category_ids)
    num_kp = max([len(c.get("keypoints") or []) for c in categories or []] or [0])
    sigmas = None if num_kp in (0, COCO_KEYPOINTS) else [OTHER_KEYPOINT_SIGMA] * num_kp
    return GroundTruth(datasets, kp_cats, sigmas)


def predict_batch(runner: Callable[[Sequence[bytes]], Mapping], decoded: Sequence[Mapping],
                  options: EvalOptions) -> List[dict]:
    """A batch of decoded examples -> their per-image results (model/results.py)."""
    outputs = runner([d[F.IMAGE_ENCODED] for d in decoded])
    result_options = options.result_options()
    return [results_lib.image_result(outputs, row, d[F.IMAGE_ID], d[F.IMAGE_HEIGHT], d[F.IMAGE_WIDTH],
                                     result_options)
            for row, d in enumerate(decoded)]


def predict(runner: Callable[[Sequence[bytes]], Mapping], decoded: Sequence[Mapping], options: EvalOptions,
            progress: Optional[Callable[[int], None]] = None) -> List[dict]:
    """`predict_batch` over all examples in batches of `options.batch_size`, in order;
    `progress(n)` is called after each batch with the number of images it held."""
    per_image: List[dict] = []
    for start in range(0, len(decoded), options.batch_size):
        batch = decoded[start:start + options.batch_size]
        per_image.extend(predict_batch(runner, batch, options))
        if progress is not None:
            progress(len(batch))
    return per_image


def score(gt: GroundTruth, per_image: Sequence[Mapping], tasks: Sequence[str]):
    """Per-image results -> ({task: metrics}, COCO result lists by kind)."""
    coco = results_lib.coco_results(per_image)
    metrics: Dict[str, Any] = {}
    for task in task_names():  # each task's COCO glue: its result kind and ground truth
        cls = task_class(task)
        if task in tasks and cls.coco_kind:  # a task without a COCO result kind is not scored
            metrics[task] = coco_metrics.score_kind(cls.coco_kind, gt.datasets[cls.coco_ground_truth],
                                                    coco[cls.coco_kind], kpt_oks_sigmas=gt.kpt_oks_sigmas)
    return metrics, coco


__all__ = ["tasks_to_score", "baseline_tasks", "EvalOptions", "GroundTruth", "ground_truth", "predict_batch", "predict", "score"]
