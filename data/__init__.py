"""Data: synthetic COCO data, COCO reading/validation, augmentation, tf.data."""
import pix2seq  # noqa: F401  (Keras 3 guard, see pix2seq/__init__.py)
