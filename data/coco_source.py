"""Training data straight from a COCO directory, without a TFX pipeline.

`pix2seq train --coco-dir D` needs the same shards CocoExampleGen writes; this runs
the very same ingestion (components/beam_ingest.py: validation, quarantine,
SentencePiece, one tf.train.Example per image) in-process on Beam's DirectRunner
into a work directory, once, and hands back the shard globs for data/pipelines.py.
"""
import dataclasses
import json
import os

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class IngestedData:
    """Where the ingested splits live.

    Attributes:
      train_files / eval_files: glob patterns of the gzipped shards (eval may match nothing).
      caption_model: SentencePiece model path, or None without captions.
      info: dataset_info.json (categories, num_keypoints, caption_vocab_size, ...).
    """

    train_files: str
    eval_files: str
    caption_model: str
    info: dict

    @property
    def caption_vocab_size(self):
        return self.info.get("caption_vocab_size")

    @property
    def num_keypoints(self):
        return self.info.get("num_keypoints")


def _load(examples_dir, coco_dir):
    info_path = os.path.join(examples_dir, "dataset_info.json")
    if not tf.io.gfile.exists(info_path):
        return None
    with tf.io.gfile.GFile(info_path) as f:
        info = json.load(f)
    if info.get("source") != coco_dir:
        return None
    model = info.get("caption_model")
    return IngestedData(
        train_files=os.path.join(examples_dir, "Split-train", "*.gz"),
        eval_files=os.path.join(examples_dir, "Split-eval", "*.gz"),
        caption_model=os.path.join(examples_dir, model) if model else None,
        info=info)


def ingest_coco_dir(coco_dir, work_dir, caption_vocab_size=None, beam_args=(), reuse=True):
    """Ingests `coco_dir` into `work_dir`/{examples,vocabulary,report} (reused when a
    previous run ingested the same directory) and returns an IngestedData.

    Raises components.beam_ingest.IngestError when too many records are rejected.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from components import beam_ingest, ingest_cli

    examples, vocabulary, report = ingest_cli.output_dirs(work_dir)
    if reuse:
        found = _load(examples, coco_dir)
        if found is not None:
            return found
    kwargs = {}
    if caption_vocab_size is not None:
        kwargs["caption_vocab_size"] = caption_vocab_size
    beam_ingest.run_ingest(coco_dir, examples, vocabulary, report,
                           make_pipeline=lambda: beam.Pipeline(options=PipelineOptions(list(beam_args))),
                           **kwargs)
    found = _load(examples, coco_dir)
    if found is None:
        raise RuntimeError(f"ingestion of {coco_dir!r} wrote no dataset_info.json under {examples!r}")
    return found
