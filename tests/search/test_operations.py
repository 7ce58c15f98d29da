"""Issue 13's search operations: missing data, stale trials, the live table, the deadline, clean stops."""

import sys
import time

import optuna
import pytest
from test_search import _env, _spawn_interruptible, _trials, _wait_running, make_study

from mincap.cli import main
from mincap.config.study import load_study_file
from mincap.report import render
from mincap.search import monitor
from mincap.search.run import SearchOptions, fail_stale_trials
from mincap.search.storage import open_study

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
               "t10k-labels-idx1-ubyte.gz")


def test_missing_data_is_one_line_and_creates_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MINCAP_OFFLINE", "1")
    f = make_study(tmp_path, name="nodata")
    empty = tmp_path / "nothing" / "here"
    assert main(["search", str(f), "--no-progress", "--data-dir", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert all(name in err[0] for name in MNIST_FILES) and str(empty / "MNIST" / "raw") in err[0]
    assert not (tmp_path / "nothing").exists()  # no empty folders left behind
    assert not (tmp_path / "nodata.db").exists() and not (tmp_path / "nodata.artifacts").exists()


def _stale_study(tmp_path):
    cfg = load_study_file(make_study(tmp_path, name="stale"))
    study = open_study(cfg)
    trial = study.ask({"m0": optuna.distributions.IntDistribution(8, 32)})
    trial.set_user_attr("progress", [3, 5, 0.5])
    study._storage.record_heartbeat(trial._trial_id)
    time.sleep(cfg.storage.grace_period_s + 1.5)
    return cfg, study, trial


def test_stale_trial_is_shown_stale_then_failed_and_requeued_at_start(tmp_path):
    cfg, study, trial = _stale_study(tmp_path)
    snap = monitor.snapshot(study, 0, cfg.study.target)
    assert snap["running"] == [(trial.number, [3, 5, 0.5], True)]
    mon = monitor.SearchMonitor(cfg, SearchOptions(), total=None, n_before=0, timeout_s=None, enabled=False)
    text = render(mon._table(snap), width=140)
    assert "stale" in text and "no heartbeat" in text
    assert fail_stale_trials(study) == [trial.number]
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    assert states == ["FAIL", "WAITING"]  # failed, and its parameters re-queued


def test_live_table_fine_tuning_and_remaining(tmp_path):
    cfg = load_study_file(make_study(tmp_path, name="tbl"))
    snap = {"states": {"RUNNING": 1}, "best_bits": None, "finished": 0, "n_done": 1, "mean_trial_s": 10.0,
            "running": [(4, [17, 14, 0.97], False)]}
    mon = monitor.SearchMonitor(cfg, SearchOptions(), total=2, n_before=0, timeout_s=60, enabled=False)
    text = render(mon._table(snap), width=140)
    assert "fine-tuning epoch 3" in text and "17/14" not in text
    mon._t0 -= 120  # past the deadline, a trial still running
    text = render(mon._table(snap), width=140)
    assert "deadline reached, stopping running trials" in text and "0.0 min" not in text
    assert monitor.trial_progress([2, 4, 0.5]) == ("epoch 2/4  val 50.00%", 0.5)
    assert monitor.trial_progress([0, 4, None]) == ("training: epoch 1/4 under way", 0.0)


def test_timeout_stops_the_running_trial_at_the_deadline(tmp_path, mnist_root):
    # 400 epochs on 20,000 images: minutes even on an idle machine, far past a 5 s deadline.
    f = make_study(tmp_path, name="deadline", limit=20000, epochs=400)
    t0 = time.perf_counter()
    assert main(["search", str(f), "--trials", "2", "--timeout", "5s", "--no-progress",
                 "--data-dir", str(mnist_root)]) == 0
    took = time.perf_counter() - t0
    trials = _trials(f)
    stopped = [t for t in trials if t.state.name == "PRUNED"]
    assert stopped and "--timeout deadline passed during epoch" in stopped[0].user_attrs["stop_reason"]
    assert all(t.state.name != "COMPLETE" for t in trials)
    assert took < 5 + 60  # one epoch past the deadline at most, plus start-up


@pytest.mark.parametrize("sig,name", [(2, "SIGINT"), (15, "SIGTERM")])
def test_stop_prints_one_line_per_trial_and_no_traceback(tmp_path, mnist_root, sig, name):
    f = make_study(tmp_path, name=f"stop{sig}", limit=3000, epochs=400)  # still training at the signal
    cmd = [sys.executable, "-m", "mincap.cli", "search", str(f), "--trials", "3", "--no-progress"]
    p = _spawn_interruptible(cmd, _env(mnist_root))
    number = _wait_running(f, p)
    assert number is not None
    p.send_signal(sig)
    err = p.communicate(timeout=120)[1]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = err.strip().splitlines()
    assert lines[-2:] == [f"mincap: trial {number} interrupted by the user ({name}): marked FAIL",
                          "mincap: " + ("interrupted" if sig == 2 else "terminated")], err
    failed = [t for t in _trials(f) if t.number == number][0]
    assert failed.state.name == "FAIL" and failed.user_attrs["fail_reason"] == f"interrupted by the user ({name})"
