"""Copies stdin to stdout line by line, leaving out the lines in NOISY_LINES.

pix2seq/console.py runs this as a separate process between the command's stderr
and the real one (run by path with `python -I`: standard library only). Only
lines that no level setting reaches from outside are listed; everything else,
partial last lines included, passes unchanged. Ignores Ctrl-C so that the
command's own traceback still gets through; ends when every writer has closed.
"""
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
    for line in iter(sys.stdin.buffer.readline, b""):
        if not is_noise(line):
            out.write(line)
            out.flush()


if __name__ == "__main__":
    main()
