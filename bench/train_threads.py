"""`pix2seq train` with one inter-op thread (the TrainConfig default) against TF's default pool.

    python bench/train_threads.py --examples runs/pretrain_demo/ingest/examples [--rounds 2] [--write]

Runs the real command (`python -m pix2seq.cli train --preset demo-scratch ...`) in fresh
processes, alternating `--inter-op-threads 1` and `--inter-op-threads 0` (TF's default),
and times the steps between the first and the last checkpoint (so start-up, ingestion
and tracing are left out) from the moment each checkpoint line appears: wall-clock
seconds and the process's CPU seconds (/proc/PID/stat) per step. On a shared machine
the two disagree: the scheduler shares the cores per thread, so a process with more
busy threads gets more of them; CPU seconds per step is the work a step costs.
Prints a table with the CPU model and the load average; `--write` puts it into BENCHMARKS.md.
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


def cpu_seconds(pid):
    """User + system CPU seconds of a running process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_run(examples, threads, steps, interval, work):
    """(wall seconds, CPU seconds) per step between the first and the last checkpoint of
    one `pix2seq train` run."""
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
            seen[int(match.group(1))] = (time.monotonic(), cpu_seconds(proc.pid))
    if proc.wait() != 0 or len(seen) < 2:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}, checkpoints {sorted(seen)})")
    first, last = min(seen), max(seen)
    return tuple((b - a) / (last - first) for a, b in zip(seen[first], seen[last]))


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
                wall, cpu = times[threads][-1]
                print(f"inter-op threads {threads or 'default'}: {wall:.2f} s/step, {cpu:.2f} CPU-s/step", flush=True)
    load_after = os.getloadavg()
    best = {t: (min(w for w, _ in v), min(c for _, c in v)) for t, v in times.items()}
    lines = ["| inter-op threads | wall s/step (each run) | CPU-s/step (each run) | best wall s/step "
             "| best CPU-s/step | wall speed vs TF default | work per step vs TF default |",
             "|---|---|---|---:|---:|---:|---:|"]
    for threads in (1, 0):
        walls = ", ".join(f"{w:.2f}" for w, _ in times[threads])
        cpus = ", ".join(f"{c:.2f}" for _, c in times[threads])
        lines.append(f"| {threads or 'TF default (0)'} | {walls} | {cpus} | {best[threads][0]:.2f} | "
                     f"{best[threads][1]:.2f} | {best[0][0] / best[threads][0]:.2f}x | "
                     f"{best[threads][1] / best[0][1]:.2f}x |")
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
