"""Keras 3 stays in use after importing tfx and our packages, in either order, and
our code never loads keras_cv (boxes move through data/geometry.py on core TF ops).

Each import order runs in a fresh interpreter (the choice between Keras 2 and 3
is made once per process), without TF_USE_LEGACY_KERAS in its environment, as a
user's shell would start it. The processes run concurrently to save time.
"""
import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = ["model", "data", "components", "pipeline", "serving"]

PROBE = r"""
import importlib, json, os, subprocess, sys, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    for name in sys.argv[1:]:
        importlib.import_module(name)
report = {"env": os.environ.get("TF_USE_LEGACY_KERAS"),
          "warnings": [str(w.message) for w in caught if "Keras 2" in str(w.message)]}
import pix2seq
report["legacy"] = pix2seq.tf_keras_is_legacy()
if not report["legacy"]:
    import keras, tensorflow as tf
    from data import augment, preprocess
    image = tf.zeros([20, 30, 3], tf.uint8)
    example = {"image": image, "boxes": tf.constant([[0.1, 0.2, 0.6, 0.9]]), "classes": tf.constant([1])}
    preprocess.resize_and_pad(augment.flip_left_right(example, True), 16)
    report.update(
        keras=keras.__version__,
        tf_keras=tf.keras.version(),
        same_model=tf.keras.Model is keras.Model,
        keras_cv_loaded="keras_cv" in sys.modules,
    )
report["child_env"] = subprocess.run(
    [sys.executable, "-c", "import os; print(os.environ.get('TF_USE_LEGACY_KERAS'))"],
    capture_output=True, text=True).stdout.strip()
print("REPORT " + json.dumps(report))
"""

ORDERS = {
    "ours_first": OURS + ["tfx.v1"],
    "tfx_first": ["tfx.v1"] + OURS,
    # Unsupported (see pix2seq/__init__.py): Keras 2 is locked in before we run.
    "transform_first": ["tensorflow_transform", "pix2seq"],
}


@pytest.fixture(scope="module")
def reports():
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    procs = {name: subprocess.Popen([sys.executable, "-c", PROBE, *mods], cwd=REPO, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, mods in ORDERS.items()}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        lines = [line for line in stdout.splitlines() if line.startswith("REPORT ")]
        assert proc.returncode == 0 and lines, f"{name} probe failed:\n{stderr[-3000:]}"
        out[name] = json.loads(lines[-1][len("REPORT "):])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("order", ["ours_first", "tfx_first"])
def test_keras3_after_tfx_and_our_packages(reports, order):
    r = reports[order]
    assert not r["legacy"] and not r["warnings"]
    assert r["keras"].startswith("3.") and r["tf_keras"] == r["keras"]
    assert r["same_model"]  # tf.keras is the keras package, i.e. Keras 3
    # Every package imported and an augmentation and a canvas built: keras_cv never loads.
    assert r["keras_cv_loaded"] is False
    # The guard leaves the variable at 0, so child processes get Keras 3 too.
    assert r["env"] == "0" and r["child_env"] == "0"


@pytest.mark.slow
def test_guard_warns_when_keras2_was_locked_in_first(reports):
    r = reports["transform_first"]
    assert r["legacy"]
    assert len(r["warnings"]) == 1 and "import pix2seq" in r["warnings"][0]
    assert r["env"] == "0" and r["child_env"] == "0"


def test_no_project_module_imports_keras_cv():
    """Statically too (deferred imports inside functions included): keras-cv is not a dependency."""
    imported = set()
    for folder in ["pix2seq", *OURS, "bench", "tools", "examples"]:
        for path in sorted(pathlib.Path(REPO, folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    imported.update((a.name.split(".")[0], path.name) for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    imported.add((node.module.split(".")[0], path.name))
    assert {name for name, _ in imported} >= {"tensorflow", "keras", "data"}  # the scan sees imports
    assert not [p for name, p in imported if name == "keras_cv"]
