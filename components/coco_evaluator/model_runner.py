"""Calls the exported SavedModel the way a serving client would (model/export.py).

All tasks at once go through `detect_and_describe` (one image encoding serves
detection, masks for every detection, keypoints for detected persons and the
caption); with decoding options set, its `_with_options` twin. Fewer tasks use
`detect` and `caption` only as needed.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

INSTANCE_TASKS = ("segmentation", "keypoints")


class MissingSignatureError(ValueError):
    """The SavedModel lacks a signature the asked tasks need."""


class ModelRunner:
    def __init__(self, model_dir: str, tasks: Sequence[str], options: Optional[Mapping[str, float]] = None):
        """Args:
          model_dir: a SavedModel written by model.export.export_saved_model.
          tasks: the tasks to predict for.
          options: decoding options for `detect_and_describe_with_options`
            (max_objects, temperature, top_p, num_samples, seed); None: paper defaults.
        """
        self._model = tf.saved_model.load(model_dir)
        self._tasks = tuple(tasks)
        self._options = dict(options or {})
        names = set(self._model.signatures.keys())
        self._all_in_one = any(t in self._tasks for t in INSTANCE_TASKS) or (
            "detection" in self._tasks and "captioning" in self._tasks)
        wanted = ["detect_and_describe"] if self._all_in_one else (
            (["detect"] if "detection" in self._tasks else []) + (["caption"] if "captioning" in self._tasks else []))
        if self._all_in_one and self._options:
            wanted = ["detect_and_describe_with_options"]
        missing = [w for w in wanted if w not in names]
        if missing:
            raise MissingSignatureError(f"SavedModel {model_dir} lacks signatures {missing} (needed for tasks "
                                        f"{list(self._tasks)}); it has {sorted(names)}")
        self._signatures = {w: self._model.signatures[w] for w in wanted}

    def __call__(self, images: Sequence[bytes]) -> Dict[str, np.ndarray]:
        batch = tf.constant(list(images), tf.string)
        outputs: Dict[str, np.ndarray] = {}
        for name, fn in self._signatures.items():
            kwargs = {"images": batch}
            if name.endswith("_with_options"):
                kwargs.update({
                    "max_objects": tf.constant(int(self._options.get("max_objects", 100)), tf.int32),
                    "temperature": tf.constant(float(self._options.get("temperature", 1.0)), tf.float32),
                    "top_p": tf.constant(float(self._options.get("top_p", 0.4)), tf.float32),
                    "num_samples": tf.constant(int(self._options.get("num_samples", 8)), tf.int32),
                    "seed": tf.constant(int(self._options.get("seed", 0)), tf.int32),
                })
            outputs.update({k: v.numpy() for k, v in fn(**kwargs).items()})
        return outputs
