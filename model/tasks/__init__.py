"""Task codecs: one module per vision task owns all of its tokens.

Looked up by name through an explicit table (no registration by import side effect):
`get_task("detection", token_config)`.
"""
import pix2seq  # noqa: F401  (Keras 3 guard, see pix2seq/__init__.py)

from model.tasks.captioning import CaptioningTask
from model.tasks.detection import DetectionTask
from model.tasks.keypoints import KeypointTask
from model.tasks.segmentation import SegmentationTask

TASK_NAMES = ("detection", "segmentation", "keypoints", "captioning")

TASKS = {
    "detection": DetectionTask,
    "segmentation": SegmentationTask,
    "keypoints": KeypointTask,
    "captioning": CaptioningTask,
}


def get_task(name: str, token_config, **kwargs):
    """The codec for task `name` built from a TokenConfig.

    kwargs go to the task's constructor (captioning: `vocab_file=` or `pieces=` to
    decode text).
    """
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; expected one of {TASK_NAMES}.")
    return TASKS[name](token_config, **kwargs)
