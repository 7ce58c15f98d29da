"""Search studies on a slice of real MNIST: resume, SIGKILL, concurrent workers, faults, plain Optuna."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from machines import STUDY

from mincap import search
from mincap.cli import main
from mincap.config.study import load_study_file, parse_study
from mincap.errors import NonFiniteLoss
from mincap.search import run as search_run


def make_study(tmp_path, name="t", target=0.6, limit=500, epochs=1):
    f = tmp_path / f"{name}.toml"
    f.write_text(STUDY.format(name=name, target=target, seeds='["mlp-32"]', limit=limit, epochs=epochs))
    return f


def _env(mnist_root):
    return {**os.environ, "MINCAP_DATA": str(mnist_root), "MINCAP_THREADS": "1"}


def _spawn_interruptible(cmd, env):
    """`mincap search` as a child that a SIGINT stops, its stderr piped as text.

    A shell that starts the test run in the background (`cmd &`) ignores SIGINT, and the child
    would inherit that: the default is restored so Ctrl-C reaches mincap as it does in a terminal.
    """
    return subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _trials(f):
    cfg = load_study_file(f)
    return optuna.load_study(study_name=cfg.study.name, storage=cfg.storage_url).get_trials()


def test_run_then_resume(tmp_path, mnist_root):
    f = make_study(tmp_path)
    assert main(["search", str(f), "--trials", "2", "--no-progress", "--data-dir", str(mnist_root)]) == 0
    first = _trials(f)
    assert [t.state.name for t in first] == ["COMPLETE", "COMPLETE"]
    assert main(["search", str(f), "--trials", "2", "--no-progress", "--data-dir", str(mnist_root)]) == 0
    trials = _trials(f)
    assert len(trials) == 4 and sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in trials)
    # The seed preset was enqueued once, not again on resume; the sampler moved on.
    assert sum(t.params.get("m0") == 32 for t in trials) >= 1
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4
    for t in trials:
        assert t.user_attrs["artifact_bits"] == t.values[0] and t.values[1] == t.user_attrs["val_acc"]
        assert (tmp_path / "t.artifacts").is_dir()


def test_nan_trial_fails_with_reason_and_study_goes_on(tmp_path, mnist_root, monkeypatch):
    from mincap.search import path_trial

    real = path_trial.train_compressed
    calls = []

    def flaky(spec, splits, cfg, comp, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise NonFiniteLoss("loss became nan in epoch 1")
        return real(spec, splits, cfg, comp, **kw)

    monkeypatch.setattr(path_trial, "train_compressed", flaky)
    f = make_study(tmp_path, name="nan")
    assert main(["search", str(f), "--trials", "3", "--no-progress", "--data-dir", str(mnist_root)]) == 0
    trials = _trials(f)
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert "NonFiniteLoss" in trials[1].user_attrs["fail_reason"] and "nan" in trials[1].user_attrs["fail_reason"]


def test_sigkill_mid_trial_then_resume(tmp_path, mnist_root):
    # Long enough trials (6 epochs on 3,000 images) that the kill lands inside one.
    f = make_study(tmp_path, name="kill", limit=3000, epochs=6)
    cmd = [sys.executable, "-m", "mincap.cli", "search", str(f), "--trials", "4", "--no-progress"]
    p = subprocess.Popen(cmd, env=_env(mnist_root), stderr=subprocess.DEVNULL)
    cfg = load_study_file(f)
    deadline = time.time() + 240
    killed = None
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            ts = optuna.load_study(study_name="kill", storage=cfg.storage_url).get_trials()
        except Exception:
            continue
        done = [t for t in ts if t.state.name == "COMPLETE"]
        running = [t for t in ts if t.state.name == "RUNNING" and t.user_attrs.get("progress")]
        if done and running:
            killed = running[0].number
            os.kill(p.pid, signal.SIGKILL)
            break
    p.wait()
    assert killed is not None, "never saw a running trial after a finished one"
    before = {t.number: t.state.name for t in _trials(f)}
    assert before[killed] == "RUNNING"
    time.sleep(cfg.storage.grace_period_s + 2)
    assert main(["search", str(f), "--trials", "1", "--no-progress", "--data-dir", str(mnist_root)]) == 0
    after = {t.number: t for t in _trials(f)}
    for n, state in before.items():
        if state == "COMPLETE":
            assert after[n].state.name == "COMPLETE"  # no finished trial lost
    assert after[killed].state.name == "FAIL"
    retried = [t for t in after.values() if t.system_attrs.get("failed_trial") == killed]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert retried[0].params == after[killed].params
    cfg_study = optuna.load_study(study_name="kill", storage=cfg.storage_url)
    from mincap.results.summary import summarize

    fails = summarize(cfg_study, target=0.6, dataset="mnist", evaluate_test=False)["failures"]
    assert [f["reason"] for f in fails if f["trial"] == killed] == [
        "its process stopped (stale heartbeat); parameters re-queued"]


def _wait_running(f, proc, timeout=240):
    cfg = load_study_file(f)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        try:
            ts = optuna.load_study(study_name=cfg.study.name, storage=cfg.storage_url).get_trials()
        except Exception:
            continue
        running = [t for t in ts if t.state.name == "RUNNING" and t.user_attrs.get("progress")]
        if running:
            return running[0].number
    return None


@pytest.mark.parametrize("sig,code,line,workers", [
    (signal.SIGINT, 130, "mincap: interrupted", 1),
    (signal.SIGTERM, 143, "mincap: terminated", 1),
    (signal.SIGTERM, 143, "mincap: terminated", 2),  # forwarded to the worker processes
])
def test_ctrl_c_or_sigterm_marks_the_running_trial_and_exits_cleanly(tmp_path, mnist_root, sig, code, line, workers):
    # 400 epochs: the trial is still training when the signal comes (at 6 epochs it could end
    # between the poll that saw it running and the signal, which then hit the next trial's draw).
    f = make_study(tmp_path, name="intr", limit=3000, epochs=400)
    cmd = [sys.executable, "-m", "mincap.cli", "search", str(f), "--trials", "3", "--no-progress",
           "--workers", str(workers)]
    p = _spawn_interruptible(cmd, _env(mnist_root))
    number = _wait_running(f, p)
    assert number is not None
    p.send_signal(sig)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == code, err
    assert err.strip().splitlines()[-1] == line
    states = {t.number: t.state.name for t in _trials(f)}
    assert states[number] == "FAIL" and "RUNNING" not in states.values()


def test_two_workers_and_two_commands_share_a_study(tmp_path, mnist_root):
    f = make_study(tmp_path, name="par", limit=300)
    env = _env(mnist_root)
    base = [sys.executable, "-m", "mincap.cli", "search", str(f), "--no-progress"]
    # Two separate commands at once, one of them with two worker processes.
    p1 = subprocess.Popen([*base, "--trials", "3", "--workers", "2"], env=env, stderr=subprocess.PIPE, text=True)
    p2 = subprocess.Popen([*base, "--trials", "2"], env=env, stderr=subprocess.PIPE, text=True)
    err1, err2 = p1.communicate(timeout=400)[1], p2.communicate(timeout=400)[1]
    assert p1.returncode == 0, err1
    assert p2.returncode == 0, err2
    assert "database is locked" not in err1 + err2
    # No trial run twice (two workers popping the same enqueued trial fail at tell()).
    assert "Traceback" not in err1 + err2 and "failed" not in err1 + err2
    trials = _trials(f)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == 5
    assert all(t.state.name == "COMPLETE" for t in trials), [t.system_attrs for t in trials]


def test_worker_processes_give_the_single_process_results(tmp_path, mnist_root):
    """The same fixed trial settings, run by one process and by two worker processes."""
    settings = [{"family": "mlp", "activation": "relu", "mlp_depth": 1, "m0": w, "bits0": b, "bits1": b,
                 "epochs": 1, "batch_size": 32, "lr": 0.01, "weight_decay": 1e-4, "augment": 0,
                 "qat_fraction": 0.5, "prune_ratio": 0.0} for w, b in [(8, 4), (16, 3), (24, 5), (32, 6)]]
    results = {}
    for workers in (1, 2):
        f = make_study(tmp_path, name=f"w{workers}", limit=300)
        f.write_text(f.read_text().replace('seeds = ["mlp-32"]', "seeds = []"))
        cfg = load_study_file(f)
        study = search.open_study(cfg)
        for p in settings:
            study.enqueue_trial(p)
        env = {k: v for k, v in _env(mnist_root).items() if k != "MINCAP_THREADS"}
        cmd = [sys.executable, "-m", "mincap.cli", "search", str(f), "--no-progress", "--trials", "4",
               "--workers", str(workers)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stderr
        results[workers] = {t.number: t for t in _trials(f)}
    one, two = results[1], results[2]
    assert sorted(one) == sorted(two) == [0, 1, 2, 3]
    for n in one:
        # an enqueued trial keeps its number (and so its seed) whichever worker runs it
        assert one[n].params == two[n].params
        assert one[n].state.name == two[n].state.name == "COMPLETE"
        # thread counts differ (2 vs 1 per process): float reduction order only
        assert abs(one[n].values[1] - two[n].values[1]) <= 0.01
        # Measured bit-identical (2026-11-24); 0.5% leaves room for a few codes flipped by float noise.
        assert abs(one[n].values[0] - two[n].values[0]) <= 0.005 * one[n].values[0]


def test_plain_optuna_reads_what_summary_reports(tmp_path, mnist_root, capsys):
    f = make_study(tmp_path, name="plain", target=0.5)
    assert main(["search", str(f), "--trials", "2", "--no-progress", "--data-dir", str(mnist_root)]) == 0
    capsys.readouterr()
    assert main(["summary", str(f), "--json", "--data-dir", str(mnist_root)]) == 0
    s = json.loads(capsys.readouterr().out)
    cfg = load_study_file(f)
    study = optuna.load_study(study_name="plain", storage=cfg.storage_url)
    by_number = {t.number: t for t in study.trials}
    for row in s["pareto_front"]:
        t = by_number[row["trial"]]
        assert t.values == [row["artifact_bits"], row["val_acc"]]
    assert s["n_trials"] == len(study.trials) == 2
    chosen = s["chosen"]
    assert chosen is not None and chosen["val_acc"] >= 0.5
    assert 0.0 < chosen["test_acc"] <= 1.0
    assert study.user_attrs[f"test_acc/{chosen['trial']}"] == chosen["test_acc"]
    r = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "optuna"), "trials", "--study-name", "plain",
         "--storage", cfg.storage_url, "-f", "json"],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert {row["number"] for row in rows} == set(by_number)
    # Export writes the chosen artifact, which `mincap verify` accepts.
    out = tmp_path / "chosen.mincap"
    assert main(["export", str(f), "-o", str(out)]) == 0
    assert out.stat().st_size * 8 == chosen["artifact_bits"]
    # --side B re-encodes the side information and measures the decoded network on validation only.
    capsys.readouterr()
    side = tmp_path / "side4.mincap"
    assert main(["export", str(f), "-o", str(side), "--side", "4"]) == 0
    line = capsys.readouterr().err.strip()
    assert f"{chosen['artifact_bits']:,} bits as stored -> {side.stat().st_size * 8:,} bits (side info at 4 bits)" in line
    assert "validation" in line and "test acc" not in line and side.stat().st_size < out.stat().st_size
    assert main(["export", str(f), "-o", str(tmp_path / "bad.mincap"), "--side", "9"]) == 2
    assert capsys.readouterr().err.strip() == "mincap: error: --side must be in 2..8, got 9"


@pytest.mark.parametrize("total,workers,expected", [(5, 2, [3, 2]), (2, 3, [1, 1, 0]), (None, 2, [None, None])])
def test_split_trials(total, workers, expected):
    assert search_run.split_trials(total, workers) == expected


def test_early_stop_rule():
    # The rule's settings stated here, not read from a study file that may change them.
    cfg = parse_study({"study": {"target": 0.99},
                       "early_stop": {"margin": 0.02, "min_progress": 0.3, "min_feasible": 2, "hopeless": 0.1}})
    rule = search.EarlyStopRule(cfg, [[0.9, 0.95, 0.99, 0.995], [0.85, 0.93, 0.985, 0.992]])
    assert not rule.should_stop(1, 4, 0.1)  # before min_progress (0.3)
    assert rule.should_stop(2, 4, 0.80)  # 0.93 - 0.02 = 0.91 > 0.80
    assert not rule.should_stop(2, 4, 0.92)
    assert not rule.should_stop(4, 4, 0.0)  # the last epoch: nothing left to save
    assert not search.EarlyStopRule(cfg, [[0.9]]).should_stop(3, 4, 0.95)  # too few feasible curves
    # feasible curves compare by their best so far: a dip (0.99 -> 0.80) does not lower the bar
    noisy = search.EarlyStopRule(cfg, [[0.9, 0.99, 0.80, 0.995], [0.9, 0.98, 0.85, 0.992]])
    assert noisy.should_stop(3, 4, 0.90)  # best 0.98 - 0.02 = 0.96 > 0.90
    assert not noisy.should_stop(3, 4, 0.97)
    # hopeless (more than 10 points under the 99% target) stops with no feasible trial at all
    assert search.EarlyStopRule(cfg, []).should_stop(2, 4, 0.88)
    assert not search.EarlyStopRule(cfg, []).should_stop(2, 4, 0.90)
    assert not search.EarlyStopRule(cfg, []).should_stop(1, 4, 0.10)  # before min_progress


def test_corrupt_database_one_line_exit_2(tmp_path, capsys):
    f = make_study(tmp_path, name="bad")
    (tmp_path / "bad.db").write_bytes(b"this is not a database" * 100)
    assert main(["search", str(f), "--trials", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot open" in err[0]
    assert (tmp_path / "bad.db").read_bytes().startswith(b"this is not")  # nothing overwritten


def test_summary_of_missing_study(tmp_path, capsys):
    f = make_study(tmp_path, name="empty")
    assert main(["summary", str(f)]) == 2
    assert "no study named 'empty'" in capsys.readouterr().err


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_seed_preset_reproduces_its_architecture(preset):
    import optuna

    from mincap.nets.models import PRESETS

    cfg = load_study_file("studies/mnist-99.toml")
    trial = optuna.trial.FixedTrial(search.preset_params(preset, cfg))
    spec, train_cfg, comp = search.sample_trial(trial, cfg, (1, 28, 28), 10)
    want = PRESETS[preset]
    assert spec.convs == want.convs and spec.hidden == want.hidden and spec.head == want.head
    assert train_cfg.epochs == (cfg.seed_recipe.epochs or cfg.space.epochs[1])
    assert set(comp.bits_per_layer) == {cfg.seed_recipe.bits or 4}


def _ignore_sigterm_and_sleep(ready):  # pragma: no cover - child process
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.set()
    time.sleep(60)


def test_a_worker_that_does_not_stop_is_killed_after_the_grace_period():
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_ignore_sigterm_and_sleep, args=(ready,))
    p.start()
    assert ready.wait(60)  # the child ignores SIGTERM from now on
    p.terminate()
    t0 = time.monotonic()
    assert search_run.stop_processes([p], grace_s=1.0) == [p.pid]
    assert not p.is_alive() and time.monotonic() - t0 < 15


def test_the_killed_workers_running_trials_are_failed_and_only_theirs():
    import socket

    study = optuna.create_study()
    mine, other, done = study.ask(), study.ask(), study.ask()
    mine.set_user_attr("worker", f"{socket.gethostname()}:4242")
    other.set_user_attr("worker", f"{socket.gethostname()}:4243")
    done.set_user_attr("worker", f"{socket.gethostname()}:4242")
    study.tell(done, 1.0)
    assert search_run.fail_trials_of(study, [4242], "killed") == [mine.number]
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {mine.number: "FAIL", other.number: "RUNNING", done.number: "COMPLETE"}
    assert study.get_trials()[mine.number].user_attrs["fail_reason"] == "killed"


def test_the_trial_budget_counts_networks_not_draws_that_are_none():
    from mincap.errors import MincapError

    def objective(trial):
        if trial.suggest_int("x", 0, 1) == 0 or trial.number < 5:
            trial.set_user_attr("stop_reason", "not a network: spec: conv block 3 leaves no pixels")
            raise optuna.TrialPruned()
        return 1.0

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    budget = search_run.NetworkBudget(3)
    study.optimize(objective, callbacks=[budget])
    states = [t.state.name for t in study.get_trials()]
    assert states.count("COMPLETE") == 3 and states.count("PRUNED") >= 5 and budget.networks == 3

    def never_a_network(trial):
        trial.set_user_attr("stop_reason", "not a network: spec: conv block 1 leaves no pixels")
        raise optuna.TrialPruned()

    never = optuna.create_study()
    with pytest.raises(MincapError, match="4 draws in a row were not networks"):
        never.optimize(never_a_network, callbacks=[search_run.NetworkBudget(3, max_invalid_run=4)])
    assert len(never.get_trials()) == 4
