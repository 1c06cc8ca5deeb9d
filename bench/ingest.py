"""Ingestion throughput: the Beam pipeline on DirectRunner with 1 vs 2 worker processes.

  .venv/bin/python bench/ingest.py [--images 1200] [--image-size 640] [--workers 1,2] [--write]

Builds a train split of --images synthetic images (a `pix2seq synth` base set
replicated under new ids, so generation stays cheap), then runs the real
ingestion (components/beam_ingest.run_ingest) once per worker count with
`--direct_running_mode=multi_processing --direct_num_workers=N`. images/s is
measured over the Beam pipeline (worker start-up included); the driver part
(parse the JSON once, train SentencePiece, stage records) is the same for every
run and is printed separately. --write puts the table into BENCHMARKS.md
(section "Ingestion"). Target: 2 workers >= 1.7x one worker.
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


def replicated_dataset(out_dir, num_images, image_size, base_images=24, seed=0):
    """A COCO dir with `num_images` train images: synth base images repeated under new ids."""
    base = os.path.join(out_dir, "base")
    synth.generate(base, num_train=base_images, num_val=0, image_size=image_size, seed=seed)
    docs = {}
    for kind in ("instances", "person_keypoints", "captions"):
        with open(os.path.join(base, "annotations", f"{kind}_train.json")) as f:
            docs[kind] = json.load(f)
    root = os.path.join(out_dir, "coco")
    image_dir = os.path.join(root, "images", "train")
    os.makedirs(image_dir)
    os.makedirs(os.path.join(root, "annotations"))
    out = {kind: dict(doc, images=[], annotations=[]) for kind, doc in docs.items()}
    for copy in range(-(-num_images // base_images)):
        for image in docs["instances"]["images"]:
            new_id = copy * base_images + image["id"]
            if new_id > num_images:
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
    return root


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


def render(rows, image_size, load):
    lines = ["| DirectRunner workers | images | Beam pipeline s | images/s | driver s | speed-up |",
             "|---:|---:|---:|---:|---:|---:|"]
    base_rate = rows[0][1] / rows[0][2]
    for workers, images, beam_s, total_s in rows:
        rate = images / beam_s
        lines.append(f"| {workers} | {images} | {beam_s:.1f} | {rate:.1f} | {total_s - beam_s:.1f} | "
                     f"{rate / base_rate:.2f}x |")
    lines.append("")
    lines.append(f"multi_processing mode, synthetic JPEGs (longest side {image_size}), gzipped TFRecord output; "
                 f"{platform.machine()}, {os.cpu_count()} CPUs, 1-minute load average before the runs "
                 f"{load:.1f} (other jobs share the CPUs when it exceeds 0).")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        coco_dir = replicated_dataset(tmp, args.images, args.image_size)
        load = os.getloadavg()[0]
        rows = []
        for workers in (int(w) for w in args.workers.split(",")):
            images, beam_s, total_s = run_once(coco_dir, os.path.join(tmp, f"out{workers}"), workers)
            rows.append((workers, images, beam_s, total_s))
            print(f"{workers} worker(s): {images} images in {beam_s:.1f} s -> {images / beam_s:.1f} images/s",
                  flush=True)
    table = render(rows, args.image_size, load)
    print(table)
    if len(rows) > 1:
        print(f"\nratio {rows[1][0]} vs {rows[0][0]} workers: "
              f"{(rows[1][1] / rows[1][2]) / (rows[0][1] / rows[0][2]):.2f}")
    if args.write:
        write_section(SECTION, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
