"""Live progress of a search: a rich panel on stderr, refreshed from the study's storage.

It reads the database rather than listening to the objective, so it shows every worker
process of the study (and any other `mincap search` on it) the same way.
"""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from mincap.report import fmt_acc, fmt_bits

__all__ = ["SearchMonitor", "snapshot"]


def snapshot(study, n_before: int, target: float) -> dict:
    """Counts, best feasible size and running trials' progress, from storage."""
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    best = None
    running = []
    durations = []
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
        if t.state.name == "COMPLETE" and t.user_attrs.get("val_acc", 0.0) >= target:
            bits = t.values[0]
            best = bits if best is None or bits < best else best
        if t.state.name == "RUNNING":
            running.append((t.number, t.user_attrs.get("progress")))
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
        for number, prog in snap["running"]:
            if prog:
                t.add_row(f"trial {number}", f"epoch {prog[0]}/{prog[1]}  val {fmt_acc(prog[2])}")
            else:
                t.add_row(f"trial {number}", "starting")
        remaining = []
        if self.timeout_s:
            remaining.append(max(0.0, self.timeout_s - elapsed))
        if self.total and snap["mean_trial_s"]:
            remaining.append(max(0, self.total - done) * snap["mean_trial_s"] / max(1, self.opts.workers))
        rem = f"{min(remaining) / 60:.1f} min" if remaining else "-"
        t.add_row("elapsed / remaining", f"{elapsed / 60:.1f} min / {rem}")
        return t

    def _loop(self, live: Live) -> None:
        from mincap.search import open_study

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
