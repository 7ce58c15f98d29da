"""How a trial that fails or is stopped by the user is recorded. Every one-trial objective
(the per-trial `mincap.search.objective`, the batched `mincap.search.batched`, the one-shot
`mincap.oneshot.trial`) records its faults here.

A failed trial keeps its reason as the `fail_reason` attribute (Optuna 5 stores none); Ctrl-C or
SIGTERM fails the running trial with "interrupted by the user (SIGINT)" / "(SIGTERM)", prints one
line for it, and Optuna's own warning with its stack is dropped. A module of its own, below both
`mincap.search` and `mincap.oneshot`, so that neither package imports the other.
"""

from __future__ import annotations

import contextlib
import logging
import sys

import optuna

from mincap.errors import Terminated

__all__ = ["failures_recorded", "interrupt_reason", "record_failure", "record_interrupt"]


_INTERRUPTED: set[int] = set()  # trial numbers this process reported as interrupted


class _NoInterruptTracebacks(logging.Filter):
    """Drop Optuna's "Trial N failed ... KeyboardInterrupt()" warning with its stack, and its
    "Trial N failed with value None": a stop asked for by the user is reported by
    `record_interrupt` in one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info
        if exc and exc[0] is not None and issubclass(exc[0], KeyboardInterrupt):
            return False
        msg = record.getMessage()
        return not any(msg.startswith(f"Trial {n} failed") for n in _INTERRUPTED)


# Optuna's optimize loop logs failed trials on this logger (optuna/study/_optimize.py).
logging.getLogger("optuna.study._optimize").addFilter(_NoInterruptTracebacks())


def interrupt_reason(stop: KeyboardInterrupt) -> str:
    return f"interrupted by the user ({'SIGTERM' if isinstance(stop, Terminated) else 'SIGINT'})"


def record_interrupt(trial, stop: KeyboardInterrupt) -> None:
    """Mark why `trial` stops and say so in one line (the trial is then told FAIL)."""
    reason = interrupt_reason(stop)
    _INTERRUPTED.add(trial.number)
    try:
        trial.set_user_attr("fail_reason", reason)
    except BaseException:  # noqa: BLE001 - a second Ctrl-C or a busy database: the line still goes out
        pass
    print(f"mincap: trial {trial.number} {reason}: marked FAIL", file=sys.stderr, flush=True)


def record_failure(trial, err: BaseException) -> None:
    # Optuna 5 keeps no failure reason in storage; record it where summaries can read it.
    trial.set_user_attr("fail_reason", f"{type(err).__name__}: {err}"[:500])


@contextlib.contextmanager
def failures_recorded(trial):
    """Around one trial's objective: a pruned trial passes through, an interrupted or failed one
    has its reason recorded (`record_interrupt`, `record_failure`) before the error goes on to
    Optuna, which tells it FAIL. Every one-trial objective (per-trial, one-shot) runs inside it."""
    try:
        yield
    except optuna.TrialPruned:
        raise
    except KeyboardInterrupt as stop:
        record_interrupt(trial, stop)
        raise
    except Exception as err:
        record_failure(trial, err)
        raise
