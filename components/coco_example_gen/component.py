"""CocoExampleGen: spec, output artifact types and the component (TFX's spec /
component / executor split; the work is in components/beam_ingest.py).

Outputs:
- `examples` (standard `Examples`): `Split-train/`, `Split-eval/` gzipped
  TFRecord shards of tf.train.Example (data/features.py), split_names set, plus
  `dataset_info.json` (categories with names, keypoint names, skeleton, counts)
  and `caption_spm.model` (a copy: the standard Trainer takes no vocabulary input);
  custom property `input_fingerprint` (what was ingested, see driver.py).
- `vocabulary` (`CaptionVocabulary`): `caption_spm.model`, `caption_spm.vocab`,
  `vocab_info.json`; custom property `caption_vocab_size`.
- `error_report` (`IngestReport`): `errors.jsonl` (one row per quarantined or
  repaired record) and `summary.json`; custom properties `num_records`,
  `num_rejected`.

Cache key: besides the parameters, the driver's `input_fingerprint` of the files
under `coco_dir` and `code_fingerprint` (the ingestion code, set by the pipeline).
"""
from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import artifact, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components import beam_ingest
from components.coco_example_gen import driver, executor


class CaptionVocabulary(artifact.Artifact):
    """A trained SentencePiece caption model (caption_spm.model) and vocab_info.json."""

    TYPE_NAME = "pix2seq.CaptionVocabulary"  # KFP v2 needs `<namespace>.<Name>` titles


class IngestReport(artifact.Artifact):
    """Ingestion error report: errors.jsonl + summary.json."""

    TYPE_NAME = "pix2seq.IngestReport"


class CocoExampleGenSpec(types.ComponentSpec):
    PARAMETERS = {
        "coco_dir": ExecutionParameter(type=str),
        "caption_vocab_size": ExecutionParameter(type=int),
        "max_error_fraction": ExecutionParameter(type=float),
        "num_shards": ExecutionParameter(type=int),
        # set by the driver at run time, never by the pipeline author
        driver.INPUT_FINGERPRINT: ExecutionParameter(type=str, optional=True),
        # the ingestion code's fingerprint: new code ingests again
        "code_fingerprint": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {}
    OUTPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "vocabulary": ChannelParameter(type=CaptionVocabulary),
        "error_report": ChannelParameter(type=IngestReport),
    }


class CocoExampleGen(base_beam_component.BaseBeamComponent):
    """COCO directory -> Examples + CaptionVocabulary + IngestReport (Beam).

    Beam options (runner, `--direct_num_workers`, Dataflow project, ...) come from
    the pipeline's `beam_pipeline_args` or `with_beam_pipeline_args`.
    """

    SPEC_CLASS = CocoExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
    DRIVER_CLASS = driver.InputFingerprintDriver

    def __init__(self, coco_dir: str,
                 caption_vocab_size: int = beam_ingest.DEFAULT_CAPTION_VOCAB_SIZE,
                 max_error_fraction: float = beam_ingest.DEFAULT_MAX_ERROR_FRACTION,
                 num_shards: int = 0, code_fingerprint: str = ""):
        """Args:
          coco_dir: COCO-format directory (see data/coco.py for the layout).
          caption_vocab_size: SentencePiece pieces, an upper bound (small corpora get fewer).
          max_error_fraction: fail the run when more of the input records are rejected.
          num_shards: TFRecord shards per split; 0 lets the runner decide.
          code_fingerprint: of the ingestion code (data/fingerprint.py), part of the cache key.
        """
        super().__init__(spec=CocoExampleGenSpec(
            coco_dir=coco_dir, caption_vocab_size=caption_vocab_size,
            max_error_fraction=float(max_error_fraction), num_shards=num_shards,
            code_fingerprint=code_fingerprint,
            examples=types.Channel(type=standard_artifacts.Examples),
            vocabulary=types.Channel(type=CaptionVocabulary),
            error_report=types.Channel(type=IngestReport)))
