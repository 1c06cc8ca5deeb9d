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


# The modules that take longest (their fixtures train, export or run the pipeline),
# heaviest first, as measured in a full run; `make test` passes --no-loadscope-reorder,
# so pytest-xdist hands out whole modules (--dist loadfile) in this order and no worker
# starts a long module when the others are nearly done. Order only: every module runs.
HEAVIEST_FIRST = (
    "test_pipeline_e2e.py",
    "test_memorize.py",
    "test_own_dataset.py",
    "test_export.py",  # builds the run's shared tiny export (tests/tiny_export.py) ...
    "test_keras_quickstart.py",
    "test_input_pipelines.py",
    "test_training.py",
    "test_keras_api.py",
)  # ... which test_server, test_predict_cli and test_evaluate_cli, later, find made


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
