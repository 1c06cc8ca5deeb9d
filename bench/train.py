"""Training throughput per preset vs this machine's measured dense-matmul peak.

    python bench/train.py [--presets tiny small base] [--tasks detection ...] [--batch-size 2] [--steps 3]
                          [--xla off on] [--inter-op-threads 1] [--write]

For each preset: one batch-mixing training step (`--tasks`, default all four,
`--batch-size` images each) timed over `--steps` steps after a warm-up step; examples/s counts
images (all tasks); achieved FLOP/s uses the analytic count of model/flops.py.
The peak is the best of ten 2048^3 matmul chains (five before, five after the
presets) in the same run, same dtype as training (float32 on CPU, the
mixed-precision compute dtype on accelerators). The first-step column is
tracing (+ XLA compilation) + one step.
`--write` puts the table into BENCHMARKS.md.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pix2seq  # noqa: E402,F401  (Keras 3 guard)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.report import write_section  # noqa: E402
from model import flops, strategy as strategy_lib  # noqa: E402
from model.config import preset  # noqa: E402
from model.tasks import seq_len, task_names  # noqa: E402
from model.training import TrainConfig, build_model  # noqa: E402


def matmul_peak(dtype, size=2048, repeats=5):
    """Best `size`^3 matmul rate (each timed call runs 4 chained products).

    Returns (FLOP per wall-clock second, FLOP per process CPU-second): the second
    is what the matmuls get from the cores they actually ran on, which other jobs
    on a shared machine do not change (much).
    """
    a = tf.random.normal([size, size], dtype=tf.float32)
    a = tf.cast(a / size**0.5, dtype)

    @tf.function
    def chain(x):
        for _ in range(4):
            x = tf.matmul(x, a)
        return x

    chain(a).numpy()
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        chain(a).numpy()
        best_wall = min(best_wall, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    return 4 * 2 * size**3 / best_wall, 4 * 2 * size**3 / best_cpu


def random_batch(config, batch_size, tasks, seed=0):
    rng = np.random.default_rng(seed)
    batch = {}
    for task in tasks:
        length = seq_len(task, config.tokens)
        batch[task] = {
            "image": rng.random((batch_size, config.image_size, config.image_size, 3), dtype=np.float32),
            "input_tokens": rng.integers(0, config.vocab_size, (batch_size, length), dtype=np.int32),
            "target_tokens": rng.integers(0, config.vocab_size, (batch_size, length), dtype=np.int32),
            "token_weights": np.ones((batch_size, length), np.float32),
        }
    return batch


def bench_preset(name, batch_size, steps, strategy, tasks, jit_compile=False):
    config = preset(name)
    settings = TrainConfig(steps=1000, batch_size=batch_size, jit_compile=jit_compile)
    with strategy.scope():
        model = build_model(config, settings)
    batch = random_batch(config, batch_size, tasks)
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0)  # trace (+ XLA compile) + warm up
    first_s = time.perf_counter() - start
    start, start_cpu = time.perf_counter(), time.process_time()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = (time.perf_counter() - start) / steps
    cpu_seconds = (time.process_time() - start_cpu) / steps
    images = batch_size * len(tasks)
    step_flops = flops.train_step_flops(config, batch_size, tasks)
    return {
        "preset": name,
        "xla": jit_compile,
        "params": model.count_params(),
        "images": images,
        "step_s": seconds,
        "first_s": first_s,
        "examples_per_s": images / seconds,
        "flops_per_s": step_flops / seconds,
        "flops_per_cpu_s": step_flops / cpu_seconds,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "base"])
    parser.add_argument("--tasks", nargs="+", default=list(task_names()), choices=task_names())
    parser.add_argument("--batch-size", type=int, default=2, help="images per task per step")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--xla", nargs="+", default=["off"], choices=["off", "on"],
                        help="XLA-compile the training step: off, on, or both (one row each)")
    parser.add_argument("--jit-compile", action="store_true", help="same as --xla on")
    parser.add_argument("--inter-op-threads", type=int, default=1,
                        help="TF inter-op thread pool size (default 1: one op at a time, each using every "
                             "core; 0: TF's own choice, half as fast on this CPU: BENCHMARKS.md)")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)

    strategy = strategy_lib.create_strategy(tpu="none")
    policy = strategy_lib.apply_precision(strategy, args.precision)
    compute_dtype = keras.mixed_precision.Policy(policy).compute_dtype
    xla = ["on"] if args.jit_compile else args.xla
    load_before = os.getloadavg()
    peak, peak_cpu = matmul_peak(compute_dtype)
    rows = []
    for name in args.presets:
        for mode in xla:
            rows.append(bench_preset(name, args.batch_size, args.steps, strategy, args.tasks, mode == "on"))
            keras.backend.clear_session(free_memory=True)
    peak_again, peak_cpu_again = matmul_peak(compute_dtype)
    peak, peak_cpu = max(peak, peak_again), max(peak_cpu, peak_cpu_again)
    load_after = os.getloadavg()

    lines = [
        "| preset | XLA | params | images/step | first step s | s/step | examples/s | achieved GFLOP/s "
        "| % of matmul peak | same, per CPU-second |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {'on' if r['xla'] else 'off'} | {r['params'] / 1e6:.1f} M | {r['images']} | "
            f"{r['first_s']:.0f} | {r['step_s']:.2f} | "
            f"{r['examples_per_s']:.2f} | {r['flops_per_s'] / 1e9:.1f} | {100 * r['flops_per_s'] / peak:.0f} % | "
            f"{100 * r['flops_per_cpu_s'] / peak_cpu:.0f} % |"
        )
    devices = ", ".join(d.name for d in tf.config.list_logical_devices() if d.device_type != "CPU") or "CPU only"
    lines += [
        "",
        f"Measured dense-matmul peak ({compute_dtype}, 2048^3, best of 10): {peak / 1e9:.1f} GFLOP/s wall-clock, "
        f"{peak_cpu / 1e9:.1f} GFLOP per process CPU-second (the last column compares the step's FLOP per "
        "CPU-second with this; other jobs on the machine change it much less than the wall-clock ratio). "
        f"Tasks {', '.join(args.tasks)}, {args.batch_size} image(s) per task per step, "
        f"{args.steps} timed steps after warm-up; "
        f"FLOPs counted analytically (model/flops.py, training = 3x forward less the image gradient); devices: {devices}; "
        f"{os.cpu_count()} CPUs, TF {tf.__version__}, precision {policy}, inter-op threads "
        f"{args.inter_op_threads or 'default'}; 1-minute load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after.",
    ]
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section("## Training throughput (`bench/train.py`)", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
