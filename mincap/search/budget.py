"""When a search run stops, and what it says when none of its trials worked.

Both optimize loops -- `study.optimize` (as callbacks) and the batched loop of
`mincap.search.batched` (calling `record`) -- count finished trials through these:

- `NetworkBudget`: the trial budget counts networks; draws that are not one (pruned
  untrained in 0.1 s) do not use it up;
- `FailureStreak`: a run whose trials fail alike stops after `FAIL_STREAK` of them instead
  of burning its budget (a study that cannot train, e.g. an engine refusing its space);
- `failed_run_error`: a run in which every trial failed ends with one line and a non-zero exit.
"""

from __future__ import annotations

from collections import Counter

from optuna.trial import TrialState

from mincap.errors import MincapError

__all__ = ["FAIL_STREAK", "FailureStreak", "NetworkBudget", "failed_run_error", "not_a_network"]

FAIL_STREAK = 3  # failures in a row, for one reason and with nothing gone well, that stop a run


def not_a_network(trial) -> bool:
    """A draw pruned untrained because it is no network (`mincap.search.space.sample_trial`)."""
    return str(trial.user_attrs.get("stop_reason", "")).startswith("not a network")


def _reason(trial) -> str:
    return str(trial.user_attrs.get("fail_reason") or "no reason recorded")


class NetworkBudget:
    """Stop after `n` trials that drew a network (`n` None: no trial budget).

    Draws that are not a network (unpadded blocks that leave no pixels of a small image) are
    not counted; `max_invalid_run` of them in a row means the space has hardly any network
    for this input, and is an error rather than an endless loop."""

    def __init__(self, n: int | None, max_invalid_run: int = 200) -> None:
        self.n, self.max_invalid_run = n, max_invalid_run
        self.networks = self.invalid_run = 0

    @property
    def spent(self) -> bool:
        return self.n is not None and self.networks >= self.n

    def record(self, trial) -> bool:
        """Count a finished trial; True once the budget is spent."""
        if not_a_network(trial):
            self.invalid_run += 1
            if self.invalid_run >= self.max_invalid_run:
                raise MincapError(
                    f"{self.invalid_run} draws in a row were not networks for this input "
                    f"(the last: trial {trial.number}); narrow [space] conv_depth, pools or padding"
                )
            return False
        self.invalid_run = 0
        self.networks += 1
        return self.spent

    def __call__(self, study, trial) -> None:  # a study.optimize callback
        if self.record(trial):
            study.stop()


class FailureStreak:
    """Stop a run once its last `n` trials failed for one reason and none of its trials went well.

    A trial went well when it is COMPLETE or PRUNED for any reason but being no network (an
    early-stopped or screened-out trial trained fine): one such trial and the run goes on to
    its budget, a failing trial now and then being that trial's problem, not the study's."""

    def __init__(self, n: int = FAIL_STREAK) -> None:
        self.n = n
        self.reason: str | None = None
        self.run = 0
        self.went_well = False

    def record(self, trial) -> bool:
        """Count a finished trial (a FrozenTrial); True when the run should stop."""
        if trial.state == TrialState.FAIL:
            reason = _reason(trial)
            self.run = self.run + 1 if reason == self.reason else 1
            self.reason = reason
        elif not not_a_network(trial):
            self.went_well = True
        return not self.went_well and self.run >= self.n

    def __call__(self, study, trial) -> None:  # a study.optimize callback
        if self.record(trial):
            study.stop()


def failed_run_error(trials) -> MincapError | None:
    """The error of a run whose trials all failed, else None (`trials`: the run's finished ones)."""
    ran = [t for t in trials if not not_a_network(t)]
    if not ran or any(t.state != TrialState.FAIL for t in ran):
        return None
    reason, k = Counter(_reason(t) for t in ran).most_common(1)[0]
    return MincapError(
        f"every trial of this run failed ({len(ran)}); the most common reason ({k} of "
        f"{len(ran)}): {reason}",
        exit_code=1,
    )
