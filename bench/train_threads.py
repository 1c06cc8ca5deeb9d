"""`pix2seq train` with one inter-op thread (the TrainConfig default) against TF's default pool.

    python bench/train_threads.py --examples runs/pretrain_demo/ingest/examples [--rounds 2] [--write]

Runs the real command (`python -m pix2seq.cli train --preset demo-scratch ...`) in fresh
processes, alternating `--inter-op-threads 1` and `--inter-op-threads 0` (TF's default),
and times the steps between the first and the last checkpoint (so start-up, ingestion
and tracing are left out) from the moment each checkpoint line appears. Prints a table
with the CPU model and the load average; `--write` puts it into BENCHMARKS.md.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.report import write_section  # noqa: E402

CHECKPOINT_LINE = re.compile(r"checkpoint .*ckpt-(\d+)")


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def timed_run(examples, threads, steps, interval, work):
    """Seconds per step between the first and the last checkpoint of one `pix2seq train` run."""
    out = os.path.join(work, f"threads{threads}")
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "pix2seq.cli", "train", "--examples", examples, "--preset", "demo-scratch",
           "--steps", str(steps), "--checkpoint-every", str(interval), "--warmup-steps", "1",
           "--inter-op-threads", str(threads), "--out", out]
    seen = {}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        match = CHECKPOINT_LINE.search(line)
        if match:
            seen[int(match.group(1))] = time.monotonic()
    if proc.wait() != 0 or len(seen) < 2:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}, checkpoints {sorted(seen)})")
    first, last = min(seen), max(seen)
    return (seen[last] - seen[first]) / (last - first)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", required=True, help="an ingested Examples directory")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--checkpoint-every", type=int, default=10, help="the first interval is the warm-up")
    parser.add_argument("--rounds", type=int, default=2, help="A/B pairs, alternating")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    times = {1: [], 0: []}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.rounds):
            for threads in (1, 0):
                times[threads].append(timed_run(args.examples, threads, args.steps, args.checkpoint_every, work))
                print(f"inter-op threads {threads or 'default'}: {times[threads][-1]:.2f} s/step", flush=True)
    load_after = os.getloadavg()
    best = {t: min(v) for t, v in times.items()}
    lines = ["| inter-op threads | s/step (each run) | best s/step | speed vs TF default |", "|---|---|---:|---:|"]
    for threads in (1, 0):
        runs = ", ".join(f"{t:.2f}" for t in times[threads])
        lines.append(f"| {threads or 'TF default (0)'} | {runs} | {best[threads]:.2f} | "
                     f"{best[0] / best[threads]:.2f}x |")
    lines += ["", f"`pix2seq train --preset demo-scratch` (tiny, 16 detection + 2 per other task images per step), "
              f"steps {args.checkpoint_every + 1}-{args.steps} of {args.steps} timed from the checkpoint lines, "
              f"{args.rounds} alternating runs each; {os.cpu_count()} x {cpu_model()}; 1-minute load average "
              f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (other jobs shared the cores)."]
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section("## Inter-op threads through `pix2seq train` (`bench/train_threads.py`)", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
