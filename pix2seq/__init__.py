"""pix2seq-tfx: Pix2Seq v2 (one token interface for detection, segmentation,
keypoints and captioning) as a TFX pipeline served over TF Serving gRPC.

Keras 3 guard: importing `tfx.v1` imports tensorflow_transform, which sets
TF_USE_LEGACY_KERAS=1 when the variable is unset; TensorFlow reads the variable
when `tf.keras` is first touched, and child processes inherit it. Every package
of this project imports this module first, which pins the variable to 0. Our
code says `import keras`, never `tf.keras`.

Supported import orders (tests/test_keras3.py checks them in fresh processes):
  * our packages first, then tfx: Keras 3 everywhere;
  * `import tfx.v1` first, then our packages: with the pinned
    tfx 1.16 `tf.keras` is already resolved to Keras 3 before
    tensorflow_transform writes the variable; the guard then resets it to 0 so
    that child processes (Beam workers, subprocesses) also get Keras 3.
Not supported: importing `tensorflow_transform` directly (or otherwise
resolving `tf.keras` with TF_USE_LEGACY_KERAS=1) before our packages. `tf.keras`
is then Keras 2 for the rest of the process and nothing can switch it back;
the guard warns. Import `pix2seq` first, or export TF_USE_LEGACY_KERAS=0.

Console: the same import sets the libraries' log levels and warning filters before
they load (pix2seq/console.py); `PIX2SEQ_LOG=debug` keeps every library line.
"""
import os
import sys
import types
import warnings

os.environ["TF_USE_LEGACY_KERAS"] = "0"

from pix2seq import console  # noqa: E402  (log levels and warning filters before any library loads)

console.apply_environment()

__version__ = "0.1.0"


def tf_keras_is_legacy():
    """True when TensorFlow already resolved `tf.keras` to Keras 2 (tf_keras).

    Looks without touching `tf.keras`, so an unresolved lazy loader stays
    unresolved (and will pick Keras 3 from the variable set above).
    """
    tf = sys.modules.get("tensorflow")
    resolved = getattr(tf, "__dict__", {}).get("keras")
    # Before first use this is TensorFlow's KerasLazyLoader (a ModuleType subclass).
    if type(resolved) is not types.ModuleType:
        return False
    return resolved.__name__.split(".")[0] == "tf_keras"


if tf_keras_is_legacy():
    warnings.warn(
        "tf.keras was resolved to Keras 2 (tf_keras) before pix2seq was imported, most likely "
        "because tensorflow_transform was imported first with TF_USE_LEGACY_KERAS unset. "
        "pix2seq needs Keras 3: import pix2seq (or our packages) before tensorflow_transform, "
        "or set TF_USE_LEGACY_KERAS=0 in the environment.",
        RuntimeWarning,
        stacklevel=2,
    )
