"""Choose the distribution strategy and the mixed-precision policy.

`create_strategy()` returns a TPUStrategy when a TPU is named or discoverable, a
MirroredStrategy when more than one GPU (or an explicit device list) is present,
else the default strategy. TPU discovery never hangs: connecting to an
unreachable `grpc://` address blocks for over a minute inside TensorFlow, so the
address is probed with a plain TCP connect (and name resolution runs in a thread)
under a timeout first; on failure the log says why and training falls back.
"""
import concurrent.futures
import logging
import os
import urllib.parse

import keras
import tensorflow as tf

import pix2seq  # noqa: F401  (Keras 3 guard)

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def _tpu_requested(tpu):
    """The TPU to try: an explicit name/address, else one found in the environment, else None."""
    if tpu in ("none", "off", False):
        return None
    if tpu:
        return tpu
    for var in ("TPU_NAME", "TPU_ADDRESS"):
        if os.environ.get(var):
            return os.environ[var]
    if os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0"):
        return "local"  # a Cloud TPU VM
    return None


def _reachable(address, timeout_s):
    """True when a TensorFlow worker answers `GetStatus` at `grpc://host:port` within `timeout_s`.

    A bare TCP connect is not enough: proxies accept any connection, and TensorFlow
    aborts the process when the peer is not a TensorFlow worker.
    """
    import grpc

    parsed = urllib.parse.urlparse(address if "://" in address else f"grpc://{address}")
    if not parsed.hostname or not parsed.port:
        return False
    with grpc.insecure_channel(f"{parsed.hostname}:{parsed.port}") as channel:
        get_status = channel.unary_unary(
            "/tensorflow.WorkerService/GetStatus",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        try:
            get_status(b"", timeout=timeout_s)  # an empty GetStatusRequest
            return True
        except grpc.RpcError:
            return False


def _resolve_tpu(tpu, timeout_s):
    """A TPUClusterResolver whose master answers, or None (with the reason logged)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        future = pool.submit(tf.distribute.cluster_resolver.TPUClusterResolver, tpu=tpu)
        resolver = future.result(timeout=timeout_s)
        master = resolver.master()
    except concurrent.futures.TimeoutError:
        log.warning("TPU %r: name resolution did not finish within %.0f s; falling back", tpu, timeout_s)
        return None
    except (ValueError, RuntimeError, OSError) as e:
        log.warning("TPU %r not usable (%s); falling back", tpu, e)
        return None
    finally:
        pool.shutdown(wait=False)
    if master and master.startswith("grpc://") and not _reachable(master, timeout_s):
        log.warning("TPU %r at %s unreachable within %.0f s; falling back", tpu, master, timeout_s)
        return None
    return resolver


def create_strategy(tpu=None, devices=None, probe_timeout_s=10.0):
    """The strategy to train under.

    Args:
      tpu: TPU name, `grpc://host:port`, `"local"`, or None to discover one
        (`TPU_NAME`/`TPU_ADDRESS` environment, TPU VM devices); `"none"` disables TPUs.
      devices: explicit device names for a MirroredStrategy (e.g. two logical CPUs).
      probe_timeout_s: how long a TPU may take to resolve/answer before falling back.
    """
    if devices:
        log.info("strategy: MirroredStrategy over %s", list(devices))
        return tf.distribute.MirroredStrategy(devices=list(devices))
    wanted = _tpu_requested(tpu)
    if wanted:
        resolver = _resolve_tpu(wanted, probe_timeout_s)
        if resolver is not None:
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            strategy = tf.distribute.TPUStrategy(resolver)
            log.info("strategy: TPUStrategy on %r with %d replicas", wanted, strategy.num_replicas_in_sync)
            return strategy
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        log.info("strategy: MirroredStrategy over %d GPUs", len(gpus))
        return tf.distribute.MirroredStrategy()
    log.info("strategy: default (%s)", "one GPU" if gpus else "CPU")
    return tf.distribute.get_strategy()


def is_tpu(strategy):
    return isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy))


def precision_policy(strategy, precision="auto"):
    """Policy name: `auto` = mixed_bfloat16 on TPU, mixed_float16 with GPUs, float32 on CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}. Received: {precision!r}")
    if precision != "auto":
        return precision
    if is_tpu(strategy):
        return "mixed_bfloat16"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        uses_gpu = any("GPU" in d.upper() for d in strategy.extended.worker_devices)
    else:
        uses_gpu = bool(tf.config.list_logical_devices("GPU"))
    return "mixed_float16" if uses_gpu else "float32"


def apply_precision(strategy, precision="auto"):
    """Sets Keras' global dtype policy for models built next; returns its name."""
    policy = precision_policy(strategy, precision)
    keras.mixed_precision.set_global_policy(policy)
    log.info("precision: %s", policy)
    return policy
