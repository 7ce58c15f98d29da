"""A run in which every trial failed: one line, a non-zero exit, no budget burnt on one failure."""

import pytest
from optuna.trial import TrialState, create_trial
from test_search import _trials, make_study

from mincap.cli import main
from mincap.search import path_trial
from mincap.search.budget import FAIL_STREAK, FailureStreak, failed_run_error


def _broken(*args, **kwargs):
    raise RuntimeError("boom")


def _failed(reason: str):
    return create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": reason})


def _pruned(stop_reason: str):
    return create_trial(state=TrialState.PRUNED, user_attrs={"stop_reason": stop_reason})


def test_the_streak_needs_one_reason_in_a_row_and_nothing_gone_well():
    streak = FailureStreak()
    outcomes = [
        streak.record(t)
        for t in [
            _failed("a"),
            _failed("a"),
            _failed("b"),
            _pruned("not a network: x"),
            _failed("b"),
            _failed("b"),
        ]
    ]
    assert outcomes == [False, False, False, False, False, True]
    after_a_good_one = FailureStreak()
    assert after_a_good_one.record(_pruned("early stop at epoch 2")) is False
    assert not any(after_a_good_one.record(_failed("a")) for _ in range(2 * FAIL_STREAK))


def test_the_all_failed_error_names_the_most_common_reason():
    assert failed_run_error([]) is None
    assert (
        failed_run_error([_failed("a"), create_trial(state=TrialState.COMPLETE, values=[1.0])])
        is None
    )
    err = failed_run_error(
        [
            _failed("RuntimeError: x"),
            _failed("RuntimeError: y"),
            _failed("RuntimeError: x"),
            _pruned("not a network: z"),
        ]
    )
    assert err.exit_code == 1
    assert (
        str(err)
        == "every trial of this run failed (3); the most common reason (2 of 3): RuntimeError: x"
    )


@pytest.mark.parametrize(
    "batch_trials,most", [(1, 3), (2, 4)]
)  # the batched loop stops between groups
def test_a_run_that_fails_alike_stops_early_and_exits_non_zero(
    tmp_path, mnist_root, monkeypatch, capsys, batch_trials, most
):
    monkeypatch.setattr(path_trial, "train_compressed", _broken)
    f = make_study(tmp_path, name=f"broken{batch_trials}")
    code = main(
        [
            "search",
            str(f),
            "--trials",
            "10",
            "--batch-trials",
            str(batch_trials),
            "--no-progress",
            "--data-dir",
            str(mnist_root),
        ]
    )
    trials = _trials(f)
    assert code == 1
    assert FAIL_STREAK <= len(trials) <= most and all(t.state.name == "FAIL" for t in trials)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        f"mincap: error: every trial of this run failed ({len(trials)}); the most common reason "
        f"({len(trials)} of {len(trials)}): RuntimeError: boom"
    )


def test_an_old_failure_does_not_fail_a_run_that_works(tmp_path, mnist_root, monkeypatch):
    """Only this run's trials count: a study with failures behind it resumes and exits 0."""
    f = make_study(tmp_path, name="resumed")
    monkeypatch.setattr(path_trial, "train_compressed", _broken)
    assert (
        main(["search", str(f), "--trials", "1", "--no-progress", "--data-dir", str(mnist_root)])
        == 1
    )
    monkeypatch.undo()
    assert (
        main(["search", str(f), "--trials", "1", "--no-progress", "--data-dir", str(mnist_root)])
        == 0
    )
    assert [t.state.name for t in _trials(f)] == ["FAIL", "COMPLETE"]
