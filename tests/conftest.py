"""Shared fixtures. Slow set-up (synthetic data) is made once per test session."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "0"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synth_coco_dir(tmp_path_factory):
    """A small `pix2seq synth` dataset (12 train / 6 val images, seed 0)."""
    from data import synth

    out = tmp_path_factory.mktemp("synth_coco")
    synth.generate(str(out), num_train=12, num_val=6, image_size=256, seed=0)
    return str(out)
