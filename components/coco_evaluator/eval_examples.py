"""The eval split as the CocoEvaluator's Beam workers read it.

The workers read the gzipped TFRecord shards themselves (`ReadEvalExamples`), so
image bytes never pass through the driver: what the driver gets back is small —
the examples without their image (`without_image`, enough for the ground truth),
the per-image results, and the few examples the pictures show (`FirstById`).
"Which examples" is decided by image id, not by file or arrival order, so it is
the same on every runner and the same images `pix2seq evaluate --max-images`
picks.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes

from data import features as F


def image_id(serialized: bytes) -> int:
    """The `image/id` of a serialized tf.train.Example."""
    return int(F.Example.FromString(serialized).features.feature[F.IMAGE_ID].int64_list.value[0])


def without_image(serialized: bytes) -> bytes:
    """The example without `image/encoded`: its annotations, id and size only."""
    example = F.Example.FromString(serialized)
    del example.features.feature[F.IMAGE_ENCODED]
    return example.SerializeToString()


class ReadEvalExamples(beam.PTransform):
    """Shards matching `file_pattern` -> serialized examples; with `max_examples` > 0, only
    the examples with the `max_examples` smallest image ids.

    The cut-off id is found by a separate pass over the ids, so the examples themselves
    stream through once and are never held together (a side input computed from the same
    PCollection would make the runner materialize it)."""

    def __init__(self, file_pattern: str, max_examples: int = 0):
        super().__init__()
        self._pattern = file_pattern
        self._max = int(max_examples or 0)

    def _read(self, pipeline, label):
        return pipeline | label >> beam.io.ReadFromTFRecord(self._pattern, compression_type=CompressionTypes.GZIP)

    def expand(self, pipeline):
        examples = self._read(pipeline, "Read")
        if self._max <= 0:
            return examples
        last_id = (self._read(pipeline, "ReadForIds")
                   | "ImageIds" >> beam.Map(image_id)
                   | "SmallestIds" >> beam.combiners.Top.Smallest(self._max)
                   | "LastId" >> beam.Map(max))
        return examples | "FirstByImageId" >> beam.Filter(
            lambda record, last: image_id(record) <= last, beam.pvalue.AsSingleton(last_id))


class FirstById(beam.PTransform):
    """Serialized examples -> the `count` with the smallest image ids (in no set order)."""

    def __init__(self, count: int):
        super().__init__()
        self._count = int(count)

    def expand(self, examples):
        return (examples
                | "Smallest" >> beam.combiners.Top.Smallest(self._count, key=image_id)
                | "Flatten" >> beam.FlatMap(lambda records: records))


__all__ = ["image_id", "without_image", "ReadEvalExamples", "FirstById"]
