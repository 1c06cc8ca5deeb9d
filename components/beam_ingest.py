"""COCO directory -> gzipped TFRecord shards, caption vocabulary, error report.

The one ingestion pipeline, shared by the CocoExampleGen TFX component and
`pix2seq ingest`. Work split:

- Driver (once): parse every annotation file once (data/coco.py), validate and
  join per image, train SentencePiece on the train captions, tokenize all
  captions, and stage the per-image records as JSON Lines next to the report.
- Beam workers: read the staged records, read + verify + normalize each image
  (data/image_io.py), build the tf.train.Example (data/features.py), write
  `Split-<split>/data_tfrecord-*.gz`; bad images go to the error report.

No worker ever opens an annotation file. Runner and parallelism come from the
Beam options: DirectRunner in memory by default, `--direct_num_workers N
--direct_running_mode multi_processing` for local processes, Dataflow / Flink /
Spark by their usual flags.

Outputs: `examples_dir/Split-{train,eval}/data_tfrecord-*.gz`,
`examples_dir/dataset_info.json` (categories with names, keypoint names,
skeleton, counts, caption vocabulary size, and what data/dataset_info.py infers:
the class map, the keypoint schema and the tasks the data supports) and a copy of the caption model;
`vocab_dir/caption_spm.{model,vocab}` + `vocab_info.json`;
`report_dir/errors.jsonl` + `summary.json`.
"""
import json
import logging
import math
import os
import tempfile

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from data import coco, dataset_info, features, image_io
from data import validate as V
from pix2seq import progress

log = logging.getLogger(__name__)

DEFAULT_CAPTION_VOCAB_SIZE = 32000
DEFAULT_MAX_ERROR_FRACTION = 0.01
SPM_MODEL = "caption_spm.model"
SPM_VOCAB = "caption_spm.vocab"
VOCAB_INFO = "vocab_info.json"
DATASET_INFO = "dataset_info.json"
ERRORS = "errors.jsonl"
SUMMARY = "summary.json"
INPUT_FINGERPRINT = "input_fingerprint.txt"  # what `ingest(..., reuse=True)` compares
_RECORDS_PER_STAGED_FILE = 500
PROGRESS_KINDS = ("written", "quarantined")


class IngestError(RuntimeError):
    """The run rejected more than max_error_fraction of its records."""

    def __init__(self, summary):
        super().__init__(f"ingestion rejected {summary['dropped']} of {summary['total_records']} records "
                         f"({summary['error_fraction']:.2%} > max_error_fraction "
                         f"{summary['max_error_fraction']:.2%}): {format_summary(summary)}")
        self.summary = summary


# File access through Beam's FileSystems (local, gs://, s3://, hdfs://): no
# TensorFlow import here, so Beam worker processes start without it.
def _join(base, *parts):
    return FileSystems.join(base, *parts)


def _write_bytes(path, data):
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)


def _write_text(path, text):
    _write_bytes(path, text.encode("utf-8"))


def _read_text(path):
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read().decode("utf-8")


def _delete_tree(path):
    if "://" in path:
        matched = FileSystems.match([_join(path, "**")])[0].metadata_list
        if matched:
            FileSystems.delete([m.path for m in matched])
    elif os.path.exists(path):
        FileSystems.delete([path])


class BuildExample(beam.DoFn):
    """Staged per-image record (JSON line) -> serialized tf.train.Example, or report rows."""

    ISSUES = "issues"

    def __init__(self, split, image_dir, num_keypoints, tally=None):
        self._split, self._image_dir, self._num_keypoints = split, image_dir, num_keypoints
        # live progress in the driver (pix2seq/progress.py); None: not counted
        self._progress = {k: tally.counter(k) for k in PROGRESS_KINDS} if tally else {}
        self._written = beam.metrics.Metrics.counter("coco_ingest", f"images_written_{split}")
        self._rejected = beam.metrics.Metrics.counter("coco_ingest", f"images_rejected_{split}")

    def _issue(self, record, reason, action, detail=""):
        field = "file_name" if reason in ("image_missing", "image_path_escapes") else "image"
        row = V.entry(record["source_file"], reason, field, action, record["image_id"], detail=detail)
        row["split"] = self._split
        return beam.pvalue.TaggedOutput(self.ISSUES, json.dumps(row))

    def _count(self, kind):
        if self._progress:
            self._progress[kind].add()

    def process(self, line):
        record = json.loads(line)
        try:
            example, notes = features.example_from_file(record, self._image_dir, self._num_keypoints)
        except image_io.ImageRejected as e:
            self._rejected.inc()
            self._count("quarantined")
            yield self._issue(record, e.reason, V.DROPPED, e.detail)
            return
        for note in notes:
            yield self._issue(record, note, V.REPAIRED)
        self._written.inc()
        self._count("written")
        yield example


def build_pipeline(pipeline, staged, image_dirs, examples_dir, issues_prefix, num_keypoints,
                   num_shards=0, tally=None):
    """Adds the per-split read -> BuildExample -> WriteToTFRecord branches to `pipeline`
    (`tally`: a pix2seq.progress.Tally counting PROGRESS_KINDS, or None)."""
    issues = []
    for split in sorted(staged):
        built = (pipeline
                 | f"ReadRecords[{split}]" >> beam.io.ReadFromText(staged[split])
                 | f"Distribute[{split}]" >> beam.Reshuffle()
                 | f"BuildExamples[{split}]" >> beam.ParDo(
                     BuildExample(split, image_dirs[split], num_keypoints, tally)).with_outputs(
                         BuildExample.ISSUES, main="examples"))
        _ = built.examples | f"WriteExamples[{split}]" >> beam.io.WriteToTFRecord(
            _join(examples_dir, f"Split-{split}", "data_tfrecord"), file_name_suffix=".gz",
            compression_type=CompressionTypes.GZIP, num_shards=num_shards)
        issues.append(built[BuildExample.ISSUES])
    _ = (issues | "AllIssues" >> beam.Flatten()
         | "WriteIssues" >> beam.io.WriteToText(issues_prefix, file_name_suffix=".jsonl",
                                                 num_shards=1, shard_name_template=""))


def train_vocabulary(train_records, vocab_dir, caption_vocab_size):
    """Trains SentencePiece on the train captions; writes the model + vocab_info.json.

    The vocabulary size is min(caption_vocab_size, what the corpus supports):
    model.caption_tokenizer.train_sentencepiece treats the size as a soft limit, and
    the size actually built is recorded in vocab_info.json. Returns the local model
    path, or None when the train split has no captions."""
    from model import caption_tokenizer

    captions = [c["text"] for r in train_records for c in r["captions"]]
    info = {"requested_vocab_size": caption_vocab_size, "num_training_captions": len(captions),
            "caption_vocab_size": 0, "model": None}
    local_model = None
    if captions:
        local_dir = tempfile.mkdtemp(prefix="caption_spm_")
        local_model = caption_tokenizer.train_sentencepiece(
            captions, os.path.join(local_dir, "caption_spm"), caption_vocab_size)
        for name in (SPM_MODEL, SPM_VOCAB):
            with open(os.path.join(local_dir, name), "rb") as f:
                _write_bytes(_join(vocab_dir, name), f.read())
        import sentencepiece as spm

        info.update(caption_vocab_size=spm.SentencePieceProcessor(model_file=local_model).get_piece_size(),
                    model=SPM_MODEL)
        log.info("ingest: caption vocabulary of %d pieces from %d captions", info["caption_vocab_size"],
                 len(captions))
    _write_text(_join(vocab_dir, VOCAB_INFO), json.dumps(info, indent=1))
    return local_model


def tokenize_captions(data, model_path):
    """Adds SentencePiece piece ids (no shift, no EOS) to every caption in place."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model_path) if model_path else None
    for records in data.splits.values():
        for record in records:
            for caption in record["captions"]:
                caption["ids"] = sp.encode(caption["text"]) if sp else []


def _stage_records(records, staging_dir, split):
    num_files = max(1, math.ceil(len(records) / _RECORDS_PER_STAGED_FILE))
    for i in range(num_files):
        chunk = records[i * _RECORDS_PER_STAGED_FILE:(i + 1) * _RECORDS_PER_STAGED_FILE]
        _write_text(_join(staging_dir, f"{split}-{i:05d}.jsonl"),
                    "".join(json.dumps(r) + "\n" for r in chunk))
    return _join(staging_dir, f"{split}-*.jsonl")


def _report_key(row):
    return (row.get("split") or "", row["file"] or "", str(row["image_id"]), str(row["annotation_id"]),
            row["reason"])


def format_summary(summary):
    """Human-readable one-block summary (images written per split, rejections by reason)."""
    lines = [f"images written: " + ", ".join(f"{s}={n}" for s, n in summary["images_written"].items()),
             f"records: {summary['total_records']}, rejected: {summary['dropped']} "
             f"({summary['error_fraction']:.2%}, max {summary['max_error_fraction']:.2%})"]
    lines += [f"  rejected {reason}: {n}" for reason, n in summary["dropped_by_reason"].items()]
    lines += [f"  repaired {reason}: {n}" for reason, n in summary["repaired_by_reason"].items()]
    return "\n".join(lines)


def output_dirs(out):
    """(examples, vocabulary, report) directories under `out`: the `pix2seq ingest` layout."""
    out = out.rstrip("/")
    join = (lambda *p: "/".join(p)) if "://" in out else os.path.join
    return join(out, "examples"), join(out, "vocabulary"), join(out, "report")


def ingest(coco_dir, out, beam_args=(), caption_vocab_size=DEFAULT_CAPTION_VOCAB_SIZE,
           max_error_fraction=DEFAULT_MAX_ERROR_FRACTION, num_shards=0, reuse=False):
    """`run_ingest` into `output_dirs(out)` with a Beam pipeline from `beam_args` (default:
    DirectRunner in memory); returns (examples directory, summary). From Python this is
    how a COCO directory becomes the Examples directory model/datasets.py reads.

    With `reuse`, a previous ingestion into `out` of the same files with the same
    vocabulary size (data/fingerprint.py input fingerprint) is kept: summary None.
    Raises IngestError as `run_ingest` does.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    from data import fingerprint

    examples, vocabulary, report = output_dirs(out)
    stamp = _join(out.rstrip("/"), INPUT_FINGERPRINT)
    try:
        key = f"{fingerprint.input_fingerprint(coco_dir)}, caption_vocab_size {caption_vocab_size}"
    except FileNotFoundError:
        key = None  # run_ingest below says what a COCO directory needs
    if reuse and key and FileSystems.exists(stamp) and _read_text(stamp) == key:
        return examples, None
    if FileSystems.exists(stamp):  # a failed rerun must not look finished
        FileSystems.delete([stamp])
    summary = run_ingest(coco_dir, examples, vocabulary, report,
                         make_pipeline=lambda: beam.Pipeline(options=PipelineOptions(list(beam_args))),
                         caption_vocab_size=caption_vocab_size, max_error_fraction=max_error_fraction,
                         num_shards=num_shards)
    _write_text(stamp, key)
    return examples, summary


def run_ingest(coco_dir, examples_dir, vocab_dir, report_dir, make_pipeline,
               caption_vocab_size=DEFAULT_CAPTION_VOCAB_SIZE,
               max_error_fraction=DEFAULT_MAX_ERROR_FRACTION, num_shards=0):
    """Runs the whole ingestion; returns the summary dict or raises IngestError.

    Args:
      make_pipeline: () -> beam.Pipeline (the TFX executor's `_make_beam_pipeline`,
        or one built from command-line Beam args).
    The report and summary are written before an IngestError is raised.
    """
    from model.tasks import supported_tasks  # the driver's only: Beam workers stay TensorFlow-free

    data = coco.load_coco_dir(coco_dir)
    log.info("ingest: %d annotation records, images per split: %s", data.total_records,
             ", ".join(f"{s}={len(r)}" for s, r in sorted(data.splits.items())))
    inferred = dataset_info.info_fields(data.categories, data.splits.get("train", []), supported_tasks)
    to_class = dataset_info.class_index(inferred["class_category_ids"])
    for records in data.splits.values():  # object/class holds the class index (the class map)
        for record in records:
            for obj in record["objects"]:
                obj["class"] = to_class(obj["category_id"])
    for split in data.splits:  # a rerun into the same directory replaces, never mixes, shards
        split_dir = _join(examples_dir, f"Split-{split}")
        _delete_tree(split_dir)
        if "://" not in split_dir:
            os.makedirs(split_dir)
    model_path = train_vocabulary(data.splits.get("train", []), vocab_dir, caption_vocab_size)
    tokenize_captions(data, model_path)
    if model_path:
        with open(model_path, "rb") as f:
            _write_bytes(_join(examples_dir, SPM_MODEL), f.read())

    staging = _join(report_dir, "staging")
    _delete_tree(staging)
    staged = {s: _stage_records(r, staging, s) for s, r in data.splits.items() if r}
    if staged:
        total = sum(len(r) for r in data.splits.values())
        with progress.track("ingest", total, PROGRESS_KINDS) as tally, make_pipeline() as pipeline:
            build_pipeline(pipeline, staged, data.image_dirs, examples_dir,
                           _join(staging, "image_issues"), data.num_keypoints, num_shards, tally)
    issues_file = _join(staging, "image_issues.jsonl")
    image_issues = ([json.loads(line) for line in _read_text(issues_file).splitlines() if line.strip()]
                    if FileSystems.exists(issues_file) else [])
    _delete_tree(staging)

    issues = sorted(data.issues + image_issues, key=_report_key)
    summary = V.summarize(issues, data.total_records)
    dropped_images = {s: 0 for s in data.splits}
    for row in image_issues:
        dropped_images[row["split"]] += row["action"] == V.DROPPED
    summary["images_written"] = {s: len(r) - dropped_images[s] for s, r in sorted(data.splits.items())}
    summary["max_error_fraction"] = max_error_fraction
    summary["caption_vocab_size"] = json.loads(_read_text(_join(vocab_dir, VOCAB_INFO)))["caption_vocab_size"]
    _write_text(_join(report_dir, ERRORS), "".join(json.dumps(r, sort_keys=True) + "\n" for r in issues))
    _write_text(_join(report_dir, SUMMARY), json.dumps(summary, indent=1))
    _write_text(_join(examples_dir, DATASET_INFO), json.dumps({
        "categories": data.categories, "num_keypoints": data.num_keypoints,
        "splits": sorted(data.splits), "num_images": summary["images_written"],
        "caption_vocab_size": summary["caption_vocab_size"],
        "caption_model": SPM_MODEL if model_path else None, "source": coco_dir, **inferred}, indent=1))
    if summary["error_fraction"] > max_error_fraction:
        raise IngestError(summary)
    return summary
