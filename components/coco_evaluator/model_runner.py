"""Calls the exported SavedModel the way a serving client would (model/export.py).

All tasks at once go through `detect_and_describe` (one image encoding serves
detection, masks for every detection, keypoints for detected persons and the
caption). Fewer tasks use `detect` and `caption` only as needed. With decoding
options set, each signature's `_with_options` twin is called instead, its other
option inputs left at the paper's defaults.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from model import signatures as signatures_lib
from model.tasks import DetectionTask, SegmentationTask, task_class, task_names

NO_CAP = 1 << 16  # max_objects that leaves the model's own maximum in force


def option_defaults(signature: str) -> Dict[str, float]:
    """The paper's values of a `_with_options` signature's option inputs: temperature /
    top_p of the task that owns the signature (`detect_and_describe`'s are detection's),
    num_samples segmentation's."""
    plain = signature[:-len("_with_options")] if signature.endswith("_with_options") else signature
    owner = next((task_class(t) for t in task_names() if plain in task_class(t).signatures), DetectionTask)
    return {"max_objects": NO_CAP, "num_samples": SegmentationTask.decoding_defaults["num_samples"], "seed": 0,
            **owner.decoding_defaults}


class MissingSignatureError(ValueError):
    """The SavedModel lacks a signature the asked tasks need (the model was trained
    without a task, or exported with fewer signatures)."""


def signatures_for(tasks: Sequence[str], with_options: bool) -> list:
    """Signature names that answer `tasks`: one task that answers from images alone, its
    plain signature; several, or one describing detected boxes, `detect_and_describe`
    (one image encoding for all)."""
    classes = [task_class(t) for t in task_names() if t in tasks]
    if len(classes) == 1 and classes[0].serves_from_images:
        names = [classes[0].signatures[0]]
    else:
        names = ["detect_and_describe"] if classes else []
    return [f"{n}_with_options" for n in names] if with_options else names


class ModelRunner:
    def __init__(self, model_dir: str, tasks: Sequence[str], options: Optional[Mapping[str, float]] = None):
        """Args:
          model_dir: a SavedModel written by model.export.export_saved_model.
          tasks: the tasks to predict for.
          options: decoding options (max_objects, temperature, top_p, num_samples, seed)
            for the `_with_options` signatures; None or empty: the plain signatures
            (the paper's defaults).
        """
        self._model = tf.saved_model.load(model_dir)
        self._tasks = tuple(tasks)
        self._options = dict(options or {})
        names = set(self._model.signatures.keys())
        self.model_tasks = signatures_lib.tasks_of(
            names, {n: set(self._model.signatures[n].structured_outputs) for n in names})
        if any(t not in self.model_tasks for t in self._tasks):
            raise MissingSignatureError(signatures_lib.missing_task_message(model_dir, self._tasks, self.model_tasks))
        wanted = signatures_for(self._tasks, bool(self._options))
        missing = [w for w in wanted if w not in names]
        if missing:
            raise MissingSignatureError(f"SavedModel {model_dir} lacks signatures {missing} (needed for tasks "
                                        f"{list(self._tasks)}); it has {sorted(names)}. Export it with them "
                                        f"(model/export.py) or ask for fewer tasks.")
        self._signatures = {w: self._model.signatures[w] for w in wanted}

    def __call__(self, images: Sequence[bytes]) -> Dict[str, np.ndarray]:
        batch = tf.constant(list(images), tf.string)
        outputs: Dict[str, np.ndarray] = {}
        for name, fn in self._signatures.items():
            specs = fn.structured_input_signature[1]
            kwargs = {"images": batch}
            if self._options:
                values = {**option_defaults(name), **self._options}
                kwargs.update({k: tf.constant(values[k], specs[k].dtype) for k in specs if k != "images"})
            outputs.update({k: v.numpy() for k, v in fn(**kwargs).items()})
        return outputs
