"""`pix2seq import-checkpoint`: a released official Pix2Seq checkpoint -> our saved model.

    pix2seq import-checkpoint --official CKPT --config det-vit-b-640 --out runs/det-vit-b [--export DIR]

CKPT is the official TF checkpoint prefix (or its directory, for the newest one). The
model is built with the named config (`model.official_checkpoint.OFFICIAL_CONFIGS`),
every variable is copied by key (model/official_checkpoint.py has the table) and OUT
gets `model.weights.h5` + `model_config.json`, which `pix2seq train --init-checkpoint
OUT` fine-tunes from, plus `import_report.json` (official key -> our variable, and the
training-state entries left behind). The official code is not needed.
"""
import json
import os

import pix2seq  # noqa: F401  (Keras 3 guard)
from model import official_checkpoint


def add_arguments(parser):
    parser.add_argument("--official", required=True, metavar="CKPT",
                        help="official TF checkpoint prefix, or a directory holding one")
    parser.add_argument("--config", required=True, choices=tuple(official_checkpoint.OFFICIAL_CONFIGS),
                        help="which released model it is (official-tiny: the test fixture's size)")
    parser.add_argument("--out", required=True, help="output directory (model.weights.h5, model_config.json)")
    parser.add_argument("--export", metavar="DIR", help="also write the serving SavedModel here")
    parser.add_argument("--caption-vocab-file", metavar="SPM",
                        help="with --export: the SentencePiece .model whose pieces the checkpoint's caption tokens "
                             "are (multi-task checkpoints: the T5 C4 32k model, c4_en_32k_spm.model)")


def main(args) -> int:
    from model.training import save_model

    try:
        model, report = official_checkpoint.import_checkpoint(args.official, args.config)
    except (official_checkpoint.UnsupportedCheckpointError, official_checkpoint.CheckpointMismatchError,
            FileNotFoundError) as err:
        raise SystemExit(f"pix2seq import-checkpoint: {err}")
    os.makedirs(args.out, exist_ok=True)
    save_model(model, args.out)
    with open(os.path.join(args.out, "import_report.json"), "w") as f:
        json.dump({"official": args.official, "config": args.config, "mapped": report.mapped,
                   "dropped": list(report.dropped)}, f, indent=1)
    print(f"{report.summary()}; saved to {args.out}")
    if args.export:
        from model.export import export_saved_model

        export_saved_model(model, args.export, args.caption_vocab_file)
        print(f"serving SavedModel: {args.export}")
    return 0
