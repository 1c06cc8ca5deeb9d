"""Model: vocabulary, task codecs, encoder/decoder, training, decoding, export."""
import pix2seq  # noqa: F401  (Keras 3 guard, see pix2seq/__init__.py)
