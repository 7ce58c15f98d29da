"""Optuna's own tools read mincap studies, on SQLite and on PostgreSQL: optuna-dashboard's HTTP API
(with each trial's feasibility constraint) and the plain `optuna` command line."""

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest
from machines import free_port, trials_of, wait_for, write_study

from mincap.cli import main
from mincap.config.study import load_study_file


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _feasible_front(trials, target):
    """The Pareto front (fewer bits, higher validation accuracy) of the trials reaching the target."""
    ok = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs["val_acc"] >= target]
    return sorted(t.number for t in ok
                  if not any(o.values[0] <= t.values[0] and o.values[1] >= t.values[1] and o.values != t.values
                             for o in ok))


@pytest.fixture(params=["sqlite", "postgresql"])
def study_url(request, tmp_path, mnist_root):
    """A 3-trial mincap study (target 0.8: some trials may miss it) on the storage kind asked for."""
    f = write_study(tmp_path)
    f.write_text(f.read_text().replace("target = 0.6", "target = 0.8"))
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else load_study_file(f).storage_url
    assert main(["search", str(f), "--storage", url, "--trials", "3", "--no-progress",
                 "--data-dir", str(mnist_root)]) == 0
    return url


def test_optuna_dashboard_and_cli_read_the_study(study_url):
    port = free_port()
    exe = Path(sys.executable).parent / "optuna-dashboard"
    p = subprocess.Popen([str(exe), study_url, "--host", "127.0.0.1", "--port", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        studies = wait_for(lambda: _get(f"{base}/api/studies")["study_summaries"], 60)
        assert studies, f"optuna-dashboard did not answer: {p.poll()} {p.stderr.read() if p.poll() else ''}"
        assert [s["study_name"] for s in studies] == ["many"]
        detail = _get(f"{base}/api/studies/{studies[0]['study_id']}")
    finally:
        p.terminate()
        p.wait(timeout=20)
    trials = trials_of(study_url)
    shown = {t["number"]: t for t in detail["trials"]}
    assert sorted(shown) == sorted(t.number for t in trials)
    for t in trials:  # constraint = target - validation accuracy; feasible when <= 0
        assert shown[t.number]["constraints"] == pytest.approx([0.8 - t.user_attrs["val_acc"]])
    # Optuna's best_trials reads the same constraint: the feasible Pareto front.
    best = optuna.load_study(study_name="many", storage=study_url).best_trials
    assert sorted(t.number for t in best) == _feasible_front(trials, 0.8)
    # The plain `optuna` command line.
    exe = Path(sys.executable).parent / "optuna"
    out = subprocess.run([str(exe), "trials", "--storage", study_url, "--study-name", "many", "-f", "json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    trials = trials_of(study_url)
    assert sorted(r["number"] for r in listed) == sorted(t.number for t in trials)
    assert {r["state"] for r in listed} == {t.state.name for t in trials}
    out = subprocess.run([str(exe), "best-trials", "--storage", study_url, "--study-name", "many", "-f", "json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sorted(r["number"] for r in json.loads(out.stdout)) == _feasible_front(trials, 0.8)
