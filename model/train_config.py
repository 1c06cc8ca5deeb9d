"""The one training configuration.

A pipeline preset (pipeline/presets.py) holds a `TrainConfig`; the pipeline hands it
to the TFX Trainer as `custom_config` (`to_custom_config`), the Trainer's run_fn
reads it back (`from_custom_config`), and `pix2seq train` starts from a preset's
`TrainConfig` (or the defaults below) and replaces the fields its flags name. So
`pix2seq train --preset demo` trains the demo's model, and a default means the
same thing everywhere.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from model.tasks import BUILTIN_TASKS, task_names

# The paper's batch-mixing loss weights (Pix2Seq v2), each task class's `paper_weight`.
PAPER_TASK_WEIGHTS = {cls.name: cls.paper_weight for cls in BUILTIN_TASKS}

MIXING = ("batch", "data")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
# TFX carries these in TrainArgs / EvalArgs, not in custom_config.
_STEP_FIELDS = ("steps", "eval_steps")
CUSTOM_CONFIG_KEY = "train_config"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train, and which model (its shape is `model_preset` + `model_overrides`).

    Attributes:
      model_preset / model_overrides: `model.config.preset(name, **overrides)`.
      steps: total optimizer steps. eval_steps: validation batches per interval (0: none).
      batch_size: global batch per task (batch mixing) or of the mixed batch (data mixing).
      task_batch_sizes: {task: global batch} for batch mixing, overriding `batch_size`.
      task_weights: loss weight per task; a task with weight 0 is not trained, and one the
        data cannot feed (dataset_info.json `tasks`) is dropped (tasks follow the data).
      required_tasks: tasks the data must feed: training on data that cannot feed one is a
        DatasetError naming what is missing instead of dropping it (`pix2seq train` sets
        the tasks whose weight flag was given). Each needs a weight > 0.
      mixing: "batch" (one batch per task per step, the paper's) or "data" (tasks sampled by weight).
      learning_rate: peak of the warm-up / linear-decay schedule.
      warmup_steps: linear warm-up length (None: 10 % of `steps`, at most 1000).
      weight_decay / end_fraction: AdamW decay, final fraction of the peak rate.
      clipnorm: global gradient-norm clip (None: off).
      checkpoint_every: steps between checkpoints (one Keras epoch each), rounded down to
        a divisor of `steps`. keep_checkpoints: how many to keep.
      seed: initialization, dropout and data-order seed.
      precision: one of PRECISIONS ("auto": bfloat16 on TPU, else float32).
      tpu: TPU name or grpc:// address; None discovers, "none" disables.
      devices: explicit devices for a MirroredStrategy (None: all GPUs).
      jit_compile / steps_per_execution: passed to `model.compile`.
      tensorboard_every: steps between TensorBoard scalar writes.
      init_checkpoint: warm start (model/warm_start.py): a directory with `model.weights.h5`
        + `model_config.json` (`pix2seq train` or `pix2seq import-checkpoint` output, local
        or gs://) whose weights a fresh run starts from, with its architecture instead of
        `model_preset`; a resumed run ignores it. None: random initialization.
      inter_op_threads: TF inter-op thread pool size (model/tf_threads.py); 1, the measured
        best on CPUs (BENCHMARKS.md), runs one op at a time with every core inside it.
        0: TF's default pool. Takes effect only if set before TF starts in the process.
    """

    model_preset: str = "tiny"
    model_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    steps: int = 100
    eval_steps: int = 0
    batch_size: int = 8
    task_batch_sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    task_weights: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(PAPER_TASK_WEIGHTS))
    required_tasks: Tuple[str, ...] = ()
    mixing: str = "batch"
    learning_rate: float = 1e-3
    warmup_steps: Optional[int] = None
    weight_decay: float = 0.05
    end_fraction: float = 0.01
    clipnorm: Optional[float] = 1.0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    seed: int = 0
    precision: str = "auto"
    tpu: Optional[str] = None
    devices: Optional[Tuple[str, ...]] = None
    jit_compile: Union[bool, str] = "auto"
    steps_per_execution: int = 1
    tensorboard_every: int = 10
    init_checkpoint: Optional[str] = None
    inter_op_threads: int = 1

    def __post_init__(self):
        # Plain containers, so a config read back from JSON compares equal.
        object.__setattr__(self, "model_overrides", dict(self.model_overrides))
        object.__setattr__(self, "task_batch_sizes", {t: int(b) for t, b in self.task_batch_sizes.items()})
        object.__setattr__(self, "task_weights", {t: float(w) for t, w in self.task_weights.items()})
        object.__setattr__(self, "required_tasks", tuple(self.required_tasks))
        if self.devices is not None:
            object.__setattr__(self, "devices", tuple(self.devices))
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError(
                "TrainConfig needs steps, batch_size and checkpoint_every >= 1. Received: "
                f"steps={self.steps}, batch_size={self.batch_size}, checkpoint_every={self.checkpoint_every}"
            )
        unknown = sorted((set(self.task_weights) | set(self.task_batch_sizes) | set(self.required_tasks))
                         - set(task_names()))
        if unknown:
            raise ValueError(f"TrainConfig names unknown tasks {unknown}; expected names from {task_names()}")
        if not self.tasks:
            raise ValueError(f"TrainConfig has no task with a weight > 0. Received: task_weights={self.task_weights}")
        unweighted = [t for t in self.required_tasks if t not in self.tasks]
        if unweighted:
            raise ValueError(f"required_tasks {unweighted} have no weight > 0 in task_weights={self.task_weights}")
        if self.mixing not in MIXING:
            raise ValueError(f"mixing must be one of {MIXING}. Received: {self.mixing!r}")
        if self.task_batch_sizes and self.mixing != "batch":
            raise ValueError("task_batch_sizes needs mixing='batch'")
        if self.inter_op_threads < 0:
            raise ValueError(f"inter_op_threads must be >= 0 (0: TF's default). Received: {self.inter_op_threads}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}. Received: {self.precision!r}")

    @property
    def tasks(self) -> Tuple[str, ...]:
        """The trained tasks (weight > 0), in the canonical order."""
        return tuple(t for t in task_names() if self.task_weights.get(t, 0.0) > 0)

    @property
    def active_task_weights(self) -> Dict[str, float]:
        return {t: self.task_weights[t] for t in self.tasks}

    @property
    def train_batch_size(self) -> Union[int, Dict[str, int]]:
        """`batch_size`, or {task: global batch} when `task_batch_sizes` is set."""
        if not self.task_batch_sizes:
            return self.batch_size
        return {t: self.task_batch_sizes.get(t, self.batch_size) for t in self.tasks}

    @property
    def interval(self) -> int:
        """Steps per Keras epoch (= checkpoint interval), a divisor of `steps`."""
        return math.gcd(self.steps, min(self.checkpoint_every, self.steps))

    @property
    def warmup(self) -> int:
        return min(self.steps // 10, 1000) if self.warmup_steps is None else self.warmup_steps

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def to_custom_config(config: TrainConfig) -> Dict[str, Any]:
    """The TFX Trainer's `custom_config` (JSON-ready); steps go in TrainArgs / EvalArgs."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in _STEP_FIELDS}
    fields["devices"] = list(config.devices) if config.devices is not None else None
    fields["required_tasks"] = list(config.required_tasks)
    return {CUSTOM_CONFIG_KEY: fields}


def from_custom_config(custom_config: Mapping[str, Any], steps: int, eval_steps: int = 0) -> TrainConfig:
    """The TrainConfig `to_custom_config` wrote (other top-level keys belong to TFX or the cache)."""
    if CUSTOM_CONFIG_KEY not in (custom_config or {}):
        raise ValueError(f"custom_config has no {CUSTOM_CONFIG_KEY!r}: build it with to_custom_config. "
                         f"Received keys: {sorted(custom_config or {})}")
    fields = dict(custom_config[CUSTOM_CONFIG_KEY])
    known = {f.name for f in dataclasses.fields(TrainConfig)} - set(_STEP_FIELDS)
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"custom_config[{CUSTOM_CONFIG_KEY!r}] has unknown fields {unknown}")
    return TrainConfig(steps=int(steps), eval_steps=int(eval_steps or 0), **fields)
