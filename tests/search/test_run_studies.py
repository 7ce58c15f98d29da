"""bench/run_studies.py: the plan resumes a study with what is left of its budget, skips a summarized one."""

import datetime as dt
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest

from mincap.config.study import load_study_file
from mincap.search.storage import open_study

BENCH = Path(__file__).resolve().parents[2] / "bench" / "run_studies.py"
spec = importlib.util.spec_from_file_location("run_studies", BENCH)
run_studies = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_studies)


def test_plan_budget_left_and_skip(tmp_path, monkeypatch):
    repo = Path(run_studies.REPO)
    for f in run_studies.STUDIES[:2]:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / f, tmp_path / f)
    monkeypatch.setattr(run_studies, "REPO", tmp_path)
    first, second = run_studies.STUDIES[:2]
    cfg = load_study_file(tmp_path / first)
    study = open_study(cfg)  # 10 minutes of trials already run, in two overlapping intervals
    start = dt.datetime(2026, 1, 1)
    for a, b in ((0, 6), (4, 10)):
        t = optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, values=[5000.0, 0.5],
                                      user_attrs={"artifact_bits": 5000, "val_acc": 0.5})
        t.datetime_start, t.datetime_complete = start + dt.timedelta(minutes=a), start + dt.timedelta(minutes=b)
        study.add_trial(t)
    (tmp_path / second).with_name(Path(second).stem + ".summary.json").write_text("{}")
    rows = run_studies.plan([first, second])
    assert [r["file"] for r in rows] == [first, second]
    assert rows[0]["used_s"] == 600.0 and rows[0]["left_s"] == cfg.budget.timeout_s - 600.0 and not rows[0]["summary"]
    assert rows[1]["summary"] and rows[1]["used_s"] == 0.0
    assert len(run_studies.STUDIES) == 9 + 7 + 7 + 10 and all((repo / f).is_file() for f in run_studies.STUDIES)
    assert run_studies.plan([first, second], ["ladder"]) == []  # --group: only that group's studies
    assert {r["group"] for r in rows} == {"capacity"} and run_studies.SUMMARY_ARGS["ladder"] == ["--replicates", "3"]
    assert [r["file"] for r in run_studies.plan([first, second], ["capacity"])] == [first, second]
    # every locality3 file is in its group, and its cells get no replicates
    assert sorted(run_studies.GROUPS["locality3"]) == sorted(str(p.relative_to(repo)) for p in (repo / "studies" / "locality3").glob("*.toml"))
    assert "locality3" not in run_studies.SUMMARY_ARGS


def test_entropy_record_writes_once_and_never_half_a_file(tmp_path, monkeypatch):
    calls = []

    def fake(*args, capture=False):
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, stdout=out[0])

    (tmp_path / "studies" / "info").mkdir(parents=True)
    monkeypatch.setattr(run_studies, "REPO", tmp_path)
    monkeypatch.setattr(run_studies, "mincap", fake)
    out = ['not json: the estimator failed']
    with pytest.raises(json.JSONDecodeError):
        run_studies.entropy_record("digits", "prequential-switch")
    assert not list((tmp_path / "studies" / "info").iterdir())
    out = ['[{"dataset": "digits", "estimator": "prequential-switch", "bits_total": 123.0}]']
    p = run_studies.entropy_record("digits", "prequential-switch")
    assert p.name == "entropy-digits-prequential-switch.json" and json.loads(p.read_text())[0]["bits_total"] == 123.0
    run_studies.entropy_record("digits", "prequential-switch")  # already there: not computed again
    assert calls == [("entropy", "digits", "--estimator", "prequential-switch", "--json")] * 2
    assert run_studies.ENTROPY == {"ladder": "prequential-switch", "ladder3": "prequential-switch"}


def test_the_report_draws_ladder3_only_once_every_rung_has_run(tmp_path, monkeypatch):
    monkeypatch.setattr(run_studies, "REPO", tmp_path)
    for f in run_studies.GROUPS["ladder3"]:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
    summaries = [(tmp_path / f).with_name(Path(f).stem + ".summary.json") for f in run_studies.GROUPS["ladder3"]]
    for p in summaries[:-1]:
        p.write_text("{}")
    args = run_studies.report_args()
    assert "studies/ladder2" in args and "studies/ladder3" not in args  # one rung short: the old ladder
    summaries[-1].write_text("{}")
    args = run_studies.report_args()
    assert "studies/ladder3" in args and "studies/ladder2" not in args
