"""mincap.results.summary: a study's summary as data and as terminal tables."""

import datetime as dt
import json
from pathlib import Path

import optuna

from mincap.report import render
from mincap.results.summary import chosen_trial, summarize, summary_tables

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def test_summary_tables_golden():
    s = json.loads((GOLDEN / "summary_input.json").read_text())
    assert render(summary_tables(s), width=100) == (GOLDEN / "summary.txt").read_text()


def test_summary_without_chosen_says_so():
    s = json.loads((GOLDEN / "summary_input.json").read_text())
    s["chosen"], s["failures"] = None, []
    text = render(summary_tables(s), width=100)
    assert "no complete trial reached the target" in text and "failed trials" not in text


def _study(trials):
    """An in-memory study of COMPLETE trials: (start s, end s, artifact bits, val acc)."""
    t0 = dt.datetime(2026, 1, 1)
    study = optuna.create_study(directions=["minimize", "maximize"])
    for a, b, bits, val in trials:
        trial = optuna.trial.create_trial(values=[bits, val], state=optuna.trial.TrialState.COMPLETE,
                                          user_attrs={"val_acc": val, "artifact_bits": bits})
        trial.datetime_start, trial.datetime_complete = t0 + dt.timedelta(seconds=a), t0 + dt.timedelta(seconds=b)
        study.add_trial(trial)
    return study


def test_search_wall_time_is_the_union_of_trial_intervals():
    # two workers overlapping (0-10 s, 5-20 s), then a second run (30-40 s): 30 s of searching
    study = _study([(0, 10, 1, 0.5), (5, 20, 1, 0.5), (30, 40, 1, 0.5)])
    s = summarize(study, target=0.99, dataset="none", evaluate_test=False)
    assert s["search_wall_s"] == 30.0
    assert s["states"]["COMPLETE"]["time_s"] == 35.0  # trial time counts the overlap twice


def test_chosen_is_the_smallest_reaching_the_target_on_validation():
    study = _study([(0, 1, 500, 0.98), (1, 2, 900, 0.991), (2, 3, 700, 0.990), (3, 4, 700, 0.995)])
    assert chosen_trial(study, 0.99).number == 3  # 500 misses; of the two at 700 bits, higher val
    s = summarize(study, target=0.99, dataset="none", evaluate_test=False)
    assert [r["trial"] for r in s["pareto_front"]] == [0, 3]
    assert s["chosen"]["trial"] == 3 and s["chosen"]["test_acc"] is None
    assert chosen_trial(study, 0.999) is None


def test_pruned_and_interrupted_trials_show_their_reason():
    """PRUNED trials show `stop_reason` (old studies: the early-stop attributes); FAIL ones `fail_reason`."""
    study = _study([])
    deadline = "the search's --timeout deadline passed during epoch 3/10"
    for attrs in ({"stop_reason": deadline},
                  {"stop_reason": "early stop at epoch 5", "early_stop_val_acc": 0.4, "curve": [0.1] * 5},
                  {"early_stop_val_acc": 0.3352, "curve": [0.7, 0.8, 0.82, 0.3352]}):  # before stop_reason
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs=attrs))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,
                                              user_attrs={"fail_reason": "interrupted by the user (SIGTERM)"}))
    s = summarize(study, target=0.99, dataset="none", evaluate_test=False)
    assert s["pruned"] == [{"trial": 0, "reason": deadline}, {"trial": 1, "reason": "early stop at epoch 5"},
                           {"trial": 2, "reason": "early stop at epoch 4 (val 33.52%)"}]
    assert s["failures"] == [{"trial": 3, "reason": "interrupted by the user (SIGTERM)"}]
    text = render(summary_tables(s), width=200)
    pruned = text[text.index("pruned trials"):text.index("chosen network")]
    for line in ("│     0 │ " + deadline, "│     1 │ early stop at epoch 5 ", "│     2 │ early stop at epoch 4 (val 33.52%)"):
        assert line in pruned, line
    assert "│     3 │ interrupted by the user (SIGTERM)" in text[text.index("failed trials"):]


def test_a_trial_failed_as_stale_a_day_later_counts_at_most_the_longest_trial():
    from mincap.search.storage import search_wall_s

    study = _study([(0, 10, 1, 0.5), (10, 25, 1, 0.5)])
    killed = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL)
    t0 = dt.datetime(2026, 1, 1)
    killed.datetime_start, killed.datetime_complete = t0 + dt.timedelta(seconds=25), t0 + dt.timedelta(days=1)
    study.add_trial(killed)
    assert search_wall_s(study.get_trials()) == 25.0 + 15.0  # capped at the 15 s of the longest trial


def test_a_stale_trial_ends_at_its_last_heartbeat(tmp_path):
    from mincap.search.storage import last_heartbeats, search_wall_s, trial_spans

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=60)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    (tid, beat), = last_heartbeats(study._storage).items()
    assert tid == trial._trial_id and abs((beat - dt.datetime.now()).total_seconds()) < 3600 * 24
    assert last_heartbeats(optuna.create_study()._storage) == {}  # in memory: no heartbeats, no error

    done = _study([(0, 100, 1, 0.5)])
    killed = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL)
    t0 = dt.datetime(2026, 1, 1)
    killed.datetime_start, killed.datetime_complete = t0 + dt.timedelta(seconds=200), t0 + dt.timedelta(days=1)
    done.add_trial(killed)
    trials = done.get_trials()
    beats = {trials[1]._trial_id: t0 + dt.timedelta(seconds=230)}
    assert trial_spans(trials, beats)[1] == (t0 + dt.timedelta(seconds=200), t0 + dt.timedelta(seconds=230))
    assert search_wall_s(trials, beats) == 130.0 and search_wall_s(trials) == 200.0  # else the cap: 100 s
