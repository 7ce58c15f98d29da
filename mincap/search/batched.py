"""The batched search loop: trials asked in groups that share a layer structure and train as one computation.

`optimize_batched` replaces `study.optimize` when `mincap search` runs with a group size
above 1 (the default on CUDA, `--batch-trials N` anywhere). Per group:

1. `ask_group` asks up to N trials: the first sampled freely, the others
   with its structural parameters fixed, so the sampler still draws their widths,
   learning rates, bit widths and epochs;
2. a trial the batched engine cannot train as the one-trial path would (`solo_reason`:
   depthwise-separable blocks, a quantizer other than max, bit annealing, or screening
   under `[fidelity] enabled`) runs alone, through the one-trial objective, and is marked
   `unbatched` = the reason; `mincap search` sums those up in one line at the end;
3. `Objective.begin` records each other trial's spec and early-stop rule;
4. `mincap.training.batched.train_many` trains the float + QAT phase of all of them at once
   (each member stops on its own: epochs, early-stop rule or a non-finite loss);
5. per trial, `Objective.train(pretrained=...)` prunes, fine-tunes, runs its compression path,
   exports, decodes and evaluates, and `Objective.finish` records it -- exactly the single-trial
   path's steps from there on -- and the trial is told COMPLETE, PRUNED or FAIL.

Each trial's result equals what it gets alone within float32 noise (tests/training/test_batched.py,
tests/search/test_batched_search.py). `train_time_s` of a batched trial is its group's shared
time plus its own post-processing, so summing it over trials overstates the cost; the
summary's search wall time (union of trial intervals) does not. Trials record their group
as `batch_group` = [first trial number, group size].

Operations match `study.optimize`: the budget counts networks (`NetworkBudget`), a run whose
trials all fail alike stops early (`FailureStreak`), heartbeats for every running trial of the
group (a thread, while the group trains), stale trials of dead workers failed and re-queued
before each group, an exception fails only the trials it concerns (a failure inside
the batched phase fails the group), and Ctrl-C / SIGTERM fail the group's unfinished
trials and propagate.
"""

from __future__ import annotations

import threading
import time
import warnings

import optuna
from optuna.trial import TrialState

from mincap.compression.qat import qat_plan
from mincap.config.study import StudyConfig
from mincap.failures import record_failure, record_interrupt
from mincap.search.budget import FailureStreak, NetworkBudget
from mincap.search.objective import Objective
from mincap.search.space import sample_trial
from mincap.training.batched import batch_refusal, train_many

__all__ = ["ask_group", "heartbeat_interval", "optimize_batched", "solo_reason"]


def _draw(study, trial, cfg: StudyConfig, in_shape, n_classes, structural: list[str] | None = None):
    """`(trial, spec, TrainConfig, CompressConfig)`, or the FrozenTrial of a draw that is not a
    network (`sample_trial` prunes it, e.g. unpadded blocks leaving no pixels): told PRUNED here."""
    try:
        return (trial, *sample_trial(trial, cfg, in_shape, n_classes, structural=structural))
    except optuna.TrialPruned:
        return study.tell(trial, state=TrialState.PRUNED)


def solo_reason(cfg: StudyConfig, trial, spec, comp) -> str | None:
    """Why this drawn trial trains one at a time (`Objective.__call__`), or None if it can batch.

    The engine's own refusals (`batch_refusal`), and screening: a sampled trial of a study
    with `[fidelity] enabled` is screened first, which only the one-trial objective does."""
    if cfg.fidelity.enabled and "seed_preset" not in trial.user_attrs:
        return "[fidelity] screening"
    return batch_refusal(spec, comp)


def ask_group(study, cfg: StudyConfig, in_shape: tuple[int, int, int], n_classes: int,
              k: int) -> tuple[list[tuple], list]:
    """Ask `study` for up to `k` trials that share one layer structure: `([(trial, spec, TrainConfig,
    CompressConfig)], [FrozenTrial of each draw pruned untrained])`.

    The first trial is sampled freely; the other k-1 are enqueued with its structural
    parameters (those `sample_trial` marks structural: family, depths, kernels, batch size, ...) fixed
    and asked, so the sampler draws their widths, learning rates, bit widths and epochs.
    Randomly sampled architectures almost never share a structure; this is how a search
    gets groups worth batching. Another worker on the same storage may take one of the
    enqueued trials; it then simply runs alone there. A first trial that trains one at a
    time (`solo_reason`) is asked alone: copies of it would too.
    """
    # Trials already waiting (seeds, re-queued stale trials, a previous group's leftovers)
    # are asked first whatever their structure -- train_many then splits the group -- and
    # only the rest is filled with copies of the first trial's structure, so a search
    # leaves no enqueued trials of its own behind.
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    structural: list[str] = []
    first = _draw(study, study.ask(), cfg, in_shape, n_classes, structural)
    if not isinstance(first, tuple):  # no structure to share: the caller asks again
        return [], [first]
    if solo_reason(cfg, first[0], first[1], first[3]) is not None:
        return [first], []
    fixed = {name: first[0].params[name] for name in structural}
    for _ in range(k - 1 - max(0, waiting - 1)):
        study.enqueue_trial(fixed)
    drawn = [_draw(study, study.ask(), cfg, in_shape, n_classes) for _ in range(k - 1)]
    pruned = [d for d in drawn if not isinstance(d, tuple)]
    return [first, *(d for d in drawn if isinstance(d, tuple))], pruned


def heartbeat_interval(storage) -> int | None:
    """Seconds between heartbeats, None where the storage keeps none (Journal, or RDB without them)."""
    get = getattr(storage, "get_heartbeat_interval", None)  # Optuna's BaseHeartbeat storages (RDB)
    return get() if get is not None else None


class _Heartbeat:
    """The group's trials not yet told: a heartbeat for each every `heartbeat_interval_s` (RDB storages only)."""

    def __init__(self, storage, trials: list) -> None:
        self.storage, self.ids = storage, [t._trial_id for t in trials]
        self.interval = heartbeat_interval(storage)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True) if self.interval else None

    def _run(self) -> None:
        while True:
            for trial_id in list(self.ids):
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # noqa: BLE001 - a busy database: try again next beat
                    pass
            if self.stop.wait(self.interval):
                return

    def open(self, trials: list) -> list:
        """The trials not yet told."""
        return [t for t in trials if t._trial_id in self.ids]

    def tell(self, study, trial, values=None, state=None):
        """`study.tell` and no more heartbeats for the trial; returns its FrozenTrial."""
        frozen = study.tell(trial, values, state=state)
        self.ids.remove(trial._trial_id)
        return frozen

    def __enter__(self) -> _Heartbeat:
        if self.thread is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


def optimize_batched(study, objective: Objective, *, n_trials: int | None, timeout_s: float | None,
                     group_size: int) -> int:
    """Run trials in groups of up to `group_size` until `n_trials` networks or `timeout_s`; returns
    the networks trained. Trials the engine cannot batch (`solo_reason`) run one at a time in their
    turn, with the attribute `unbatched` = why; draws that are no network do not count
    (`NetworkBudget`), and a run whose trials all fail alike stops early (`FailureStreak`), as in
    `study.optimize`."""
    # study.ask() warns that heartbeats are meant for study.optimize; this loop sends them itself.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    splits = objective.splits
    storage = study._storage  # Optuna's own optimize loop reaches it the same way
    heartbeats = heartbeat_interval(storage) is not None
    budget, streak = NetworkBudget(n_trials), FailureStreak()
    t0 = time.perf_counter()
    stop = False
    while not stop and (timeout_s is None or time.perf_counter() - t0 < timeout_s):
        if heartbeats:
            optuna.storages.fail_stale_trials(study)
        k = group_size if n_trials is None else min(group_size, n_trials - budget.networks)
        group, pruned = ask_group(study, objective.cfg, splits.in_shape, splits.n_classes, k)
        for t in pruned:
            stop = budget.record(t) or stop
        if not group:
            continue
        with _Heartbeat(storage, [g[0] for g in group]) as beat:
            for frozen in _run_group(study, objective, group, beat):
                stop = budget.record(frozen) or stop
                stop = streak.record(frozen) or stop
    return budget.networks


def _run_group(study, objective: Objective, group: list[tuple], beat: _Heartbeat) -> list:
    """Train one asked group -- its unbatchable trials one at a time, the rest batched -- and tell
    every trial; returns their FrozenTrials."""
    trials = [g[0] for g in group]
    told = []
    try:
        batch = []
        for g in group:
            why = solo_reason(objective.cfg, g[0], g[1], g[3])
            if why is None:
                batch.append(g)
                continue
            g[0].set_user_attr("unbatched", why)
            told.append(_run_alone(study, objective, g[0], beat))
        if batch:
            told += _run_batched(study, objective, batch, beat)
    except KeyboardInterrupt as stop:
        for t in beat.open(trials):
            record_interrupt(t, stop)
            beat.tell(study, t, state=TrialState.FAIL)
        raise
    except Exception as err:  # the batched phase failed (e.g. out of GPU memory): its trials too
        for t in beat.open(trials):
            record_failure(t, err)
            told.append(beat.tell(study, t, state=TrialState.FAIL))
    return told


def _run_alone(study, objective: Objective, trial, beat: _Heartbeat):
    """The one-trial objective on an asked trial (it draws the same parameters again: Optuna returns
    a trial's values for names already drawn), told as `study.optimize` would."""
    try:
        values = objective(trial)  # records a failure's or an interrupt's reason itself
    except optuna.TrialPruned:
        return beat.tell(study, trial, state=TrialState.PRUNED)
    except KeyboardInterrupt:
        beat.tell(study, trial, state=TrialState.FAIL)
        raise
    except Exception:
        return beat.tell(study, trial, state=TrialState.FAIL)
    return beat.tell(study, trial, values)


def _run_batched(study, objective: Objective, group: list[tuple], beat: _Heartbeat) -> list:
    """Begin every trial of `group`, train their float + QAT phase as one computation, then finish
    each alone; returns their FrozenTrials."""
    trials = [g[0] for g in group]
    for t in trials:
        t.set_user_attr("batch_group", [trials[0].number, len(trials)])
    runs = [objective.begin(t, spec, cfg) for t, spec, cfg, _ in group]
    trained = train_many(
        [g[1] for g in group], objective.splits, [g[2] for g in group], device=objective.device,
        on_epoch=lambda i, stats, runs=runs: runs[i].on_epoch(stats),
        quant=[qat_plan(spec, cfg, comp) for _, spec, cfg, comp in group],
    )
    told = []
    for (trial, spec, cfg, comp), run, out in zip(group, runs, trained):
        try:
            if out.error is not None:
                raise out.error
            res = None
            if not run.stopped:
                res = objective.train(run, spec, cfg, comp, on_epoch=run.on_epoch, pretrained=out)
            told.append(beat.tell(study, trial, objective.finish(run, res, comp)))
        except optuna.TrialPruned:
            told.append(beat.tell(study, trial, state=TrialState.PRUNED))
        except Exception as err:
            record_failure(trial, err)
            told.append(beat.tell(study, trial, state=TrialState.FAIL))
    return told
