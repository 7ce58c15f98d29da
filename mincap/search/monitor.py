"""Live progress of a search: a rich panel on stderr, refreshed from the study's storage.

It reads the database rather than listening to the objective, so it shows every worker
process of the study (and any other `mincap search` on it) the same way. A RUNNING trial
whose heartbeat is older than the storage's grace period is shown as stale (its worker
died; the next trial start fails and re-queues it), not as running. Each running trial
gets a progress bar over its training epochs; fine-tuning epochs after pruning are shown
as such instead of as epoch 17/14.
"""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from mincap.evaluation.selection import smallest_reaching
from mincap.report import fmt_acc, fmt_bits
from mincap.search.storage import open_study

__all__ = ["SearchMonitor", "snapshot"]


def stale_trial_ids(study) -> set[int]:
    """Ids of RUNNING trials whose heartbeat is older than the grace period (RDB storages only)."""
    get = getattr(study._storage, "_get_stale_trial_ids", None)  # Optuna's RDBStorage; no public API
    if get is None or not study._storage.get_heartbeat_interval():
        return set()
    return set(get(study._study_id))


def trial_progress(prog: list | None) -> tuple[str, float | None]:
    """(text, fraction of training done) of a running trial's `progress` attribute [epoch, epochs, val]."""
    if not prog:
        return "starting", None
    epoch, epochs, val = prog
    if epoch == 0:
        return f"training: epoch 1/{epochs} under way", 0.0
    if epoch > epochs:  # pruning / sparsity fine-tuning after the main run
        return f"fine-tuning epoch {epoch - epochs}  val {fmt_acc(val)}", 1.0
    return f"epoch {epoch}/{epochs}  val {fmt_acc(val)}", epoch / epochs


def snapshot(study, n_before: int, target: float) -> dict:
    """Counts, best feasible size and running trials' progress, from storage."""
    trials = study.get_trials(deepcopy=False)
    stale = stale_trial_ids(study)
    states: dict[str, int] = {}
    running = []
    durations = []
    chosen = smallest_reaching([t for t in trials if t.state.name == "COMPLETE"], target,
                               bits=lambda t: t.values[0], val_acc=lambda t: t.user_attrs.get("val_acc"),
                               order=lambda t: t.number)
    best = chosen.values[0] if chosen is not None else None
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
        if t.state.name == "RUNNING":
            running.append((t.number, t.user_attrs.get("progress"), t._trial_id in stale))
        if t.datetime_complete and t.datetime_start and t.number >= n_before:
            durations.append((t.datetime_complete - t.datetime_start).total_seconds())
    finished = sum(v for k, v in states.items() if k not in ("RUNNING", "WAITING"))
    return {"states": states, "best_bits": best, "running": running, "finished": finished,
            "mean_trial_s": sum(durations) / len(durations) if durations else None, "n_done": len(durations)}


class SearchMonitor:
    def __init__(self, cfg, opts, *, total, n_before: int, timeout_s, enabled: bool = True) -> None:
        self.cfg, self.opts, self.total, self.n_before, self.timeout_s = cfg, opts, total, n_before, timeout_s
        self.enabled = enabled
        self._stop = threading.Event()
        self._t0 = time.perf_counter()

    def _table(self, snap: dict) -> Table:
        elapsed = time.perf_counter() - self._t0
        done = snap["n_done"]
        t = Table(title=f"mincap search: {self.cfg.study.name} (target {fmt_acc(self.cfg.study.target)})",
                  show_header=False)
        t.add_column("k")
        t.add_column("v")
        budget = f"{done} / {self.total}" if self.total else f"{done}"
        t.add_row("trials this run", budget)
        t.add_row("all trials", ", ".join(f"{k.lower()} {v}" for k, v in sorted(snap["states"].items())) or "-")
        t.add_row("best feasible bits", fmt_bits(snap["best_bits"]))
        n_live = 0
        for number, prog, stale in snap["running"]:
            text, frac = trial_progress(prog)
            if stale:
                t.add_row(f"trial {number}", Text(f"stale: no heartbeat (worker gone?), last {text}", style="yellow"))
                continue
            n_live += 1
            bar = ProgressBar(total=1.0, completed=frac or 0.0, width=20)
            row = Table.grid(padding=(0, 1))
            row.add_row(bar, text)
            t.add_row(f"trial {number}", row)
        t.add_row("elapsed / remaining", f"{elapsed / 60:.1f} min / {self._remaining(elapsed, snap, n_live)}")
        return t

    def _remaining(self, elapsed: float, snap: dict, n_live: int) -> str:
        """Never 0 while work goes on: past the deadline, running trials stop at their next epoch."""
        left = []
        if self.timeout_s:
            if elapsed >= self.timeout_s:
                return "deadline reached, stopping running trials" if n_live else "deadline reached"
            left.append(self.timeout_s - elapsed)
        if self.total and snap["mean_trial_s"]:
            left.append(max(0, self.total - snap["n_done"]) * snap["mean_trial_s"] / max(1, self.opts.workers))
        if not left:
            return "-"
        if min(left) < 30 and n_live:  # the estimate ran out, but a trial is still training
            return "finishing the running trial(s)"
        return f"{min(left) / 60:.1f} min"

    def _loop(self, live: Live) -> None:
        study = None
        while not self._stop.wait(2.0):
            try:
                study = study or open_study(self.cfg, url=self.opts.storage_url, create=False)
                live.update(self._table(snapshot(study, self.n_before, self.cfg.study.target)))
            except Exception:  # noqa: BLE001 - a busy database must not kill the display
                continue

    def __enter__(self) -> SearchMonitor:
        if self.enabled:
            self._live = Live(Table(), console=Console(stderr=True), refresh_per_second=1, transient=False)
            self._live.__enter__()
            self._thread = threading.Thread(target=self._loop, args=(self._live,), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join(timeout=5)
            self._live.__exit__(*exc)
