"""What a person sees: `pix2seq` commands run as a user's shell would start them
(no TF_CPP_MIN_LOG_LEVEL, PYTHONWARNINGS or PIX2SEQ_LOG set) print their progress
and none of the libraries' noise; a real error prints plainly with a non-zero
exit; `--verbose` brings every library line back. Plus the rules behind it
(pix2seq/console.py, pix2seq/stderr_filter.py) one by one.
"""
import logging
import os
import re
import subprocess
import sys
import warnings

import pytest

from pix2seq import console, stderr_filter
import tiny_coco

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lines a new user saw from `make demo` before (issue 19), as patterns.
NOISE = [
    r"Unable to register cu(FFT|DNN|BLAS) factory",
    r"No semi_persistent_directory",
    r"Discarding unparseable args",
    r"Couldn't find python-snappy",
    r"ArtifactQuery\.property_predicate is not supported",
    r"TF_USE_LEGACY_KERAS is set to 0",
    r"XLA service .* initialized",
    r"All log messages before absl::InitializeLog",
    r"FutureWarning",
    r"non-supported Python version",
]


def _user_env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS", console.LOG_ENV, "TF_USE_LEGACY_KERAS")}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _noise(text):
    return [line for line in text.splitlines() if any(re.search(p, line) for p in NOISE)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three commands at once (each pays TensorFlow's import): an ingestion with one bad
    image through a Beam worker process, a missing COCO directory, the same with --verbose."""
    root = tmp_path_factory.mktemp("console")
    coco = root / "coco"
    tiny_coco.make_valid(str(coco), "train", num_images=6)
    tiny_coco.make_valid(str(coco), "val", num_images=2)
    (coco / "images" / "train" / "000101.jpg").write_bytes(b"not an image")
    cli = [sys.executable, "-m", "pix2seq.cli"]
    commands = {
        "ingest": cli + ["ingest", "--coco-dir", str(coco), "--out", str(root / "out"), "--workers", "1",
                         "--caption-vocab-size", "40", "--max-error-fraction", "0.5"],
        "missing": cli + ["ingest", "--coco-dir", str(root / "no_such_dir"), "--out", str(root / "out2")],
        "verbose": cli + ["--verbose", "ingest", "--coco-dir", str(root / "no_such_dir"), "--out",
                          str(root / "out3")],
    }
    procs = {name: subprocess.Popen(cmd, cwd=str(root), env=_user_env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, cmd in commands.items()}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        out[name] = (proc.returncode, stdout, stderr)
    return out


@pytest.mark.slow
def test_ingest_shows_progress_and_no_library_noise(runs):
    rc, stdout, stderr = runs["ingest"]
    assert rc == 0, stderr
    assert _noise(stdout + stderr) == [], stdout + stderr
    lines = stdout.splitlines()
    assert any(line.startswith("ingest: ") and "annotation records" in line for line in lines)
    assert any(line.startswith("ingest: caption vocabulary of ") for line in lines)
    assert any(re.match(r"ingest: 0/8 images", line) for line in lines)  # shown when the work starts
    assert any(re.match(r"ingest: 8/8 images .*written 7  quarantined 1$", line) for line in lines), stdout
    assert "images written: train=5, val=2" in stdout or "images written: eval=2, train=5" in stdout
    assert stderr.strip() == ""


@pytest.mark.slow
def test_missing_coco_dir_is_one_plain_error_line(runs):
    rc, stdout, stderr = runs["missing"]
    assert rc == 1
    assert "Traceback" not in stderr and _noise(stdout + stderr) == []
    assert re.search(r"^error: .*no_such_dir: no instances_\*", stderr, re.M), stderr
    assert "--verbose" in stderr


@pytest.mark.slow
def test_verbose_restores_library_logs_and_the_traceback(runs):
    rc, _, stderr = runs["verbose"]
    assert rc == 1
    assert "Traceback" in stderr and "ValueError" in stderr
    assert re.search(r"FutureWarning: You are using a non-supported Python version", stderr)


def test_noisy_records_are_dropped_and_real_ones_kept():
    def record(name, msg, *args, level=logging.WARNING):
        return logging.LogRecord(name, level, __file__, 1, msg, args, None)

    assert console.is_noise(record("absl", "ArtifactQuery.property_predicate is not supported."))
    assert console.is_noise(record("apache_beam.io.tfrecordio", "Couldn't find python-snappy so ..."))
    assert not console.is_noise(record("absl", "Execution %d failed.", 3))
    # the same message from another logger is not the listed one
    assert not console.is_noise(record("model.training", "Couldn't find python-snappy"))
    forwarded = ("severity: WARN timestamp {   seconds: 1 } message: \"Discarding unparseable args: "
                 "[\\'--pipeline_type_check\\']\" log_location: \"x.py:1\"")
    worker = "apache_beam.runners.portability.local_job_service"
    assert console.is_noise(record(worker, "Worker: %s", forwarded))
    real = "severity: ERROR timestamp {   seconds: 1 } message: \"Couldn\\'t open image x.jpg\""
    assert not console.is_noise(record(worker, "Worker: %s", real))


def test_noisy_warnings_are_ignored_and_others_shown(monkeypatch):
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        monkeypatch.delenv(console.LOG_ENV, raising=False)
        console.apply_environment()
        warnings.warn("You are using a non-supported Python version (3.10.13). Google will not ...",
                      FutureWarning)
        warnings.warn("a real FutureWarning", FutureWarning)
        monkeypatch.setenv(console.LOG_ENV, "debug")
        console.apply_environment()
        warnings.warn("You are using a non-supported Python version (again)", FutureWarning)
    assert [str(w.message) for w in caught] == ["a real FutureWarning",
                                                "You are using a non-supported Python version (again)"]
    assert "non-supported" not in os.environ.get("PYTHONWARNINGS", "")
    monkeypatch.delenv(console.LOG_ENV)
    console.apply_environment()
    assert "ignore:You are using a non-supported Python version:FutureWarning" in os.environ["PYTHONWARNINGS"]


@pytest.mark.parametrize("line, noise", [
    (b"I0000 00:00:1796155902.197518    5331 service.cc:145] XLA service 0x55a0 initialized\n", True),
    (b"I0000 00:00:1796155902.274667    5331 device_compiler.h:188] Compiled cluster using XLA!\n", True),
    (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n", True),
    (b"PTBTokenizer tokenized 168 tokens at 465.27 tokens per second.\n", True),
    (b"E0000 00:00:1796155902.1    5331 service.cc:145] a real XLA error\n", False),
    (b"F0000 00:00:1796155902.1    5331 check.cc:1] Check failed: x\n", False),
    (b"Traceback (most recent call last):\n", False),
    (b"INFO model.training: checkpoint /tmp/x\n", False),
])
def test_stderr_filter_drops_only_listed_lines(line, noise):
    assert stderr_filter.is_noise(line) is noise


def test_stderr_filter_process_passes_everything_else():
    text = (b"I0000 00:00:1.5    1 service.cc:1] XLA service 0x1 initialized\n"
            b"real line one\nPTBTokenizer tokenized 5 tokens at 2.00 tokens per second.\nlast words")
    proc = subprocess.run([sys.executable, "-I", stderr_filter.__file__], input=text, capture_output=True)
    assert proc.returncode == 0 and proc.stdout == b"real line one\nlast words"


def test_stderr_filter_passes_a_live_bar_before_its_line_ends():
    proc = subprocess.Popen([sys.executable, "-I", stderr_filter.__file__], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    proc.stdin.write(b"\r 3/10 images")
    proc.stdin.flush()
    assert os.read(proc.stdout.fileno(), 100) == b"\r 3/10 images"  # not held back until a newline
    proc.stdin.write(b"\r10/10 images\n")
    proc.stdin.close()
    assert proc.stdout.read() == b"\r10/10 images\n" and proc.wait(timeout=30) == 0
