"""Live progress for steps longer than a few seconds: items done out of a total,
rate, time left.

`Progress` draws Keras' own bar (`keras.utils.Progbar`) when stdout is a terminal
and prints one plain line every `interval` seconds otherwise (log files, CI,
`make demo | tee`), so a slow step is never mistaken for a hung one.

Work done by Beam workers, which may be other processes, is counted through a
`Tally`: each worker appends one byte per item to a file in a local temporary
directory and `track` reads the file twice a second in the driver. A worker on
another machine (Dataflow) does not find the directory and counts nothing; the
bar then jumps at the end.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from typing import Dict, Iterator, Sequence

from pix2seq import console

PLAIN_INTERVAL = 30.0  # seconds between plain lines when stdout is not a terminal
_last_activity = [time.time()]


def mark_activity() -> None:
    """Something was shown just now (a heartbeat waits for a silence)."""
    _last_activity[0] = time.time()


def silent_for() -> float:
    """Seconds since any Progress last showed something."""
    return time.time() - _last_activity[0]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds}s"


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """`update(done, **values)` as work advances, `close()` at the end.

    Args:
      label: what is being done, e.g. "ingest" or "evaluate".
      total: items expected (None: unknown).
      unit: the item's name ("image", "step").
      interval: seconds between plain lines (terminal: Keras' own redraw pace).
      start: items already done before this run (a resumed training).
    """

    def __init__(self, label: str, total, unit: str = "image", interval: float = None, start: int = 0):
        self.label, self.total, self.unit, self.start = label, total, unit, start
        self._bar = None
        self._done, self._values = start, {}
        self._started = self._last = time.time()
        self._interval = PLAIN_INTERVAL if interval is None else interval
        mark_activity()
        if console.interactive():
            from keras.utils import Progbar

            print(f"{label}:", flush=True)
            self._bar = Progbar(total, unit_name=unit, interval=0.2)
            self._bar._seen_so_far = start  # a resumed run starts the bar where it left off
        else:
            print(self.line(), flush=True)  # at once: a person sees what started and how much there is

    def update(self, done: int, **values) -> None:
        mark_activity()
        self._done, self._values = done, dict(values)
        if self._bar is not None:
            self._show_values()
            self._bar.update(done, finalize=False)
            console.line_open(True)
            return
        now = time.time()
        finished = self.total is not None and done >= self.total  # close() prints that line
        if now - self._last >= self._interval and not finished:
            self._last = now
            print(self.line(now), flush=True)

    def advance(self, n: int = 1, **values) -> None:
        """`n` more items done (a callback for code that reports increments)."""
        self.update(self._done + n, **values)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

    def line(self, now: float = None) -> str:
        """The plain progress line: done/total, rate, time left, values."""
        now = time.time() if now is None else now
        elapsed = max(now - self._started, 1e-9)
        advanced = self._done - self.start
        parts = [f"{self.label}: {self._done}" + (f"/{self.total} {self.unit}s" if self.total else f" {self.unit}s")]
        if advanced > 0:
            rate = advanced / elapsed
            parts.append(f"{rate:.2f} {self.unit}s/s" if rate >= 1 else f"{1 / rate:.2f} s/{self.unit}")
            if self.total and self._done < self.total:
                parts.append(f"ETA {_duration((self.total - self._done) / rate)}")
        parts.append(f"{_duration(elapsed)} elapsed")
        parts += [f"{k} {_number(v)}" for k, v in self._values.items()]
        return "  ".join(parts)

    def _show_values(self) -> None:
        """Counts as counts: Progbar prints a value it holds as a non-list as it is
        (its `update(values=...)` would average them and print 18 as 18.0000)."""
        for key, value in self._values.items():
            if key not in self._bar._values_order:
                self._bar._values_order.append(key)
            self._bar._values[key] = _number(value)

    def close(self) -> None:
        mark_activity()
        if self._bar is not None:
            self._show_values()
            self._bar.update(self._done, finalize=True)  # ends its line
            console.line_open(False)
        else:
            print(self.line(), flush=True)


class Counter:
    """Picklable handle a Beam DoFn calls `add(n)` on; one byte per item to a tally file."""

    def __init__(self, path: str, code: bytes):
        self.path, self.code = path, code
        self._fd = None

    def __getstate__(self):
        return {"path": self.path, "code": self.code}

    def __setstate__(self, state):
        self.path, self.code, self._fd = state["path"], state["code"], None

    def add(self, n: int = 1) -> None:
        if n <= 0:
            return
        if self._fd is None:
            if not os.path.isdir(os.path.dirname(self.path)):
                self._fd = -1  # a remote worker: nothing to count into
            else:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self._fd >= 0:
            os.write(self._fd, self.code * n)  # O_APPEND: whole writes from many processes never interleave


class Tally:
    """Counts per kind, written by `Counter`s in any process on this machine."""

    def __init__(self, directory: str, kinds: Sequence[str]):
        self.path = os.path.join(directory, "tally")
        self.kinds = tuple(kinds)

    def counter(self, kind: str) -> Counter:
        return Counter(self.path, bytes([ord("a") + self.kinds.index(kind)]))

    def counts(self) -> Dict[str, int]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        return {k: data.count(bytes([ord("a") + i])) for i, k in enumerate(self.kinds)}


@contextlib.contextmanager
def track(label: str, total: int, kinds: Sequence[str] = ("done",), unit: str = "image",
          poll: float = 0.5) -> Iterator[Tally]:
    """Shows live progress of the work counted into the yielded Tally (done = sum of kinds)."""
    directory = tempfile.mkdtemp(prefix="pix2seq_progress_")
    tally = Tally(directory, kinds)
    progress = Progress(label, total, unit)
    stop = threading.Event()

    def show():
        counts = tally.counts()
        progress.update(sum(counts.values()), **(counts if len(kinds) > 1 else {}))

    def watch():
        while not stop.wait(poll):
            show()

    thread = threading.Thread(target=watch, name=f"progress-{label}", daemon=True)
    thread.start()
    finished = False
    try:
        yield tally
        finished = True
    finally:
        stop.set()
        thread.join()
        show()
        if finished:
            progress.close()
        shutil.rmtree(directory, ignore_errors=True)
