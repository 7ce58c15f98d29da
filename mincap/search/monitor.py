"""Progress of a search, read from the study's storage: a live rich panel on a terminal, plain
lines when stderr is not one (a log file: `nohup mincap search > search.log 2>&1 &`).

It reads the database rather than listening to the objective, so it shows every worker
process of the study (and any other `mincap search` on it) the same way. A RUNNING trial
whose heartbeat is older than the storage's grace period is shown as stale (its worker
died; the next trial start fails and re-queues it), not as running. Each running trial
gets a progress bar over its training epochs; fine-tuning epochs after pruning are shown
as such instead of as epoch 17/14.

Off a terminal, `PlainProgress` writes one flushed line when a trial starts, one every
`plain_every(epochs)` training epochs (5, or a twentieth of a longer run) and at its last
epoch, and one when it ends (state, spec, bits, validation accuracy, why it stopped). The
storage is polled every 2 s; epochs that passed between two polls are written from the
finished trial's curve, so a log holds the same lines however fast the trials run. A one-shot
trial (`mincap.oneshot`: no epochs, a second or so) gets its start and end lines; one that was
fine-tuned shows both scores and which file it kept.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from mincap.evaluation.selection import smallest_reaching
from mincap.report import fmt_acc, fmt_bits, fmt_duration, fmt_target, plain_every, spec_short
from mincap.search.storage import open_study

__all__ = ["PlainProgress", "SearchMonitor", "snapshot"]


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


NOT_A_NETWORK = "not a network"  # the stop reason of a draw pruned untrained (mincap.search.space)


def _clock(when: datetime | None = None) -> str:
    return (when or datetime.now()).strftime("%H:%M:%S")


def _numbers(ns: list[int]) -> str:
    return ", ".join(map(str, ns)) if len(ns) <= 5 else f"{ns[0]}..{ns[-1]}"


class PlainProgress:
    """A search's progress as lines for a log: `update` is given the study's trials at every poll
    and returns the lines that are new since the last one.

    A trial gets a line when it has begun (its spec is recorded), one per `plain_every(epochs)`
    epochs and at its last training epoch, and one when it ends. Trials in `skip` (finished
    before this run) are not reported; draws that were no network (pruned in a tenth of a
    second, sometimes hundreds in a row) share one line per poll.
    """

    def __init__(self, target: float, *, skip=(), every: int | None = None) -> None:
        self.target, self.every = target, every
        self.skip = set(skip)
        self.best: float | None = None
        self._best_known = False
        self._started: set[int] = set()
        self._epoch: dict[int, int] = {}  # the last epoch reported, per trial
        self._stale: set[int] = set()

    def update(self, trials, stale_ids=frozenset()) -> list[str]:
        trials = sorted(trials, key=lambda t: t.number)
        if not self._best_known:  # the best file of the trials before this run
            self._best_known = True
            before = [t for t in trials if t.number in self.skip and t.state.name == "COMPLETE"]
            self._note_best(before)
        out: list[str] = []
        no_network: list[int] = []
        for t in trials:
            if t.number in self.skip or t.state.name == "WAITING":
                continue
            attrs = t.user_attrs
            if t.state.name == "RUNNING":
                if t._trial_id in stale_ids:
                    if t.number not in self._stale:
                        self._stale.add(t.number)
                        out.append(f"{_clock()} trial {t.number} stale: no heartbeat for longer than the grace "
                                   f"period (worker gone?)")
                    continue
                if "spec" in attrs:  # begun: drawn, recorded, training (or screening)
                    out += self._start(t)
                    if attrs.get("progress"):
                        out += self._epochs_live(t, attrs["progress"])
                continue
            self.skip.add(t.number)
            if str(attrs.get("stop_reason", "")).startswith(NOT_A_NETWORK):
                no_network.append(t.number)
                continue
            out += self._start(t)
            out += self._epochs_from_curve(t)
            out.append(self._end(t))
        if no_network:
            out.append(f"{_clock()} {len(no_network)} draw(s) were not a network for this input, pruned "
                       f"untrained (trial(s) {_numbers(no_network)})")
        return out

    def _note_best(self, complete) -> None:
        best = smallest_reaching(complete, self.target, bits=_bits_of, val_acc=lambda t: t.user_attrs.get("val_acc"),
                                 order=lambda t: t.number)
        if best is not None and (self.best is None or _bits_of(best) < self.best):
            self.best = _bits_of(best)

    def _start(self, t) -> list[str]:
        if t.number in self._started:
            return []
        self._started.add(t.number)
        seed = t.user_attrs.get("seed_preset")
        return [f"{_clock(t.datetime_start)} trial {t.number} started  {spec_short(t.user_attrs.get('spec'))}"
                + (f"  (seed preset {seed})" if seed else "")]

    def _due(self, last: int, epoch: int, epochs: int) -> bool:
        """Whether an epoch to report lies in (last, epoch]: every `every`th and the last of
        training, then every `every`th fine-tuning epoch."""
        every = self.every or plain_every(epochs)
        return any((r % every == 0 or r == epochs) if r <= epochs else (r - epochs) % every == 0
                   for r in range(last + 1, epoch + 1))

    def _epoch_line(self, t, epoch: int, epochs: int, val, when: datetime | None = None) -> str:
        self._epoch[t.number] = epoch
        phase = f"epoch {epoch}/{epochs}" if epoch <= epochs else f"fine-tuning epoch {epoch - epochs}"
        return f"{_clock(when)} trial {t.number} {phase}  val {fmt_acc(val)}"

    def _epochs_live(self, t, prog) -> list[str]:
        epoch, epochs, val = prog
        last = self._epoch.get(t.number, 0)
        if epoch > last and self._due(last, epoch, epochs):
            return [self._epoch_line(t, epoch, epochs, val)]
        return []

    def _epochs_from_curve(self, t) -> list[str]:
        """The epochs a finished trial passed since the last poll, from its recorded curve (stamped
        with the trial's end: they were over by then)."""
        curve = t.user_attrs.get("curve") or []
        prog = t.user_attrs.get("progress")
        epochs = prog[1] if prog else len(curve)
        out = []
        for r in range(self._epoch.get(t.number, 0) + 1, len(curve) + 1):
            if self._due(r - 1, r, epochs) or r == len(curve):  # the trial's last epoch, stopped early or not
                out.append(self._epoch_line(t, r, epochs, curve[r - 1], t.datetime_complete))
        return out

    def _end(self, t) -> str:
        a, state = t.user_attrs, t.state.name
        spec = spec_short(a.get("final_spec") or a.get("spec"), a.get("bits_per_layer"))
        head = f"{_clock(t.datetime_complete)} trial {t.number} {state}"
        if state == "COMPLETE":
            bits, val = _bits_of(t), a.get("val_acc")
            reached = val is not None and val >= self.target
            if reached:
                self._note_best([t])
            verdict = (f"reaches the target {fmt_target(self.target)}; best so far {fmt_bits(self.best)} bits"
                       if reached else f"below the target {fmt_target(self.target)}")
            return f"{head}  {fmt_bits(bits)} bits  val {fmt_acc(val)}{_fidelity(a)}  {spec}  ({verdict})"
        reason = a.get("stop_reason") or a.get("fail_reason") or ""
        if a.get("fidelity") == "screen" and a.get("screen"):
            bits, val = a["screen"]
            return f"{head}  screening run: {fmt_bits(bits)} bits  val {fmt_acc(val)}  {spec}  ({reason})"
        val = a.get("early_stop_val_acc")
        if val is None:
            curve = a.get("curve") or []
            val = curve[-1] if curve else None
        shown = f"  val {fmt_acc(val)}" if val is not None else ""
        return f"{head}{shown}  {spec}" + (f"  ({reason})" if reason else "")


def _fidelity(a: dict) -> str:
    """A one-shot trial that was fine-tuned: its inherited score, then which file it kept."""
    if "finetune" not in a or "oneshot" not in a:
        return ""
    kept = "fine-tuned" if a.get("fidelity") == "finetune" else "inherited"
    return (f" (inherited weights {fmt_acc(a['oneshot']['val_acc'])}, fine-tuned "
            f"{fmt_acc(a['finetune']['val_acc'])}: the {kept} file kept)")


def _bits_of(t) -> float | None:
    return t.user_attrs.get("artifact_bits", t.values[0] if t.values else None)


class SearchMonitor:
    """The live panel on a terminal, `PlainProgress` lines otherwise (`enabled=False`: nothing).

    `console`: where to draw and write (default: stderr); whether it is a terminal picks the mode."""

    def __init__(self, cfg, opts, *, total, n_before: int, timeout_s, enabled: bool = True,
                 console: Console | None = None) -> None:
        self.cfg, self.opts, self.total, self.n_before, self.timeout_s = cfg, opts, total, n_before, timeout_s
        self.enabled = enabled
        self.console = console
        self.plain: PlainProgress | None = None  # set when the output is not a terminal
        self._stop = threading.Event()
        self._lock = threading.Lock()
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

    def _open(self):
        return open_study(self.cfg, url=self.opts.storage_url, create=False)

    def _poll_plain(self, study) -> None:
        with self._lock:
            for line in self.plain.update(study.get_trials(deepcopy=False), stale_trial_ids(study)):
                print(line, file=self._out, flush=True)

    def _plain_loop(self) -> None:
        study = None
        while not self._stop.wait(2.0):
            try:
                study = study or self._open()
                self._poll_plain(study)
            except Exception:  # noqa: BLE001 - a busy database must not stop the log
                continue

    def _start_plain(self, console: Console) -> None:
        self._out = console.file
        try:
            trials = self._open().get_trials(deepcopy=False)
        except Exception:  # noqa: BLE001 - no study to read yet: every trial is this run's
            trials = []
        before = {t.number for t in trials if t.state.is_finished()}
        self.plain = PlainProgress(self.cfg.study.target, skip=before)
        budget = [f"{self.total} trial(s)" if self.total else "no trial limit"]
        if self.timeout_s:
            budget.append(f"timeout {fmt_duration(self.timeout_s)}")
        print(f"{_clock()} mincap search: study {self.cfg.study.name}, target {fmt_target(self.cfg.study.target)}, "
              f"{len(before)} trial(s) finished before this run; this run: {', '.join(budget)}",
              file=self._out, flush=True)
        self._thread = threading.Thread(target=self._plain_loop, daemon=True)
        self._thread.start()

    def __enter__(self) -> SearchMonitor:
        if self.enabled:
            console = self.console or Console(stderr=True)
            if not console.is_terminal:
                self._start_plain(console)
                return self
            self._live = Live(Table(), console=console, refresh_per_second=1, transient=False)
            self._live.__enter__()
            self._thread = threading.Thread(target=self._loop, args=(self._live,), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join(timeout=5)
            if self.plain is not None:
                try:  # the trials that ended since the last poll
                    self._poll_plain(self._open())
                except Exception:  # noqa: BLE001 - the command's own error says more than this
                    pass
                return
            self._live.__exit__(*exc)
