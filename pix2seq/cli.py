"""`pix2seq` command line.

Each subcommand lives in the module that does the work; the module exposes
`add_arguments(parser)` and `main(args) -> int`. Modules are imported only for
the subcommand being run, so `pix2seq --help` stays fast and a subcommand's
heavy imports (TensorFlow, TFX, Beam) are paid only when needed.

Console (pix2seq/console.py): progress and results on stdout, real warnings and
errors on stderr, library noise off. `--verbose` (or `PIX2SEQ_LOG=debug`) shows
every library log line and the traceback of a failed command; without it, a bad
input (a missing directory, an invalid file or value) prints one `error:` line.
"""
import argparse
import importlib
import os
import sys

import pix2seq
from pix2seq import console

# name -> (module, one-line help)
SUBCOMMANDS = {
    "synth": ("pix2seq.synth_cli", "write the synthetic COCO-format dataset"),
    "tokens": ("pix2seq.tokens_cli", "show a task's token sequence for one image"),
    "ingest": ("pix2seq.ingest_cli", "COCO directory -> TFRecord shards (Beam), vocabulary, error report"),
    "train": ("pix2seq.train_cli", "train with Keras model.fit on COCO data or ingested examples"),
    "import-checkpoint": ("pix2seq.import_checkpoint_cli", "convert a released official Pix2Seq checkpoint"),
    "predict": ("pix2seq.predict_cli", "run a SavedModel (in process or over gRPC) on images"),
    "evaluate": ("pix2seq.evaluate", "COCO metrics of an exported model on a COCO-format directory"),
    "pipeline": ("pix2seq.pipeline_cli", "run or compile the TFX pipeline"),
    "serve": ("pix2seq.server_cli", "serve a versioned model directory over TF Serving gRPC"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pix2seq",
        description="Pix2Seq v2 on TFX: detection, segmentation, keypoints and captioning as tokens.",
    )
    parser.add_argument("--version", action="version", version=pix2seq.__version__)
    parser.add_argument("--verbose", action="store_true",
                        help=f"show every library log line and full tracebacks (same as {console.LOG_ENV}=debug)")
    return parser


# Errors that come from what the user gave (paths, files, values): one plain line.
USER_ERRORS = (ValueError, OSError)


def main(argv=None) -> int:
    """Runs a subcommand. Called without `argv` (the `pix2seq` program itself), it also
    owns the process's console: stderr filter and logging handlers (pix2seq/console.py);
    a caller passing `argv` (a test, a script) keeps its own."""
    program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    if chosen is not None and "--verbose" in argv[:argv.index(chosen)]:
        os.environ[console.LOG_ENV] = "debug"  # before the subcommand's libraries load; children inherit it
        console.apply_environment()
    if chosen in SUBCOMMANDS and program:
        console.filter_stderr()
        console.setup_logging()
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sp)
            sp.set_defaults(_run=module.main)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as e:
        if console.verbose():
            raise
        print(f"error: {e}", file=sys.stderr)
        print("(`pix2seq --verbose ...` shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
