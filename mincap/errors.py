"""User-facing errors: one line, a non-zero exit, no traceback.

Everything a user can get wrong (a missing dataset, a bad study file, a corrupted
artifact) raises `MincapError`; the CLI prints its message on one line and exits
with its code. Bugs stay ordinary exceptions with tracebacks.
"""

from __future__ import annotations

__all__ = ["HoldoutClosed", "MincapError", "NonFiniteLoss", "Terminated"]


class MincapError(Exception):
    """An error caused by input; `str(err)` is the one line shown to the user."""

    def __init__(self, message: str, *, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NonFiniteLoss(RuntimeError):
    """Training diverged (loss became NaN or inf); search marks the trial failed."""


class HoldoutClosed(RuntimeError):
    """Code read the test set where it must not: outside `mincap.evaluation.holdout`, or while the
    holdout is sealed. A bug, not bad input, so it keeps its traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a batch scheduler, systemd) handled like Ctrl-C.

    A `KeyboardInterrupt` so that Optuna marks the running trial FAIL on the way out,
    as it does for Ctrl-C, instead of leaving it RUNNING until its heartbeat goes stale.
    Background jobs of a non-interactive shell ignore SIGINT, so SIGTERM is how they stop.
    """


def raise_terminated(signum, frame) -> None:
    raise Terminated()
