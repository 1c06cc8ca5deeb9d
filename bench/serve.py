"""What gRPC serving costs over calling the SavedModel in process: `detect`, batch 1.

  .venv/bin/python bench/serve.py [--model-base-path DIR] [--requests 200] [--threads 4] [--write]

Without --model-base-path it exports the `tiny` preset with random weights (the
serving graph is the real one; only the weights are untrained, so detection decodes to
the length its random logits give). Both paths run the same images in one process on
the same machine: the in-process call (`signatures["detect"]`) and serial gRPC requests
through `pix2seq serve` with the real TF Serving stubs, alternating image by image, then
gRPC from several client threads at once. Prints p50/p95 latency, requests/s and the overhead ratio; --write
puts the table into BENCHMARKS.md (section "Serving").
"""
import argparse
import os
import platform
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pix2seq  # noqa: E402,F401  (Keras 3 guard)

import numpy as np  # noqa: E402
import portpicker  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.report import write_section  # noqa: E402
from serving import model_loader  # noqa: E402
from serving.client import Pix2SeqClient  # noqa: E402
from serving.server import ModelServer, ServerConfig  # noqa: E402

SECTION = "## Serving: gRPC vs in-process (`bench/serve.py`)"


def export_tiny(base_path: str) -> None:
    """Random-weights `tiny` model exported as version 1 under base_path."""
    from model.config import preset
    from model.export import export_saved_model
    from model.pix2seq_model import Pix2SeqModel

    model = Pix2SeqModel(preset("tiny"))
    model.build()
    export_saved_model(model, model_loader.version_path(base_path, 1), signatures=["detect"])


def test_images(count: int, side: int = 96) -> list:
    """JPEGs of smooth random blobs (compress like photos, unlike white noise)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        low = rng.uniform(0, 255, (6, 6, 3)).astype(np.float32)
        image = tf.image.resize(low[None], (side, side))[0]
        out.append(tf.io.encode_jpeg(tf.cast(image, tf.uint8), quality=90).numpy())
    return out


def timed(fn, items) -> np.ndarray:
    """Seconds per call of fn(item)."""
    times = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - start)
    return np.array(times)


def concurrent(address, images, threads) -> tuple:
    """(latencies, wall seconds) of len(images) requests spread over `threads` clients."""
    chunks = [images[i::threads] for i in range(threads)]
    latencies = [None] * threads

    def worker(i):
        with Pix2SeqClient(address) as client:
            latencies[i] = timed(lambda image: client.predict("detect", [image]), chunks[i])

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return np.concatenate(latencies), time.perf_counter() - start


def row(name, latencies, wall):
    p50, p95 = np.percentile(latencies, [50, 95]) * 1000
    return name, p50, p95, len(latencies) / wall


def render(rows, base_p50, requests, overhead_ms) -> str:
    lines = [
        "| path | p50 ms | p95 ms | requests/s | p50 vs in-process |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, p50, p95, rps in rows:
        lines.append(f"| {name} | {p50:.2f} | {p95:.2f} | {rps:.1f} | {p50 / base_p50:.2f}x |")
    lines.append("")
    lines.append(f"Overhead ratio (gRPC p50 / in-process p50): {rows[1][1] / base_p50:.2f}; "
                 f"median extra time per request through gRPC: {overhead_ms:.2f} ms.")
    lines.append(f"{requests} requests of `detect` at batch 1 per path after warm-up; "
                 f"{platform.machine()}, {os.cpu_count()} CPUs, TF {tf.__version__}.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-base-path", help="served directory (<version>/saved_model.pb); default: export tiny")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=4, help="client threads for the concurrent row")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        base = args.model_base_path
        if base is None:
            base = os.path.join(tmp, "pix2seq")
            export_tiny(base)
        images = test_images(args.requests)
        warm = images[: args.warmup]

        config = ServerConfig(base, port=portpicker.pick_unused_port(), poll_seconds=0, workers=max(8, args.threads))
        with ModelServer(config) as server, Pix2SeqClient(server.address) as client:
            local = server.manager.get().signatures["detect"]  # the very model object the server runs
            paths = {
                "in-process SavedModel call": lambda image: local(images=tf.constant([image])),
                "gRPC `pix2seq serve`, 1 client": lambda image: client.predict("detect", [image]),
            }
            for call in paths.values():
                timed(call, warm)
            # Alternate the two paths image by image so machine load hits both alike.
            pairs = np.array([[timed(call, [image])[0] for call in paths.values()] for image in images])
            rows = [row(name, pairs[:, i], pairs[:, i].sum()) for i, name in enumerate(paths)]
            latencies, wall = concurrent(server.address, images, args.threads)
            rows.append(row(f"gRPC `pix2seq serve`, {args.threads} client threads", latencies, wall))
        overhead_ms = float(np.median(pairs[:, 1] - pairs[:, 0]) * 1000)

    table = render(rows, rows[0][1], args.requests, overhead_ms)
    print(table)
    if args.write:
        write_section(SECTION, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
