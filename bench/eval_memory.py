"""Peak memory of the CocoEvaluator's driver against eval-set size.

  .venv/bin/python bench/eval_memory.py [--images 100,1000] [--image-kb 160]
                                        [--before-root DIR] [--write]

Writes eval splits of the given sizes (synthetic examples: 4 boxes each and a
noise JPEG of ~`--image-kb` KB, COCO's average image size being ~160 KB), then
runs the real CocoEvaluator executor (components/coco_evaluator/executor.py) on
each in a fresh process with a seconds-fast stand-in SavedModel (detection only,
tests/serving_toy_model.py) on Beam's DirectRunner, and reports that process's
peak resident memory (ru_maxrss). The DirectRunner runs the Beam workers inside the
driver process, so the number is an upper bound of a real driver's. Growth per
image is the slope between the sizes.

`--before-root DIR` runs the same measurement with the code in DIR too (e.g. a
`git archive` of the commit before the evaluator read the shards in the workers)
and prints it beside the current code. --write puts the table into BENCHMARKS.md.
"""
import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SECTION = "## Evaluator: peak driver memory against eval-set size (`bench/eval_memory.py`)"

# Run in a fresh process with the measured code first on sys.path: argv = code root,
# examples dir, model dir, out dir. Prints {"peak_mb", "seconds", "num_images"}.
MEASURE = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
import pix2seq  # noqa: F401
from tfx.types import artifact_utils, standard_artifacts
from components.coco_evaluator import executor
examples_dir, model_dir, out = sys.argv[2:5]
examples = standard_artifacts.Examples()
examples.uri = examples_dir
examples.split_names = artifact_utils.encode_split_names(["eval"])
model = standard_artifacts.Model()
model.uri = os.path.join(out, "model")
os.makedirs(model.uri)
os.symlink(model_dir, os.path.join(model.uri, "Format-Serving"))
evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
evaluation.uri, blessing.uri = os.path.join(out, "evaluation"), os.path.join(out, "blessing")
config = {"tasks": ["detection"], "batch_size": 8, "num_pictures": 2, "thresholds": {}}
start = time.monotonic()
executor.Executor().Do({"model": [model], "examples": [examples]}, {"evaluation": [evaluation], "blessing": [blessing]},
                       {"eval_config": json.dumps(config), "eval_split": "eval"})
seconds = time.monotonic() - start
report = json.load(open(os.path.join(evaluation.uri, "metrics.json")))
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds,
                  "num_images": report["num_images"]}))
"""


def noise_jpeg(kb, seed, width=640, height=480):
    """A JPEG of roughly `kb` KB: smoothed noise, quality searched down from 95."""
    import numpy as np
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(1.2))
    for quality in range(95, 20, -5):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        if buffer.tell() <= kb * 1024:
            break
    return buffer.getvalue(), width, height


def write_split(examples_dir, num_images, image_kb, variants=8):
    """`num_images` examples under `examples_dir/Split-eval/` (2 shards) + dataset_info.json."""
    import tensorflow as tf

    from data import features as F

    images = [noise_jpeg(image_kb, seed) for seed in range(variants)]
    split = os.path.join(examples_dir, "Split-eval")
    os.makedirs(split)
    writers = [tf.io.TFRecordWriter(os.path.join(split, f"data_tfrecord-{i:05d}-of-00002.gz"), options="GZIP")
               for i in range(2)]
    for i in range(num_images):
        data, width, height = images[i % variants]
        objects = [{"bbox": [40.0 + 90 * k, 30.0 + 60 * k, 80.0, 120.0], "category_id": 1 + k, "iscrowd": 0,
                    "area": 9600.0, "id": 4 * i + k + 1, "polygons": [], "rle": None, "keypoints": None}
                   for k in range(4)]
        record = {"image_id": i + 1, "height": height, "width": width, "file_name": f"{i + 1:012d}.jpg",
                  "objects": objects, "captions": []}
        writers[i % 2].write(F.encode_example(record, data, "jpeg", 0).SerializeToString())
    for writer in writers:
        writer.close()
    with open(os.path.join(examples_dir, "dataset_info.json"), "w") as f:
        json.dump({"categories": [{"id": c, "name": f"class_{c}"} for c in range(1, 5)]}, f)
    return sum(os.path.getsize(os.path.join(split, n)) for n in os.listdir(split))


def measure(code_root, examples_dir, model_dir, out_dir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore", TF_USE_LEGACY_KERAS="0",
               PYTHONPATH=code_root)
    proc = subprocess.run([sys.executable, "-c", MEASURE, code_root, examples_dir, model_dir, out_dir],
                          capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode:
        raise RuntimeError(f"measurement failed ({code_root}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="100,1000")
    parser.add_argument("--image-kb", type=int, default=160)
    parser.add_argument("--before-root", help="also measure the code in this directory")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.images.split(",")]
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import serving_toy_model

    roots = {"workers read the shards": ROOT}
    if args.before_root:
        roots = {"driver reads the split (before)": os.path.abspath(args.before_root), **roots}
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "toy_model")
        serving_toy_model.export_toy_model(model_dir)
        split_mb = {}
        for size in sizes:
            split_mb[size] = write_split(os.path.join(tmp, f"examples{size}"), size, args.image_kb) / 2 ** 20
        for name, code_root in roots.items():
            for size in sizes:
                r = measure(code_root, os.path.join(tmp, f"examples{size}"), model_dir,
                            os.path.join(tmp, f"run_{len(results)}"))
                assert r["num_images"] == size, r
                results[name, size] = r
                print(f"{name:32s} {size:6d} images: peak {r['peak_mb']:.0f} MB, {r['seconds']:.1f} s", flush=True)
    small, large = min(sizes), max(sizes)
    rows.append("| evaluator | " + " | ".join(f"peak RSS, {s} images" for s in sizes)
                + " | MB per 1,000 images | " + " | ".join(f"seconds, {s} images" for s in sizes) + " |")
    rows.append("|---|" + "---:|" * (2 * len(sizes) + 1))
    for name in roots:
        peaks = [results[name, s]["peak_mb"] for s in sizes]
        slope = (results[name, large]["peak_mb"] - results[name, small]["peak_mb"]) / (large - small) * 1000
        rows.append(f"| {name} | " + " | ".join(f"{p:.0f} MB" for p in peaks) + f" | {slope:.0f} | "
                    + " | ".join(f"{results[name, s]['seconds']:.0f}" for s in sizes) + " |")
    load = os.getloadavg()[0]
    note = (f"Eval splits of {', '.join(f'{s} images ({split_mb[s]:.0f} MB of shards)' for s in sizes)}: "
            f"~{args.image_kb} KB noise JPEGs (640x480), 4 boxes each; the real executor with a stand-in "
            f"SavedModel (detection only, batch 8, 2 pictures) on Beam's DirectRunner, which runs the workers "
            f"inside the driver process, so the peak includes them. Peak = ru_maxrss of a fresh process "
            f"(imports TFX, TF, Beam). {cpu_model()}, {os.cpu_count()} CPUs, 1-min load average {load:.1f}.")
    table = "\n".join(rows) + "\n\n" + note
    print(table)
    if args.write:
        from bench.report import write_section

        write_section(SECTION, table)
    return results


if __name__ == "__main__":
    main()
