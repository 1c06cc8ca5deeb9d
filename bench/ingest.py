"""Ingestion throughput: the Beam pipeline on DirectRunner with 1 vs 2 worker processes.

  .venv/bin/python bench/ingest.py [--images 300,1200] [--image-size 640] [--workers 1,2] [--write]

Builds train splits of the given sizes from synthetic images (a `pix2seq synth`
base set replicated under new ids, so generation stays cheap), then runs the
real ingestion (components/beam_ingest.run_ingest) for each worker count with
`--direct_running_mode=multi_processing --direct_num_workers=N`.

Two rates per worker count: end-to-end images/s over the Beam pipeline of the
larger set (worker process start-up included), and the marginal rate
(N_large - N_small) / (T_large - T_small), which cancels the fixed start-up cost
and is what a COCO-sized run (118k images) sees. Fixed costs the marginal rate
removes: worker process start-up (import Beam; the workers never import
TensorFlow), and with 2+ workers ~5 s at shutdown (observed: the last worker
exits ~5 s after the first; Beam 2.59's FnApiRunner stops its shared gRPC
server with a 5 s grace while that worker's streams are open). The driver part (parse the
JSON once, train SentencePiece, stage records) is the same for every run and is
printed separately. --write puts the table into BENCHMARKS.md (section
"Ingestion"). Target: 2 workers >= 1.7x one worker.
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pix2seq  # noqa: E402,F401  (Keras 3 guard)

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from bench.report import write_section  # noqa: E402
from components import beam_ingest  # noqa: E402
from data import synth  # noqa: E402

SECTION = "## Ingestion: DirectRunner 1 vs 2 worker processes (`bench/ingest.py`)"


def replicated_datasets(out_dir, sizes, image_size, base_images=24, seed=0):
    """{size: COCO dir with `size` train images}: synth base images repeated under new ids."""
    base = os.path.join(out_dir, "base")
    synth.generate(base, num_train=base_images, num_val=0, image_size=image_size, seed=seed)
    docs = {}
    for kind in ("instances", "person_keypoints", "captions"):
        with open(os.path.join(base, "annotations", f"{kind}_train.json")) as f:
            docs[kind] = json.load(f)
    roots = {}
    for size in sizes:
        root = roots[size] = os.path.join(out_dir, f"coco{size}")
        image_dir = os.path.join(root, "images", "train")
        os.makedirs(image_dir)
        os.makedirs(os.path.join(root, "annotations"))
        out = {kind: dict(doc, images=[], annotations=[]) for kind, doc in docs.items()}
        for copy in range(-(-size // base_images)):
            for image in docs["instances"]["images"]:
                new_id = copy * base_images + image["id"]
                if new_id > size:
                    continue
                name = f"{new_id:012d}.jpg"
                os.link(os.path.join(base, "images", "train", image["file_name"]), os.path.join(image_dir, name))
                for kind, doc in docs.items():
                    out[kind]["images"].append(dict(image, id=new_id, file_name=name))
                    out[kind]["annotations"] += [dict(a, id=a["id"] + copy * 10**6, image_id=new_id)
                                                 for a in doc["annotations"] if a["image_id"] == image["id"]]
        for kind, doc in out.items():
            with open(os.path.join(root, "annotations", f"{kind}_train.json"), "w") as f:
                json.dump(doc, f)
    return roots


class TimedPipeline(beam.Pipeline):
    """A Beam pipeline that records how long its run took (until finished)."""

    seconds = None

    def run(self, test_runner_api="AUTO"):
        start = time.perf_counter()
        result = super().run(test_runner_api)
        result.wait_until_finish()
        TimedPipeline.seconds = time.perf_counter() - start
        return result


def run_once(coco_dir, out_dir, workers):
    options = PipelineOptions([f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"])
    start = time.perf_counter()
    summary = beam_ingest.run_ingest(
        coco_dir, *(os.path.join(out_dir, d) for d in ("examples", "vocabulary", "report")),
        make_pipeline=lambda: TimedPipeline(options=options), caption_vocab_size=2000)
    total = time.perf_counter() - start
    return summary["images_written"]["train"], TimedPipeline.seconds, total


def render(results, sizes, image_size, load):
    """results: {workers: {size: (images, beam_s, total_s)}}."""
    small, large = sizes
    lines = [f"| DirectRunner workers | Beam s ({small} img) | Beam s ({large} img) | driver s | "
             "images/s end-to-end | images/s marginal | speed-up end-to-end | speed-up marginal |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rates = {}
    for workers, runs in results.items():
        t_small, t_large = runs[small][1], runs[large][1]
        # a larger set finishing sooner means the machine's load drowned the signal: no marginal rate
        rates[workers] = (large / t_large, (large - small) / (t_large - t_small) if t_large > t_small else None)
    base = rates[min(rates)]
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    for workers, runs in results.items():
        e2e, marginal = rates[workers]
        speedup = None if marginal is None or base[1] is None else marginal / base[1]
        lines.append(f"| {workers} | {runs[small][1]:.1f} | {runs[large][1]:.1f} | "
                     f"{runs[large][2] - runs[large][1]:.1f} | {e2e:.1f} | {fmt(marginal, '.1f')} | "
                     f"{e2e / base[0]:.2f}x | {fmt(speedup, '.2f')}{'' if speedup is None else 'x'} |")
    lines.append("")
    lines.append(f"multi_processing mode, synthetic JPEGs (longest side {image_size}), gzipped TFRecord output; "
                 f"{platform.machine()}, {os.cpu_count()} CPUs, 1-minute load average before the runs "
                 f"{load:.1f} (other jobs share the CPUs when it exceeds 0).")
    if load >= os.cpu_count():
        lines.append("The CPUs were already saturated by other jobs, so a second worker process could not get "
                     "a core of its own: rerun on an idle machine for the scaling figure.")
    return "\n".join(lines), rates


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", default="300,1200", help="small,large train split sizes")
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args(argv)
    sizes = tuple(sorted(int(n) for n in args.images.split(",")))
    assert len(sizes) == 2 and sizes[0] < sizes[1], "--images takes two sizes: small,large"
    with tempfile.TemporaryDirectory() as tmp:
        roots = replicated_datasets(tmp, sizes, args.image_size)
        load = os.getloadavg()[0]
        results = {}
        for workers in (int(w) for w in args.workers.split(",")):
            for size in sizes:
                images, beam_s, total_s = run_once(roots[size], os.path.join(tmp, f"out{workers}_{size}"), workers)
                results.setdefault(workers, {})[size] = (images, beam_s, total_s)
                print(f"{workers} worker(s): {images} images, Beam pipeline {beam_s:.1f} s", flush=True)
    table, rates = render(results, sizes, args.image_size, load)
    print(table)
    workers = sorted(rates)
    if len(workers) > 1:
        a, b = workers[0], workers[1]
        marginal = "n/a" if None in (rates[a][1], rates[b][1]) else f"{rates[b][1] / rates[a][1]:.2f}"
        print(f"\nratio {b} vs {a} workers: marginal {marginal}, end-to-end {rates[b][0] / rates[a][0]:.2f}")
    if args.write:
        write_section(SECTION, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
