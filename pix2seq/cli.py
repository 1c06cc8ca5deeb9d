"""`pix2seq` command line.

Each subcommand lives in the module that does the work; the module exposes
`add_arguments(parser)` and `main(args) -> int`. Modules are imported only for
the subcommand being run, so `pix2seq --help` stays fast and a subcommand's
heavy imports (TensorFlow, TFX, Beam) are paid only when needed.
"""
import argparse
import importlib
import sys

import pix2seq

# name -> (module, one-line help)
SUBCOMMANDS = {
    "synth": ("data.synth_cli", "write the synthetic COCO-format dataset"),
    "tokens": ("model.tokens_cli", "show a task's token sequence for one image"),
    "ingest": ("components.ingest_cli", "COCO directory -> TFRecord shards (Beam), vocabulary, error report"),
    "train": ("pix2seq.train_cli", "train with Keras model.fit on COCO data or ingested examples"),
    "predict": ("serving.predict_cli", "run a SavedModel (in process or over gRPC) on images"),
    "pipeline": ("pipeline.cli", "run or compile the TFX pipeline"),
    "serve": ("serving.server_cli", "serve a versioned model directory over TF Serving gRPC"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pix2seq",
        description="Pix2Seq v2 on TFX: detection, segmentation, keypoints and captioning as tokens.",
    )
    parser.add_argument("--version", action="version", version=pix2seq.__version__)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
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
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
