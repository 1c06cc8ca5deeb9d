"""`pix2seq synth OUT_DIR`: write the synthetic COCO-format dataset (see data/synth.py)."""
import argparse
import sys
import time

from data import synth


def _count(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer. Received: {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer. Received: {text!r}")
    return value


def add_arguments(parser):
    parser.add_argument("out_dir", metavar="OUT_DIR",
                        help="directory to write images/{train,val}/ and annotations/ into")
    parser.add_argument("--train", type=_count, default=64, help="number of train images (default 64)")
    parser.add_argument("--val", type=_count, default=16, help="number of val images (default 16)")
    parser.add_argument("--image-size", type=int, default=256,
                        help=f"longest image side in pixels, {synth.MIN_IMAGE_SIZE}-{synth.MAX_IMAGE_SIZE} "
                             "(default 256); aspect ratios vary")
    parser.add_argument("--seed", type=_count, default=0,
                        help="random seed; the same seed writes identical files (default 0)")


def main(args) -> int:
    start = time.time()
    try:
        synth.generate(args.out_dir, args.train, args.val, image_size=args.image_size, seed=args.seed)
    except ValueError as err:
        print(f"pix2seq synth: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.train} train + {args.val} val images with annotations to {args.out_dir} "
          f"in {time.time() - start:.1f}s")
    return 0
