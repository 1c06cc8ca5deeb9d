"""Decoding speed: our K/V-cached while_loop vs the reference-style loop, same weights.

  .venv/bin/python bench/decode.py [--presets tiny,base] [--lengths 50,250,500]
                                   [--batches 1,16] [--budget 60] [--full-vocab] [--write]

For each preset (random weights; `tiny` gets 512 learned positions so it can run
500 tokens), detection prompt, sequence length L and batch B, both loops run as
graph-mode `tf.function`s (no XLA, as in TF Serving) on the same encoder output:

* ours: `model.decoding.decode`, greedy, `stop_at_end=False` so every row really
  emits L tokens (per-row early stop would only make ours faster);
* reference: `tests/reference_decoding.reference_decode` (caches layer inputs,
  re-projects every self-/cross-attention key/value each step, always L steps).

Both get the detection decode's `vocab_limit = COORD_OFFSET + num_bins`, as the
serving signatures use it (ours then projects onto those ids only; the reference
still computes every logit and keeps those); `--full-vocab` drops the option.

Each row runs in a fresh process (both loops, same weights).
tokens/s = B * steps / seconds, after a 2-step warm-up call that traces the graph.
For batch 1, where a step of ours is bound by memory traffic, the table also gives
the bytes a step must read (its prepared weights, the image keys/values and the
self cache) and the time to stream that many bytes through float32 matrix-vector
products on this machine, measured in the same run: no step can be faster.
Every reference step costs the same (its buffers always have length L), so when a
full reference run would take longer than `--budget` seconds it is timed on fewer
steps, extrapolated from a 2-step probe; the table says how many steps were timed.
--write puts the table into BENCHMARKS.md (section "Decoding").
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pix2seq  # noqa: E402,F401  (Keras 3 guard)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.report import write_section  # noqa: E402
from model import decoding, vocab  # noqa: E402
from model.config import preset  # noqa: E402
from model.cached_decoder import step_matmul  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import reference_decoding  # noqa: E402  (tests/reference_decoding.py: the oracle the tests compare with)
from model.pix2seq_model import Pix2SeqModel  # noqa: E402

SECTION = "## Decoding: K/V-cached while_loop vs reference-style loop (`bench/decode.py`)"


def build(name, longest):
    keras.utils.set_random_seed(0)
    config = preset(name)
    if config.max_seq_len < longest + 1:
        config = config.replace(max_seq_len=longest + 1)
    model = Pix2SeqModel(config)
    model.build()
    return model


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    tf.nest.map_structure(lambda t: t.numpy(), out)
    return time.perf_counter() - start


def step_bytes(model, cross, length, batch, vocab_limit):
    """Bytes one step of ours reads: its prepared weights, image keys/values, self cache."""
    runner = model.decoder.prepare_decoding(cross, length, vocab_limit=vocab_limit)
    tensors = [t for t in tf.nest.flatten([runner.layers, runner.output, runner.cross, runner.init_cache(batch)])
               if isinstance(t, tf.Tensor)]
    return sum(t.shape.num_elements() * t.dtype.size for t in tensors)


def stream_seconds(nbytes, dim, repeats=20):
    """Seconds to stream `nbytes` of float32 weights through one-row matrix-vector
    products (the decode step's kernel), as a chain of [dim, 4 dim] and [4 dim, dim] pairs."""
    pair = 8 * dim * dim * 4
    kernels = [tf.random.stateless_normal(shape, [i, 0]) * 0.01
               for i in range(max(1, round(nbytes / pair))) for shape in ([dim, 4 * dim], [4 * dim, dim])]

    @tf.function(autograph=False)
    def chain():
        def body(i, x):
            for kernel in kernels:
                x = step_matmul(x, kernel)
            return i + 1, x
        return tf.while_loop(lambda i, x: i < repeats, body, (0, tf.ones([1, dim])))[1]

    timed(chain)
    best = min(timed(chain) for _ in range(3))
    return best / repeats * nbytes / (pair * len(kernels) / 2)


def measure(model, length, batch, budget, full_vocab=False):
    size = model.config.image_size
    images = tf.random.stateless_uniform([batch, size, size, 3], [1, 2])
    memory = model.encode(images)
    cross = model.decoder.compute_cross_cache(memory)
    prompt = tf.fill([batch, 1], vocab.DETECTION_PROMPT)
    limit = None if full_vocab else vocab.COORD_OFFSET + model.config.tokens.num_bins

    @tf.function(autograph=False)
    def ours(steps):
        return decoding.decode(model.decoder, cross, prompt, length, stop_at_end=False, max_steps=steps,
                               vocab_limit=limit)["tokens"]

    @tf.function(autograph=False)
    def reference(steps):
        return reference_decoding.reference_decode(model.decoder, memory, prompt, length, max_steps=steps,
                                                   vocab_limit=limit)["tokens"]

    row = {"preset": model.config.name, "L": length, "B": batch, "vocab": limit or model.config.tokens.vocab_size}
    timed(ours, tf.constant(2))
    row["ours_s"] = timed(ours, tf.constant(length))
    row["ours_tps"] = batch * length / row["ours_s"]
    timed(reference, tf.constant(2))
    probe = timed(reference, tf.constant(2)) / 2
    steps = length if probe * length <= budget else max(2, min(length, int(budget / probe)))
    seconds = timed(reference, tf.constant(steps))
    row["ref_steps"] = steps
    row["ref_s"] = seconds * length / steps
    row["ref_tps"] = batch * steps / seconds
    row["ratio"] = row["ours_tps"] / row["ref_tps"]
    if batch == 1:
        row["bytes"] = step_bytes(model, cross, length, batch, limit)
        row["floor_s"] = stream_seconds(row["bytes"], model.decoder.dim)
    return row


def table(rows):
    lines = ["| preset | L | batch | logits | ours tokens/s | reference tokens/s | reference steps timed | "
             "speed-up | ours ms/step | step reads MB | streaming them ms | load (1 min) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        floor = (f"{r['bytes'] / 1e6:.0f} | {r['floor_s'] * 1e3:.2f}" if "bytes" in r else "- | -")
        lines.append(f"| {r['preset']} | {r['L']} | {r['B']} | {r['vocab']} | {r['ours_tps']:.0f} | "
                     f"{r['ref_tps']:.1f} | {r['ref_steps']}/{r['L']} | {r['ratio']:.1f}x | "
                     f"{r['ours_s'] / r['L'] * 1e3:.2f} | {floor} | {r['load']:.1f} |")
    return "\n".join(lines)


def verdict(rows, target=10.0):
    """The issue's target, spelled out for the rows that measure it (base, L=500)."""
    hits = [r for r in rows if r["preset"] == "base" and r["L"] == 500]
    if not hits:
        return ""
    parts = [f"B={r['B']}: {r['ratio']:.1f}x, {'met' if r['ratio'] >= target else 'not met'}" for r in hits]
    text = f"Target >= {target:.0f}x tokens/s at base, L=500: " + "; ".join(parts) + "."
    for r in hits:
        if "bytes" in r:
            ref_step = r["ref_s"] / r["L"]
            text += (f" At B={r['B']} a step reads {r['bytes'] / 1e6:.0f} MB, which this machine streams through "
                     f"matrix-vector products in {r['floor_s'] * 1e3:.2f} ms "
                     f"({r['bytes'] / r['floor_s'] / 1e9:.1f} GB/s): a step doing nothing else would be "
                     f"{ref_step / r['floor_s']:.1f}x the reference; ours takes "
                     f"{r['ours_s'] / r['L'] * 1e3:.2f} ms.")
    return text


def run_row(name, length, batch, budget, full_vocab):
    """One table row, measured in a fresh process: in a process that had already run
    larger rows, batch 1 of ours ran up to a third slower (allocator and cache state)."""
    command = [sys.executable, os.path.abspath(__file__), "--row", f"{name}:{length}:{batch}",
               "--budget", str(budget)] + (["--full-vocab"] if full_vocab else [])
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    row["load"] = os.getloadavg()[0]
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,base")
    parser.add_argument("--lengths", default="50,250,500")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds allowed per reference run")
    parser.add_argument("--full-vocab", action="store_true", help="logits over the whole vocabulary")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # PRESET:L:B, measured in this process (JSON out)
    args = parser.parse_args(argv)
    if args.row:
        name, length, batch = args.row.split(":")
        row = measure(build(name, int(length)), int(length), int(batch), args.budget, args.full_vocab)
        print(json.dumps(row))
        return 0
    rows = []
    for name in args.presets.split(","):
        for length in (int(v) for v in args.lengths.split(",")):
            for batch in (int(v) for v in args.batches.split(",")):
                rows.append(run_row(name, length, batch, args.budget, args.full_vocab))
                r = rows[-1]
                print(f"{name} L={length} B={batch}: ours {r['ours_tps']:.0f} tok/s, reference "
                      f"{r['ref_tps']:.1f} tok/s ({r['ref_steps']} steps), {r['ratio']:.1f}x", flush=True)
    body = table(rows)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, TF {tf.__version__}, graph mode, no XLA"
    print(body)
    print(verdict(rows))
    if args.write:
        note = (f"Machine: {machine}. Random weights, greedy, detection prompt, every row emits L tokens "
                "(no early stop); `logits` is the number of ids scored per step (the detection "
                "`vocab_limit` of the serving signatures, or the whole vocabulary with --full-vocab), the "
                "same for both loops. Reference steps all cost the same, so a reference run over the "
                f"--budget ({args.budget:.0f} s) is timed on fewer steps and its rate extrapolated. "
                "`load` is the 1-minute load average after the row (other jobs share the CPUs). "
                "Why batch 1 gains less: a step of ours is bound by memory traffic. It must read every "
                "decoder weight once (base: 6 x 3.5M float32 parameters, 84 MB), the image keys/values "
                "(39 MB per row for 1600 image tokens) and its self cache, while the reference's extra "
                "work is compute (re-projecting all 1600 image tokens and every past token in every layer "
                "and step), which grows with the batch while our weight reads do not. The last columns "
                "bound it: `step reads MB` is what a batch-1 step of ours reads, and `streaming them ms` "
                "the time this machine takes to stream as many float32 weight bytes through the same "
                "one-row matrix products with nothing else to do, measured in the same process.")
        write_section(SECTION, f"{note} {verdict(rows)}\n\n{body}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
