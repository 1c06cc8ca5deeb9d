"""CocoEvaluator: COCO metrics + blessing as a TFX Beam component."""
import pix2seq  # noqa: F401
