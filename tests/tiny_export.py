"""One exported tiny random-weights model shared by the export and predict tests.

Exporting traces every decoding loop (tens of seconds), so it happens once per test
run: the first caller writes it under a directory shared by all pytest-xdist workers
of the run, guarded by a file lock; later callers reuse it.
"""
import fcntl
import io
import os

import numpy as np
from PIL import Image

# Shorter sequences than the tiny preset keep the export tests fast.
TINY_TOKENS = {"max_instances": 4, "max_polygon_points": 16}
CAPTIONS = [
    "a red square next to a blue circle",
    "two people standing on a green field",
    "a small yellow triangle above a large square",
    "a person walking past a red circle",
    "three shapes on a grey background",
    "a blue square and a green triangle",
]


def shared_dir(tmp_path_factory):
    """Run-wide directory: the xdist run's base temp, or this session's without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def exported_tiny(tmp_path_factory):
    """Path of the tiny SavedModel (random weights, seed 0, `TINY_TOKENS`, a 6-caption
    SentencePiece vocabulary)."""
    root = shared_dir(tmp_path_factory) / "tiny_export"
    root.mkdir(exist_ok=True)
    export_dir = root / "model"
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (export_dir / "saved_model.pb").exists():
            import keras

            from model import caption_tokenizer, export
            from model.config import preset
            from model.pix2seq_model import Pix2SeqModel

            keras.utils.set_random_seed(0)
            model = Pix2SeqModel(preset("tiny", **TINY_TOKENS))
            model.build()
            spm = caption_tokenizer.train_sentencepiece(CAPTIONS * 5, str(root / "captions"), 64)
            export.export_saved_model(model, str(export_dir), caption_vocab_file=spm)
        fcntl.flock(lock, fcntl.LOCK_UN)
    return str(export_dir)


def encoded_image(height, width, seed, fmt="PNG"):
    """Random-noise picture of the given size, encoded as PNG or JPEG bytes."""
    pixels = np.random.RandomState(seed).randint(0, 255, (height, width, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()
