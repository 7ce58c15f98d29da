import json
from pathlib import Path

from mincap.report import render
from mincap.summary import summary_tables

GOLDEN = Path(__file__).parent / "golden"


def test_summary_tables_golden():
    s = json.loads((GOLDEN / "summary_input.json").read_text())
    assert render(summary_tables(s), width=100) == (GOLDEN / "summary.txt").read_text()


def test_summary_without_chosen_says_so():
    s = json.loads((GOLDEN / "summary_input.json").read_text())
    s["chosen"], s["failures"] = None, []
    text = render(summary_tables(s), width=100)
    assert "no complete trial reached the target" in text and "failed trials" not in text


def test_search_wall_time_is_the_union_of_trial_intervals():
    import datetime as dt

    import optuna

    from mincap.summary import summarize

    t0 = dt.datetime(2026, 1, 1)
    study = optuna.create_study(directions=["minimize", "maximize"])
    # two workers overlapping (0-10 s, 5-20 s), then a second run (30-40 s): 30 s of searching
    for a, b in [(0, 10), (5, 20), (30, 40)]:
        trial = optuna.trial.create_trial(values=[1.0, 0.5], state=optuna.trial.TrialState.COMPLETE,
                                          user_attrs={"val_acc": 0.5, "artifact_bits": 1})
        trial.datetime_start, trial.datetime_complete = t0 + dt.timedelta(seconds=a), t0 + dt.timedelta(seconds=b)
        study.add_trial(trial)
    s = summarize(study, target=0.99, dataset="none", evaluate_test=False)
    assert s["search_wall_s"] == 30.0
    assert s["states"]["COMPLETE"]["time_s"] == 35.0  # trial time counts the overlap twice
