"""Task codecs: one module per vision task owns all of its tokens.

Looked up by name through one explicit table, the registry (no registration by import
side effect): `get_task("detection", token_config)`. The four built-in tasks are in it
from the start; a new task is one module whose `Task` subclass is passed to
`register_task` (docs/CONTRACTS.md "Adding a task"). Generic code loops over
`task_names()` (registration order: the built-ins first) and asks the task classes.
"""
import pix2seq  # noqa: F401  (Keras 3 guard, see pix2seq/__init__.py)

from data.dataset_info import DatasetError

from model.tasks.base import Task
from model.tasks.captioning import CaptioningTask
from model.tasks.detection import DetectionTask
from model.tasks.keypoints import KeypointTask
from model.tasks.segmentation import SegmentationTask

BUILTIN_TASKS = (DetectionTask, SegmentationTask, KeypointTask, CaptioningTask)
TASKS = {cls.name: cls for cls in BUILTIN_TASKS}


def register_task(cls):
    """Adds a `Task` subclass under `cls.name` (after the tasks already registered);
    returns `cls`. A name is registered once: unregister it to replace it."""
    if not (isinstance(cls, type) and issubclass(cls, Task)) or not cls.name:
        raise TypeError(f"register_task needs a Task subclass with a `name`. Received: {cls!r}")
    if cls.name in TASKS:
        raise ValueError(f"Task {cls.name!r} is already registered ({TASKS[cls.name].__name__}).")
    TASKS[cls.name] = cls
    return cls


def unregister_task(name: str):
    """Removes a task added by `register_task`; the built-in tasks stay."""
    if name in (cls.name for cls in BUILTIN_TASKS):
        raise ValueError(f"Task {name!r} is built in and cannot be unregistered.")
    TASKS.pop(name, None)


def task_names() -> tuple:
    """The registered task names, in registration order (the built-ins first)."""
    return tuple(TASKS)


def task_class(name: str):
    """The `Task` subclass registered as `name`."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; expected one of {task_names()}.")
    return TASKS[name]


def get_task(name: str, token_config, **kwargs):
    """The codec for task `name` built from a TokenConfig.

    kwargs go to the task's constructor (captioning: `vocab_file=` or `pieces=` to
    decode text).
    """
    return task_class(name)(token_config, **kwargs)


def seq_len(name: str, token_config) -> int:
    """Static training sequence length of task `name` under `token_config`."""
    return task_class(name).sequence_length(token_config)


def supported_tasks(records, keypoint_schema=None) -> list:
    """The tasks per-image records (data/coco.py) can feed, in registry order (each
    task's `supported_by`): what ingestion writes to dataset_info.json `tasks`."""
    return [name for name, cls in TASKS.items() if cls.supported_by(records, keypoint_schema)]


def check_tasks(requested, supported, where):
    """Raise DatasetError naming what is missing when a requested task has no data."""
    missing = [t for t in requested if t not in supported]
    if missing:
        raise DatasetError(
            f"task(s) {', '.join(missing)} were asked for, but {where} supports only "
            f"{', '.join(supported)} (dataset_info.json `tasks`). "
            + " ".join(f"{t} needs {task_class(t).dataset_needs}." for t in missing)
            + " Leave the task out (weight 0) or add the annotations and ingest again.")


def headline_metrics() -> dict:
    """{task: the metric the blessing compares against the baseline}."""
    return {name: cls.headline_metric for name, cls in TASKS.items()}


def decoding_defaults() -> dict:
    """{task: the paper's sampling settings}, from each task class."""
    return {name: dict(cls.decoding_defaults) for name, cls in TASKS.items()}
