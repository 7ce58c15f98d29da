"""bench/search_yield.py: the JSON keys and figures, on constructed trials and on a tiny real run."""

import datetime as dt
import importlib.util
import json
from pathlib import Path

import optuna
from test_search import make_study

BENCH = Path(__file__).resolve().parents[2] / "bench" / "search_yield.py"
spec = importlib.util.spec_from_file_location("search_yield", BENCH)
search_yield = importlib.util.module_from_spec(spec)
spec.loader.exec_module(search_yield)

KEYS = {"time_to_first_feasible_s", "smallest_feasible_bits", "trials_by_state", "budget_s", "machine"}


def _trial(state, start, minutes, bits=None, val=None):
    attrs = {} if bits is None else {"artifact_bits": bits, "val_acc": val}
    t = optuna.trial.create_trial(state=state, values=[float(bits), val] if state.name == "COMPLETE" else None,
                                  user_attrs=attrs)
    t.datetime_start = start
    t.datetime_complete = start + dt.timedelta(minutes=minutes)
    return t


def test_report_figures_from_constructed_trials():
    S = optuna.trial.TrialState
    start = dt.datetime(2026, 1, 1)
    trials = [_trial(S.COMPLETE, start, 10, 30000, 0.985),  # not feasible
              _trial(S.COMPLETE, start, 20, 20000, 0.991),
              _trial(S.PRUNED, start, 25),
              _trial(S.COMPLETE, start, 40, 9000, 0.992),
              _trial(S.COMPLETE, start, 50, 8000, 0.98)]  # smaller but not feasible
    r = search_yield.yield_report(trials, 0.99, start, 3600, 3600)
    assert r["time_to_first_feasible_s"] == 20 * 60
    assert r["smallest_feasible_bits"] == {"15": None, "30": 20000, "60": 9000}
    assert r["trials_by_state"] == {"COMPLETE": 4, "PRUNED": 1} and r["trials_per_hour"] == 5.0
    assert list(search_yield.yield_report([], 0.99, start, 120, 120)["smallest_feasible_bits"]) == ["0.5", "1", "2"]
    assert search_yield.yield_report([], 0.99, start, 120, 120)["time_to_first_feasible_s"] is None
    for t, why in zip(trials[1:4], ["promoted: 0 of 5 ...", "screening val 0.4 below min_val_acc 0.9",
                                    "stopped: 4 of 5 ..."]):
        t.user_attrs["screen_decision"] = why
    assert search_yield.screen_decisions(trials) == {"promoted": 1, "stopped_rank": 1, "stopped_floor": 1}


def test_tiny_run_writes_the_json(tmp_path, mnist_root):
    f = make_study(tmp_path, name="yield", target=0.5)
    out = tmp_path / "res" / "yield.json"
    assert search_yield.main(["--budget-min", "0.2", "--study", str(f), "--out", str(out), "--every-s", "2",
                              "--data-dir", str(mnist_root)]) == 0
    r = json.loads(out.read_text())
    assert KEYS <= set(r) and r["budget_s"] == 12
    assert list(r["smallest_feasible_bits"]) == ["0.05", "0.1", "0.2"]
    assert r["trials_by_state"].get("COMPLETE", 0) >= 1 and r["machine"]["cpus"] >= 1
    assert r["time_to_first_feasible_s"] is not None and 0 < r["time_to_first_feasible_s"] <= 12 + 30
    assert r["smallest_feasible_bits"]["0.2"] is not None
    assert not (tmp_path / "yield.db").exists()  # the study's own storage untouched: a temporary copy ran


def test_the_ab_runs_both_arms_from_empty_caches_and_reports_each(tmp_path, mnist_root):
    from test_oneshot_search import make_study as make_oneshot_study

    per_trial = make_study(tmp_path, name="pt", target=0.5)
    oneshot = make_oneshot_study(tmp_path, name="os", target=0.15, limit=500)
    out, keep = tmp_path / "ab.json", tmp_path / "keep"
    assert search_yield.main(["--ab", "--concurrent", "--budget-min", "0.4", "--study", str(per_trial),
                              "--oneshot-study", str(oneshot), "--out", str(out), "--every-s", "5",
                              "--data-dir", str(mnist_root), "--keep", str(keep)]) == 0
    r = json.loads(out.read_text())
    arms = r["arms"]
    assert set(arms) == {"per_trial", "oneshot"} and r["mode"].startswith("concurrent")
    for arm in arms.values():
        assert {"candidates_per_hour", "time_to_first_feasible_s", "smallest_feasible_bits"} <= set(arm)
        assert list(arm["smallest_feasible_bits"]) == ["0.1", "0.2", "0.4"] and arm["isolated_cache"]
    shot = arms["oneshot"]
    assert shot["oneshot"] and shot["candidates"] >= 1 and 0 < shot["supernet_s"] < 24 + 30
    # an empty cache: the supernet was trained inside the arm's budget and kept with its database
    assert list((keep / "oneshot").rglob("*-supernet-*.pt")) and (keep / "oneshot" / "os.db").is_file()
    assert (keep / "per_trial" / "pt.db").is_file() and not (tmp_path / "os.db").exists()
    want = round(shot["candidates_per_hour"] / arms["per_trial"]["candidates_per_hour"], 1) \
        if arms["per_trial"]["candidates_per_hour"] else None
    assert r["candidates_per_hour_ratio"] == want
