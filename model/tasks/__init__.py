"""Task codecs: one module per vision task owns all of its tokens."""
import pix2seq  # noqa: F401  (Keras 3 guard, see pix2seq/__init__.py)
