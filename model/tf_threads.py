"""TF's inter-op thread pool, set from the training configuration.

On the CPU, one inter-op thread (one op at a time, each op using every core through
its intra-op pool) trains about twice as fast as TF's default pool (BENCHMARKS.md
"Training throughput": 59 % against 30 % of the matmul peak for `base`, and the
`pix2seq train` rows). TF fixes the pool when its runtime starts, so the setting
must come before the first op: `pix2seq train` and `pix2seq pipeline run` apply it
at process start; `run_fn` applies it again, which only works when the Trainer runs
in a fresh process (otherwise it logs that the process's pool is kept).
"""
import logging

import tensorflow as tf

log = logging.getLogger(__name__)


def configure(inter_op_threads: int) -> bool:
    """Sets the inter-op pool size (0: TF's default). Returns whether the process now
    runs with it; False (with a warning) when TF had already started with another one."""
    if not inter_op_threads:
        return True
    try:
        tf.config.threading.set_inter_op_parallelism_threads(int(inter_op_threads))
        return True
    except RuntimeError:
        current = tf.config.threading.get_inter_op_parallelism_threads()
        log.warning("TF started before its inter-op pool could be set to %d threads; this process keeps %s "
                    "(set it before TF runs its first op)", inter_op_threads, current or "TF's default")
        return False
