"""Live progress (pix2seq/progress.py) and the pipeline's component lines
(pipeline/progress.py): what is printed, counting across processes, and the TFX
records the component lines are made from."""
import inspect
import os
import pickle
import re
import subprocess
import sys

import pytest

from pix2seq import console, progress

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def plain(monkeypatch):
    """stdout is a log file, not a terminal: plain lines."""
    monkeypatch.setattr(console, "interactive", lambda: False)


def test_plain_lines_say_done_total_rate_and_time_left(plain, capsys):
    bar = progress.Progress("evaluate", 10, interval=0)
    bar.update(4, candidate=4)
    bar.update(10, candidate=10)  # the last line is close()'s, printed once
    bar.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("evaluate: 0/10 images")
    assert re.match(r"evaluate: 4/10 images  [\d.]+ (images/s|s/image)  ETA \S+  \S+ elapsed  candidate 4$", lines[1])
    assert re.match(r"evaluate: 10/10 images  .* elapsed  candidate 10$", lines[2]) and "ETA" not in lines[2]
    assert len(lines) == 3


def test_plain_lines_wait_for_the_interval(plain, capsys):
    bar = progress.Progress("train", 100, unit="step", interval=3600, start=40)
    for step in range(41, 60):
        bar.update(step, loss=2.5)
    assert capsys.readouterr().out.splitlines() == ["train: 40/100 steps  0s elapsed"]
    bar.close()
    assert re.match(r"train: 59/100 steps  .*ETA .* loss 2\.5$", capsys.readouterr().out.strip())


def test_terminal_uses_keras_progbar(monkeypatch, capsys):
    monkeypatch.setattr(console, "interactive", lambda: True)
    bar = progress.Progress("ingest", 3)
    bar.update(2, written=2, quarantined=0)
    bar.update(3, written=3, quarantined=0, loss=0.25)
    bar.close()
    out = capsys.readouterr().out
    assert out.startswith("ingest:\n") and "3/3" in out
    # counts as counts, the last value shown as given (Progbar alone would average and print 2.5000)
    assert re.search(r"written: 3 - quarantined: 0 - loss: 0.25\s*$", out.splitlines()[-1]), out


def test_counters_in_other_processes_reach_the_tally(tmp_path):
    tally = progress.Tally(str(tmp_path), ("written", "quarantined"))
    child = ("import pickle, sys; c = pickle.loads(bytes.fromhex(sys.argv[1]))\n"
             "for _ in range(5): c.add()")
    env = dict(os.environ, PYTHONPATH=REPO)
    procs = [subprocess.Popen([sys.executable, "-c", child, pickle.dumps(tally.counter("written")).hex()], env=env)
             for _ in range(3)]
    tally.counter("quarantined").add(2)
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert tally.counts() == {"written": 15, "quarantined": 2}


def test_a_counter_without_its_directory_counts_nothing(tmp_path):
    counter = progress.Tally(str(tmp_path / "elsewhere"), ("done",)).counter("done")
    counter.add(3)  # a remote worker: no error, no file
    assert not (tmp_path / "elsewhere").exists()


def test_track_shows_the_final_counts_and_cleans_up(plain, capsys):
    with progress.track("ingest", 4, ("written", "quarantined"), poll=0.01) as tally:
        tally.counter("written").add(3)
        tally.counter("quarantined").add(1)
        directory = os.path.dirname(tally.path)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ingest: 0/4 images")
    assert re.match(r"ingest: 4/4 images .* written 3  quarantined 1$", out[-1])
    assert not os.path.exists(directory)


def test_component_lines_from_tfx_records():
    from absl import logging as absl_logging

    from pipeline import progress as pipeline_progress

    said = []
    with pipeline_progress.component_lines(3, say=said.append):
        absl_logging.info(pipeline_progress.RUNNING, "CocoExampleGen")
        absl_logging.info(pipeline_progress.FINISHED, "CocoExampleGen")
        absl_logging.info(pipeline_progress.RUNNING, "StatisticsGen")
        absl_logging.info(pipeline_progress.CACHED, 7)
        absl_logging.info(pipeline_progress.FINISHED, "StatisticsGen")
        absl_logging.info(pipeline_progress.RUNNING, "Trainer")
        absl_logging.error(pipeline_progress.FAILED, 8)
    absl_logging.info(pipeline_progress.RUNNING, "Pusher")  # after the block: not heard
    assert [re.sub(r"[\d.]+s$", "Ns", s) for s in said] == [
        "[1/3] CocoExampleGen: started", "[1/3] CocoExampleGen: done in Ns",
        "[2/3] StatisticsGen: started", "[2/3] StatisticsGen: CACHED (outputs of an earlier run reused) in Ns",
        "[3/3] Trainer: started", "[3/3] Trainer: FAILED after Ns"]


def test_component_line_templates_are_tfx_own():
    """The records are matched on TFX's message templates: a TFX upgrade that changes
    them must fail here, not silently drop the lines."""
    from tfx.orchestration.local import local_dag_runner
    from tfx.orchestration.portable import launcher

    from pipeline import progress as pipeline_progress

    runner, launch = inspect.getsource(local_dag_runner), inspect.getsource(launcher)
    assert f"'{pipeline_progress.RUNNING}'" in runner and f"'{pipeline_progress.FINISHED}'" in runner
    assert f"'{pipeline_progress.CACHED}'" in launch and f"'{pipeline_progress.FAILED}'" in launch


def test_a_silent_component_gets_a_heartbeat_line():
    import time

    from absl import logging as absl_logging

    from pipeline import progress as pipeline_progress

    said = []
    with pipeline_progress.component_lines(1, say=said.append, heartbeat=0.2):
        absl_logging.info(pipeline_progress.RUNNING, "StatisticsGen")
        time.sleep(0.7)
        absl_logging.info(pipeline_progress.FINISHED, "StatisticsGen")
        time.sleep(0.5)  # nothing runs: no heartbeat
    assert said[0] == "[1/1] StatisticsGen: started" and said[-1].startswith("[1/1] StatisticsGen: done in ")
    beats = said[1:-1]
    assert 1 <= len(beats) <= 4 and all(re.match(r"\[1/1\] StatisticsGen: running for \d+s$", b) for b in beats)


def test_component_lines_survive_tf_resetting_absl_verbosity():
    """TF's SavedModel export saves and restores absl's verbosity around its work
    (tensorflow/python/trackable/autotrackable.py); the lines must keep coming after it."""
    from absl import logging as absl_logging

    from pipeline import progress as pipeline_progress

    said = []
    with pipeline_progress.component_lines(1, say=said.append):
        saved = absl_logging.get_verbosity()  # what autotrackable does
        absl_logging.set_verbosity(absl_logging.FATAL)
        absl_logging.set_verbosity(saved)
        absl_logging.info(pipeline_progress.RUNNING, "Trainer")
    assert said == ["[1/1] Trainer: started"]


def test_a_log_line_during_a_live_bar_starts_on_a_new_line(monkeypatch, capsys):
    import logging

    monkeypatch.setattr(console, "interactive", lambda: True)
    console.setup_logging()  # its handlers write to the captured stdout
    try:
        bar = progress.Progress("train", 10, unit="step")
        bar.update(4, loss=1.5)
        logging.getLogger("model.training").info("checkpoint ckpt-4")
        bar.update(8, loss=1.25)
        bar.close()
        logging.getLogger("model.training").info("done")
    finally:
        console.line_open(False)
        console.setup_logging()
    lines = capsys.readouterr().out.split("\n")
    assert "checkpoint ckpt-4" in lines  # a line of its own, not glued to the bar's
    assert lines[-2] == "done"  # after the closed bar's own line
