"""Beam DoFn: batches of serialized eval examples -> per-image results of the SavedModel.

The work per batch is `evaluation.predict_batch` (the same call `pix2seq evaluate`
makes in process); workers do the heavy part (model calls, mask rasterization and
RLE encoding), the driver only reads the JSON-able results back.
"""
from __future__ import annotations

from typing import Sequence

import apache_beam as beam

from components.coco_evaluator import evaluation
from data import features as F


class PredictDoFn(beam.DoFn):
    """Batch of serialized tf.Examples -> per-image results (model/results.py)."""

    def __init__(self, model_dir: str, options: evaluation.EvalOptions, counter=None):
        """`counter`: a pix2seq.progress.Counter told how many images are done, or None."""
        self._model_dir = model_dir
        self._options = options
        self._counter = counter
        self._runner = None

    def setup(self):
        from components.coco_evaluator import model_runner

        self._runner = model_runner.ModelRunner(self._model_dir, self._options.tasks,
                                                dict(self._options.decoding))

    def process(self, batch: Sequence[bytes]):
        results = evaluation.predict_batch(self._runner, [F.decode_example(b) for b in batch], self._options)
        if self._counter is not None:
            self._counter.add(len(batch))
        yield from results


__all__ = ["PredictDoFn"]
