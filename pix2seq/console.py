"""What a person sees on the console: what the program is doing, real warnings and
errors, and none of the libraries' start-up chatter.

Noise is turned off where it starts, never by filtering our output:

* `apply_environment()` runs when `pix2seq` is imported, i.e. before TensorFlow,
  Beam or TFX load, and writes everything into `os.environ`, so Beam worker
  processes and other children start the same way:
  - `TF_CPP_MIN_LOG_LEVEL=3`: TF's C++ logging, read once when TF loads. The
    `Unable to register cuFFT/cuDNN/cuBLAS factory` lines are ERROR-level lines
    TF prints at import on every machine (GPU or not), so only 3 hides them; TF
    C++ failures still reach Python as exceptions. A value set by the user wins.
  - Python warnings filters (`warnings.filterwarnings` here, `PYTHONWARNINGS` for
    children) for the library support notices in `NOISY_WARNINGS`.
* `setup_logging()` (the CLI) sends our packages' INFO lines (progress, results) to
  stdout as plain text and every library's WARNING and above to stderr, except the
  records in `NOISY_RECORDS`; Beam worker records forwarded to the driver are
  matched on their own message.
* `filter_stderr()` (the CLI) passes stderr through `pix2seq/stderr_filter.py`,
  which drops the lines in its `NOISY_LINES` only: C++ and Java lines that have no
  level setting from outside (XLA's absl INFO lines, the CoreNLP tokenizer's
  timing line). It runs as its own process, so a crash's last words still get out.

`PIX2SEQ_LOG=debug` (what `pix2seq --verbose` sets, inherited by children) turns
all of this off: every library line and INFO record shows.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import warnings

LOG_ENV = "PIX2SEQ_LOG"
OUR_PACKAGES = ("pix2seq", "data", "model", "components", "serving", "pipeline", "bench")

# (category, start of the message): library notices about their own support policy,
# printed at import in every process; nothing a run of ours can act on.
NOISY_WARNINGS = (
    (FutureWarning, "You are using a non-supported Python version"),  # google.api_core, per client library
    (FutureWarning, "Support for google-cloud-storage < 3.0.0"),  # google.cloud.aiplatform
)

# (logger, start of the message) of library log records that describe no problem of this run.
NOISY_RECORDS = (
    # tensorflow_transform at import; Keras 3 is this project's choice (pix2seq/__init__.py)
    ("absl", "TF_USE_LEGACY_KERAS is set to 0"),
    # TFX's resolver on a local SQLite MLMD; the query runs without the predicate push-down
    ("absl", "ArtifactQuery.property_predicate is not supported"),
    # Beam's pure-Python CRC fallback: correct, only slower
    ("apache_beam.io.tfrecordio", "Couldn't find python-snappy"),
    # Beam worker start-up: no pickled __main__ session (we ship no code in __main__)
    ("apache_beam.runners.worker.sdk_worker_main", "No semi_persistent_directory found"),
    # Beam worker start-up: DirectRunner-only flags the portable worker does not know
    ("apache_beam.options.pipeline_options", "Discarding unparseable args"),
)
# Beam's local job service re-logs each worker record as "Worker: <LogEntry proto text>".
_WORKER_LOGGER = "apache_beam.runners.portability.local_job_service"
_WORKER_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')

_USER_ENV = {k: os.environ.get(k) for k in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
_our_filters: list = []


def verbose() -> bool:
    """True when every library log line should show (`PIX2SEQ_LOG=debug`)."""
    return os.environ.get(LOG_ENV, "").strip().lower() == "debug"


def interactive() -> bool:
    """True when stdout is a terminal (live bars) rather than a log file or pipe."""
    return hasattr(sys.stdout, "isatty") and sys.stdout.isatty()


def _warning_options():
    return [f"ignore:{message}:{category.__name__}" for category, message in NOISY_WARNINGS]


def apply_environment() -> None:
    """Sets the library log levels and warning filters for this process and its children.

    Idempotent; call again after changing `PIX2SEQ_LOG` (the CLI does for --verbose).
    """
    quiet = not verbose()
    if _USER_ENV["TF_CPP_MIN_LOG_LEVEL"] is None:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3" if quiet else "0"
    options = [o for o in (_USER_ENV["PYTHONWARNINGS"] or "").split(",") if o]
    options += _warning_options() if quiet else []
    if options:
        os.environ["PYTHONWARNINGS"] = ",".join(options)
    else:
        os.environ.pop("PYTHONWARNINGS", None)
    for entry in _our_filters:
        if entry in warnings.filters:
            warnings.filters.remove(entry)
    _our_filters.clear()
    if quiet:
        for category, message in NOISY_WARNINGS:
            warnings.filterwarnings("ignore", message=re.escape(message), category=category)
            _our_filters.append(warnings.filters[0])


def is_noise(record: logging.LogRecord) -> bool:
    """True for a record listed in NOISY_RECORDS (also when a Beam worker forwarded it)."""
    if record.name == _WORKER_LOGGER:
        found = _WORKER_MESSAGE.search(record.getMessage())
        if not found:
            return False
        message = found.group(1).replace("\\'", "'").replace('\\"', '"')
        return any(message.startswith(prefix) for _, prefix in NOISY_RECORDS)
    message = record.getMessage()
    return any(record.name == name and message.startswith(prefix) for name, prefix in NOISY_RECORDS)


def is_ours(name: str) -> bool:
    return name.split(".")[0] in OUR_PACKAGES


class _Ours(logging.Filter):
    """Our INFO lines: progress and results, printed as plain text on stdout."""

    def filter(self, record):
        return is_ours(record.name) and record.levelno < logging.WARNING


class _NotNoise(logging.Filter):
    def filter(self, record):
        return not is_noise(record)


_line_open = [False]


def line_open(is_open: bool) -> None:
    """A live progress bar (pix2seq/progress.py) holds the terminal's current line, or
    gave it up: a log line printed meanwhile starts on a new line instead of after the bar."""
    _line_open[0] = is_open


class _LineHandler(logging.StreamHandler):
    def emit(self, record):
        if _line_open[0]:
            _line_open[0] = False
            try:
                self.stream.write("\n")
            except (OSError, ValueError):
                pass
        super().emit(record)


def setup_logging() -> None:
    """Root logging for a command: our INFO on stdout, warnings and errors on stderr.

    Quiet (default): libraries' records below WARNING are dropped, and so are
    NOISY_RECORDS. Verbose: every record at INFO and above, nothing dropped.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_pix2seq", False):
            root.removeHandler(handler)
    out = _LineHandler(sys.stdout)
    out.setFormatter(logging.Formatter("%(message)s"))
    out.addFilter(_Ours())
    err = _LineHandler(sys.stderr)
    err.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    err.setLevel(logging.INFO if verbose() else logging.WARNING)
    if not verbose():
        err.addFilter(_NotNoise())
    err.addFilter(lambda record: not (is_ours(record.name) and record.levelno < logging.WARNING))
    for handler in (out, err):
        handler._pix2seq = True
        root.addHandler(handler)
    root.setLevel(logging.INFO if verbose() else logging.WARNING)
    if verbose():
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.INFO)  # absl's own setting survives TF resetting it
    for package in OUR_PACKAGES:
        logging.getLogger(package).setLevel(logging.INFO)


_filter_process = None


def filter_stderr() -> None:
    """Routes this process's stderr (fd 2, inherited by children) through
    pix2seq/stderr_filter.py. No-op when verbose or already done."""
    global _filter_process
    if verbose() or _filter_process is not None:
        return
    import atexit
    import subprocess

    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stderr_filter.py")
    sys.stderr.flush()
    original = os.dup(2)
    _filter_process = subprocess.Popen([sys.executable, "-I", script], stdin=subprocess.PIPE,
                                       stdout=original, stderr=original)
    os.dup2(_filter_process.stdin.fileno(), 2)
    _filter_process.stdin.close()

    def restore():
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(original, 2)  # our copy of the pipe closes: the filter reads to the end and exits
        try:
            _filter_process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # a child still holds the pipe; it drains when that exits
            pass

    atexit.register(restore)
