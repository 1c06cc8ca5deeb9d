"""pix2seq-tfx: Pix2Seq v2 (one token interface for detection, segmentation,
keypoints and captioning) as a TFX pipeline served over TF Serving gRPC.

Keras 3 guard: importing `tfx.v1` imports tensorflow_transform, which sets
TF_USE_LEGACY_KERAS=1 when the variable is unset and so turns `tf.keras` into
Keras 2 for this process and its children. Every package of this project
imports this module first, so the variable is pinned to 0 before TensorFlow
can be imported through us. Our code says `import keras`, never `tf.keras`.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "0"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
