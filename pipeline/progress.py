"""One line when each pipeline component starts and one when it ends (done in N s,
CACHED or FAILED), while LocalDagRunner runs the pipeline.

TFX's local runner reports these events only as absl INFO records, which the
console hides (pix2seq/console.py); `component_lines()` listens to exactly those
records (matched on TFX 1.16's message templates) for the length of a run and
prints the events as our own lines. The components' own progress (ingestion,
training, evaluation) appears between a component's two lines; a component that
shows none (StatisticsGen, SchemaGen, ...) gets a "running for N s" line after
HEARTBEAT seconds of silence (later, a quarter of its running time), so it never
looks hung.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Callable, Iterator, Optional

from pix2seq import progress

log = logging.getLogger(__name__)
HEARTBEAT = 30.0

# TFX 1.16 message templates (tfx/orchestration/local/local_dag_runner.py, portable/launcher.py).
RUNNING = "Component %s is running."
FINISHED = "Component %s is finished."
CACHED = "A cached execution %d is used."
FAILED = "Execution %d failed."


class ComponentEvents(logging.Handler):
    """Turns TFX's launcher records into start / end lines, numbered `[i/total]`."""

    def __init__(self, total: int, say: Callable[[str], None]):
        super().__init__(level=logging.INFO)
        self.total, self.say = total, say
        self.index, self.node, self.started, self.cached = 0, None, 0.0, False

    def _say(self, line: str) -> None:
        progress.mark_activity()
        self.say(line)

    def heartbeat(self, every: float) -> None:
        """A line for the running component when nothing was shown for `every` seconds
        (or a quarter of its running time, whichever is longer: a long step says less)."""
        node = self.node
        if node and progress.silent_for() >= max(every, (time.time() - self.started) / 4):
            self._say(f"{self._tag()} {node}: running for {time.time() - self.started:.0f}s")

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg == RUNNING and args:
            self.index += 1
            self.node, self.started, self.cached = args[0], time.time(), False
            self._say(f"{self._tag()} {self.node}: started")
        elif record.msg == CACHED and self.node:
            self.cached = True
        elif record.msg == FAILED and self.node:
            self._say(f"{self._tag()} {self.node}: FAILED after {time.time() - self.started:.1f}s")
            self.node = None
        elif record.msg == FINISHED and args and args[0] == self.node:
            state = "CACHED (outputs of an earlier run reused)" if self.cached else "done"
            self._say(f"{self._tag()} {self.node}: {state} in {time.time() - self.started:.1f}s")
            self.node = None

    def _tag(self) -> str:
        return f"[{self.index}/{self.total}]"


@contextlib.contextmanager
def component_lines(total: int, say: Optional[Callable[[str], None]] = None,
                    heartbeat: float = HEARTBEAT) -> Iterator[ComponentEvents]:
    """Prints component start / end lines for the runs inside the block (`say`: default our INFO log)."""
    from absl import logging as absl_logging

    absl_logger = logging.getLogger("absl")
    handler = ComponentEvents(total, say or log.info)
    # The records must be created (the console still hides them). Through absl's own
    # verbosity, not the logger's level: TF's SavedModel export saves and restores absl's
    # verbosity (tensorflow/python/trackable/autotrackable.py), which resets the level.
    old_verbosity = absl_logging.get_verbosity()
    if old_verbosity < absl_logging.INFO:
        absl_logging.set_verbosity(absl_logging.INFO)
    absl_logger.addHandler(handler)
    stop = threading.Event()

    def beat():
        while not stop.wait(min(1.0, heartbeat)):
            handler.heartbeat(heartbeat)

    thread = threading.Thread(target=beat, name="component-heartbeat", daemon=True)
    thread.start()
    try:
        yield handler
    finally:
        stop.set()
        thread.join()
        absl_logger.removeHandler(handler)
        absl_logging.set_verbosity(old_verbosity)
