"""`pix2seq ingest`: the CocoExampleGen pipeline outside TFX.

    pix2seq ingest --coco-dir D --out OUT [--workers N] [--beam-arg=--runner=...]...

writes OUT/examples/Split-{train,eval}/*.gz (+ dataset_info.json),
OUT/vocabulary/caption_spm.model (+ vocab_info.json) and OUT/report/errors.jsonl
(+ summary.json), the same files the component writes into its artifacts, and
prints the summary. Exit status 1 when more than --max-error-fraction of the
records were rejected (the report is still written).
"""
from components import beam_ingest


def add_arguments(parser):
    parser.add_argument("--coco-dir", required=True, help="COCO-format directory (annotations/ + images)")
    parser.add_argument("--out", required=True, help="output directory (local path or gs://...)")
    parser.add_argument("--beam-arg", action="append", default=[], metavar="ARG",
                        help="one Beam pipeline option, e.g. --beam-arg=--runner=DataflowRunner (repeatable)")
    parser.add_argument("--workers", type=int, default=0,
                        help="DirectRunner worker processes (multi_processing mode); 0 = in memory")
    parser.add_argument("--max-error-fraction", type=float,
                        default=beam_ingest.DEFAULT_MAX_ERROR_FRACTION,
                        help="fail when more than this fraction of records is rejected")
    parser.add_argument("--caption-vocab-size", type=int,
                        default=beam_ingest.DEFAULT_CAPTION_VOCAB_SIZE,
                        help="SentencePiece pieces (upper bound; a small corpus gets fewer)")
    parser.add_argument("--num-shards", type=int, default=0, help="shards per split; 0 = runner decides")


def beam_args(args):
    """Beam pipeline options from --beam-arg and --workers."""
    extra = list(args.beam_arg)
    if args.workers:
        extra += [f"--direct_num_workers={args.workers}", "--direct_running_mode=multi_processing"]
    return extra



def main(args) -> int:
    examples, vocabulary, report = beam_ingest.output_dirs(args.out)
    try:
        _, summary = beam_ingest.ingest(
            args.coco_dir, args.out, beam_args(args), caption_vocab_size=args.caption_vocab_size,
            max_error_fraction=args.max_error_fraction, num_shards=args.num_shards)
    except beam_ingest.IngestError as e:
        print(beam_ingest.format_summary(e.summary))
        print(f"FAILED: rejected fraction {e.summary['error_fraction']:.2%} > "
              f"--max-error-fraction {args.max_error_fraction:.2%}; see {report}")
        return 1
    print(beam_ingest.format_summary(summary))
    print(f"examples: {examples}\nvocabulary: {vocabulary}\nreport: {report}")
    return 0
