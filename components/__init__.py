"""Custom TFX components: COCO example generation and COCO evaluation."""
import pix2seq  # noqa: F401  (Keras 3 guard, see pix2seq/__init__.py)
