"""The batched search loop (mincap.search.batched) on CPU: same study results as one trial at a time."""

import signal
import subprocess
import sys
import time

import optuna
import pytest

# tests/ is on sys.path (pytest's rootdir-relative imports)
from test_search import _env, _trials, _wait_running, make_study

from mincap import search
from mincap.cli import main
from mincap.config.study import load_study_file
from mincap.search import batched as search_batched
from mincap.search import path_trial
from mincap.search import run as search_run
from mincap.training import batched

SETTINGS = [{"family": "mlp", "activation": "relu", "mlp_depth": 1, "m0": w, "bits0": b, "bits1": b,
             "epochs": 2, "batch_size": 32, "lr": 0.01, "weight_decay": 1e-4, "augment": 0,
             "qat_fraction": 0.5, "prune_ratio": 0.0} for w, b in [(8, 4), (16, 3), (24, 5), (32, 6)]]


def _run(tmp_path, mnist_root, name, batch_trials, settings=SETTINGS, target=0.6, trials=None, early_stop=False):
    f = make_study(tmp_path, name=name, limit=300, target=target, epochs=2)
    # Early stopping compares a trial with the trials finished before it began: one at a
    # time, trial 1 sees trial 0's curve; in a group, none. Off where results are compared.
    f.write_text(f.read_text().replace('seeds = ["mlp-32"]', "seeds = []")
                 + f"[early_stop]\nenabled = {str(early_stop).lower()}\n")
    cfg = load_study_file(f)
    study = search.open_study(cfg)
    for p in settings:
        study.enqueue_trial(p)
    opts = search.SearchOptions(trials=trials or len(settings), workers=1, device="cpu", batch_trials=batch_trials,
                                data_dir=str(mnist_root), progress=False)
    search.run_search(cfg, opts)
    return {t.number: t for t in optuna.load_study(study_name=cfg.study.name, storage=cfg.storage_url).trials}


def test_batched_search_gives_the_one_at_a_time_results(tmp_path, mnist_root):
    """Tolerance as for worker processes: val accuracy within 0.01, size within 0.5% (float32 noise only)."""
    one = _run(tmp_path, mnist_root, "solo", 1)
    four = _run(tmp_path, mnist_root, "batched", 4)
    assert sorted(one) == sorted(four) == [0, 1, 2, 3]  # nothing left WAITING behind
    for n in one:
        assert one[n].params == four[n].params
        assert one[n].state.name == four[n].state.name == "COMPLETE", four[n].user_attrs.get("fail_reason")
        assert four[n].user_attrs["batch_group"] == [0, 4] and "batch_group" not in one[n].user_attrs
        assert abs(one[n].values[1] - four[n].values[1]) <= 0.01
        # Measured bit-identical (2026-11-24); 0.5% leaves room for a few codes flipped by float noise.
        assert abs(one[n].values[0] - four[n].values[0]) <= 0.005 * one[n].values[0]
        assert len(four[n].user_attrs["curve"]) == 2
        assert four[n].user_attrs["artifact_id"]


def test_batched_search_samples_groups_that_share_a_structure(tmp_path, mnist_root):
    """Free sampling: the first trial of each group draws the structure, the others share it."""
    trials = _run(tmp_path, mnist_root, "free", 3, settings=[], trials=6)
    assert sorted(trials) == list(range(6))
    assert all(t.state.name == "COMPLETE" for t in trials.values())
    for first in (0, 3):
        group = [trials[first + i] for i in range(3)]
        assert all(t.user_attrs["batch_group"] == [first, 3] for t in group)
        assert len({t.params["batch_size"] for t in group}) == 1  # the one structural choice of this space
    assert len({t.params["m0"] for t in trials.values()}) > 1  # widths are drawn per trial


def test_early_stop_and_a_failure_inside_a_group(tmp_path, mnist_root, monkeypatch):
    """Target 0.99 on 300 images: every trial is hopeless after epoch 1 of 2 and is PRUNED
    without post-processing; a failure in one member's post-processing fails only it."""
    stopped = _run(tmp_path, mnist_root, "hopeless", 4, target=0.99, early_stop=True)
    for t in stopped.values():
        assert t.state.name == "PRUNED", t.user_attrs.get("fail_reason")
        assert len(t.user_attrs["curve"]) == 1 and t.user_attrs["early_stop_saved_s"] > 0

    real = path_trial.train_compressed

    def flaky(spec, *a, **k):
        if spec.hidden == (16,):
            raise RuntimeError("boom in post-processing")
        return real(spec, *a, **k)

    monkeypatch.setattr(path_trial, "train_compressed", flaky)
    mixed = _run(tmp_path, mnist_root, "mixed", 4)
    states = [mixed[n].state.name for n in range(4)]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert "boom" in mixed[1].user_attrs["fail_reason"]


def test_group_size_rule():
    assert search_run.group_size(0, "cpu") == 1
    assert search_run.group_size(0, "cuda:0") == search_run.GPU_GROUP
    assert search_run.group_size(3, "cpu") == 3
    with pytest.raises(Exception, match="batch-trials"):
        search.SearchOptions(batch_trials=-1)


def test_sigterm_fails_the_unfinished_trials_of_the_group(tmp_path, mnist_root):
    f = make_study(tmp_path, name="bintr", limit=3000, epochs=6)
    cmd = [sys.executable, "-m", "mincap.cli", "search", str(f), "--trials", "4", "--no-progress",
           "--batch-trials", "2"]
    p = subprocess.Popen(cmd, env=_env(mnist_root), stderr=subprocess.PIPE, text=True)
    number = _wait_running(f, p)
    assert number is not None
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 143, err
    assert err.strip().splitlines()[-1] == "mincap: terminated"
    states = {t.number: t.state.name for t in _trials(f)}
    assert states[number] == "FAIL" and "RUNNING" not in states.values()


def test_sigkill_mid_group_then_resume(tmp_path, mnist_root):
    """The group's heartbeats let the next search fail the killed trials and re-run their parameters."""
    f = make_study(tmp_path, name="bkill", limit=3000, epochs=6)
    cmd = [sys.executable, "-m", "mincap.cli", "search", str(f), "--trials", "2", "--no-progress",
           "--batch-trials", "2"]
    p = subprocess.Popen(cmd, env=_env(mnist_root), stderr=subprocess.DEVNULL)
    assert _wait_running(f, p) is not None
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed = [t.number for t in _trials(f) if t.state.name == "RUNNING"]
    assert len(killed) == 2
    time.sleep(load_study_file(f).storage.grace_period_s + 2)
    assert main(["search", str(f), "--trials", "2", "--no-progress", "--batch-trials", "2",
                 "--data-dir", str(mnist_root)]) == 0
    after = {t.number: t for t in _trials(f)}
    assert all(after[n].state.name == "FAIL" for n in killed)
    retried = sorted(t.system_attrs.get("failed_trial") for t in after.values() if "failed_trial" in t.system_attrs)
    assert retried == killed
    assert all(t.state.name == "COMPLETE" for t in after.values() if "failed_trial" in t.system_attrs)


def test_ask_group_shares_a_structure():
    import optuna

    from mincap.config.study import StudyConfig

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=3))
    group, pruned = search_batched.ask_group(study, StudyConfig(), (1, 28, 28), 10, 4)
    assert pruned == []
    assert len({t.number for t, *_ in group}) == 4
    specs = [s for _, s, _, _ in group]
    cfgs = [c for _, _, c, _ in group]
    assert batched.group_trials(specs, cfgs) == [[0, 1, 2, 3]]
    assert len({s for s in specs}) > 1  # widths differ
    assert len({c.seed for c in cfgs}) == 4
