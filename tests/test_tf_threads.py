"""The inter-op thread pool from TrainConfig (model/tf_threads.py): set before TF
starts, kept (with a warning) after."""
import logging
import subprocess
import sys

import pytest
import tensorflow as tf

from model import tf_threads

FRESH = ("from model import tf_threads; import tensorflow as tf; ok = tf_threads.configure(1); "
         "tf.constant(1.0) + 1.0; print(ok, tf.config.threading.get_inter_op_parallelism_threads())")


@pytest.mark.slow
def test_a_fresh_process_runs_with_the_configured_pool():
    out = subprocess.run([sys.executable, "-c", FRESH], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "1"]


def test_after_tf_started_the_pool_is_kept_and_a_change_is_reported(caplog):
    tf.constant(1.0) + 1.0  # TF's runtime has started in this process
    current = tf.config.threading.get_inter_op_parallelism_threads()
    assert tf_threads.configure(0)  # TF's default: nothing to set
    if current:
        assert tf_threads.configure(current)  # what the process already runs with
    with caplog.at_level(logging.WARNING, logger=tf_threads.__name__):
        assert not tf_threads.configure(current + 3)
    assert f"set to {current + 3} threads" in caplog.text
    assert tf.config.threading.get_inter_op_parallelism_threads() == current
