"""Copies stdin to stdout line by line, leaving out the lines in NOISY_LINES.

pix2seq/console.py runs this as a separate process between the command's stderr
and the real one (run by path with `python -I`: standard library only). Only
lines that no level setting reaches from outside are listed; everything else,
partial last lines included, passes unchanged (a line with a carriage return, a
live progress bar, as soon as it arrives). Ignores Ctrl-C so that the
command's own traceback still gets through; ends when every writer has closed.
"""
import os
import re
import signal
import sys

NOISY_LINES = (
    # absl C++ logging inside TensorFlow's XLA (e.g. "XLA service ... initialized",
    # "Compiled cluster using XLA!"): INFO lines with no minimum-level setting in TF 2.16.
    re.compile(rb"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR\r?\n?$"),
    re.compile(rb"^I\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.+-]+:\d+\] "),
    # Stanford CoreNLP's PTBTokenizer (BLEU/CIDEr tokenization) prints its speed on stderr.
    re.compile(rb"^PTBTokenizer tokenized \d+ tokens at [\d.]+ tokens per second\.\r?\n?$"),
)


def is_noise(line: bytes) -> bool:
    return any(pattern.match(line) for pattern in NOISY_LINES)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = sys.stdout.buffer
    pending, passing = b"", False  # the current unfinished line; part of it already passed on
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            if passing or not is_noise(line + b"\n"):
                out.write(line + b"\n")
            passing = False
        # A carriage return means a live progress bar (tqdm and the like): pass it on now,
        # not when its line ends. No listed line contains one.
        if pending and (passing or b"\r" in pending):
            out.write(pending)
            pending, passing = b"", True
        out.flush()
    if pending and (passing or not is_noise(pending)):
        out.write(pending)
        out.flush()


if __name__ == "__main__":
    main()
