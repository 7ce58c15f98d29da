"""Running a search: worker processes, the optimize loop, seeds, signals and the live display.

`run_search` opens (or resumes) the study, enqueues the seed presets, and runs
`SearchOptions.workers` processes -- each `run_worker`, a `study.optimize` loop or, with
`--batch-trials`, the batched loop of `mincap.search.batched` -- under a live
`SearchMonitor`. Ctrl-C marks the running trials FAIL and exits 130; SIGTERM does the
same (exit 143) and is passed on to the worker processes. Trials left RUNNING by a worker
that died (kill -9, a lost machine) are failed and re-queued when a search starts, once
their heartbeat is older than the grace period. With a timeout, the deadline is one wall
clock time shared by every worker: trials still running then stop at their next epoch.
The trial budget counts networks, a run whose trials all fail alike stops after
`FAIL_STREAK` of them, and a run in which every trial failed ends with one line and exit
code 1 (`mincap.search.budget`).

A one-shot study (`[oneshot] enabled`, `mincap.search.oneshot_run`) gets its supernet first
(trained, resumed or loaded, within the same deadline), then the same workers and optimize loop
run `OneshotObjective` instead of `Objective`; seeds are enqueued only with `[oneshot] seeds`.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import socket
import sys
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, replace

import optuna

from mincap import data
from mincap.config.study import StudyConfig
from mincap.errors import MincapError, Terminated, raise_terminated
from mincap.search.batched import optimize_batched
from mincap.search.budget import FailureStreak, NetworkBudget, failed_run_error
from mincap.search.monitor import SearchMonitor
from mincap.search.objective import Objective
from mincap.search.oneshot_run import (
    load_splits,
    oneshot_objective,
    oneshot_seed_params,
    prepare_supernet,
    record_supernet,
)
from mincap.search.server import lost_server_error
from mincap.search.space import preset_params
from mincap.search.storage import artifact_store, open_study
from mincap.training.engine import available_cores, pick_device, setup_threads

__all__ = ["GPU_GROUP", "STOP_GRACE_S", "NetworkBudget", "SearchOptions", "enqueue_seeds", "fail_trials_of", "group_size",
           "run_search", "run_worker", "split_trials", "stop_processes", "unbatchable_study"]

GPU_GROUP = 8  # trials per batched group on CUDA when not given


@dataclass(frozen=True)
class SearchOptions:
    """What the command line may override for one `mincap search` invocation."""

    trials: int | None = None
    timeout_s: float | None = None
    storage_url: str | None = None
    workers: int = 1
    device: str = "auto"
    batch_trials: int = 0  # trials trained as one batched computation; 0 = auto (see group_size)
    data_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise MincapError("--workers must be >= 1")
        if self.batch_trials < 0:
            raise MincapError("--batch-trials must be >= 0 (0 = automatic)")


def enqueue_seeds(study, cfg: StudyConfig, params=preset_params) -> None:
    """Enqueue each seed preset once per study, also one added to the file later.

    The names already enqueued are kept in the study (`seeded`), so a seed trial that
    failed is not enqueued again on every resume; studies from before that list held
    `True` and fall back on `skip_if_exists` (a preset whose trial already ran is skipped).
    `params(name, cfg)`: the trial's parameters (a one-shot study's: `oneshot_seed_params`).
    """
    seeded = study.user_attrs.get("seeded")
    done = list(seeded) if isinstance(seeded, list) else []
    new = [name for name in cfg.study.seeds if name not in done]
    for name in new:
        # The attribute marks a seed trial: multi-fidelity screening lets it through (it is known-good).
        study.enqueue_trial(params(name, cfg), user_attrs={"seed_preset": name}, skip_if_exists=True)
    if new or not isinstance(seeded, list):
        study.set_user_attr("seeded", done + new)


def group_size(batch_trials: int, device) -> int:
    """Trials per batched group: `batch_trials` when given, else `GPU_GROUP` on CUDA and 1 on CPU.

    On the 2-core CPU machine one trial after another is the fastest path measured
    (bench/search_speed.py: batched groups of 2 ran at 0.47x), so batching is only the
    default where many small networks leave a GPU idle.
    """
    if batch_trials:
        return batch_trials
    return GPU_GROUP if str(device).startswith("cuda") else 1


def unbatchable_study(cfg: StudyConfig) -> str | None:
    """What this study's space always uses that the batched loop trains one at a time, or None.

    Such a study runs `study.optimize` itself (one line says so): every trial would be routed
    alone anyway (`mincap.search.batched.solo_reason`), the default study's included: it
    screens (`[fidelity]`), learns LSQ steps and anneals widths."""
    sp, why = cfg.space, []
    if "max" not in sp.quantizers:
        why.append(f"the {'/'.join(sp.quantizers)} quantizer")
    if sp.anneal_epochs[0] > 0:
        why.append("bit annealing")
    if sp.families == ("cnn",) and sp.separable == (True,) and sp.conv_depth[0] > 1:
        why.append("depthwise-separable blocks")
    if cfg.fidelity.enabled:
        why.append("[fidelity] screening")
    return ", ".join(why) or None


def run_worker(cfg: StudyConfig, opts: SearchOptions, n_trials: int | None, worker: int, threads: int,
               deadline: float | None = None) -> None:
    """One process's share of the search (also the in-process path for --workers 1).

    `deadline`: the `time.time()` at which the search's timeout runs out."""
    setup_threads(threads)
    device = pick_device(opts.device)
    study = open_study(cfg, url=opts.storage_url, worker=worker)
    splits = load_splits(cfg, opts.data_dir, device)
    store = artifact_store(cfg, opts.storage_url)
    if cfg.oneshot.enabled:  # a trial scores one sub-network of the cached supernet, in seconds
        objective, k = oneshot_objective(cfg, splits, device, store, opts.data_dir, deadline), 1
    else:
        objective = Objective(cfg, splits, device, store, deadline=deadline)
        k = group_size(opts.batch_trials, device)
    timeout = None if deadline is None else max(0.0, deadline - time.time())
    try:
        if k > 1:
            optimize_batched(study, objective, n_trials=n_trials, timeout_s=timeout, group_size=k)
        else:
            # The trial budget counts networks: draws that are not one (pruned untrained in 0.1 s)
            # would otherwise eat it -- 494 of ladder2-mnist-14's 500 trials, 26 minutes into its hour.
            # A run whose trials all fail alike stops after a few instead of burning its budget.
            callbacks = [NetworkBudget(n_trials), FailureStreak()]
            study.optimize(objective, n_trials=None, timeout=timeout, catch=(Exception,),
                           gc_after_trial=False, callbacks=callbacks)
    except Exception as err:
        lost = lost_server_error(opts.storage_url or cfg.storage_url, err)
        if lost is not None:  # the server stayed away: one line, not a traceback
            raise lost from None
        raise


def _worker_main(cfg, opts, n_trials, worker, threads, deadline) -> None:  # pragma: no cover - child process
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        run_worker(cfg, opts, n_trials, worker, threads, deadline)
    except KeyboardInterrupt:
        pass
    except MincapError as err:
        print(f"mincap: error: {err}", file=sys.stderr, flush=True)
        sys.exit(err.exit_code)


def split_trials(total: int | None, workers: int) -> list[int | None]:
    if total is None:
        return [None] * workers
    return [total // workers + (1 if i < total % workers else 0) for i in range(workers)]


def _run_processes(cfg: StudyConfig, opts: SearchOptions, total: int | None, threads: int,
                   deadline: float | None) -> None:
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_main, args=(cfg, replace(opts, progress=False), n, i, threads, deadline))
        for i, n in enumerate(split_trials(total, opts.workers))
        if n is None or n > 0
    ]
    try:
        # Starting is inside the try: a SIGTERM while a worker is still being spawned (slow on a
        # loaded machine) must stop the ones already running, or exit would wait on them.
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    except KeyboardInterrupt as stop:
        for p in procs:
            # Ctrl-C reached the whole process group; a SIGTERM only this process.
            if isinstance(stop, Terminated) and p.is_alive():
                p.terminate()
        killed = stop_processes(procs, grace_s=STOP_GRACE_S)
        if killed:
            fail_trials_of(open_study(cfg, url=opts.storage_url), killed,
                           f"its worker did not stop within {STOP_GRACE_S:.0f} s of the signal and was killed")
        raise
    bad = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if bad:
        raise MincapError(f"{len(bad)} worker process(es) exited abnormally (codes {bad})", exit_code=1)


STOP_GRACE_S = 30.0  # how long a signalled worker may take to fail its trial and exit


def stop_processes(procs, *, grace_s: float) -> list[int]:
    """Wait up to `grace_s` for the processes, then kill the ones still alive; returns their pids.

    A worker caught by the signal inside a database write can block on the lock its own
    interrupted connection holds (SQLite waits its busy timeout, 120 s by default): without a
    kill, the parent's exit would wait on it, since multiprocessing joins children at exit.
    """
    end = time.monotonic() + grace_s
    for p in procs:
        p.join(timeout=max(0.0, end - time.monotonic()))
    killed = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(timeout=10)
    return killed


def fail_trials_of(study, pids: list[int], reason: str) -> list[int]:
    """Mark FAIL the RUNNING trials that worker processes `pids` of this machine were running.

    Trials record who runs them (`worker` = host:pid); other machines' and commands' trials
    are left alone. Returns the trial numbers failed."""
    owners = {f"{socket.gethostname()}:{pid}" for pid in pids}
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("worker") in owners:
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            failed.append(t.number)
    return failed


def _n_started_of(trials) -> int:
    return len([t for t in trials if t.state.name != "WAITING"])


def _n_started(study) -> int:
    return _n_started_of(study.get_trials(deepcopy=False))


def fail_stale_trials(study) -> list[int]:
    """Fail (and, by the storage's callback, re-queue) trials whose heartbeat is older than the
    grace period: workers that died. Optuna does this itself only when a new trial begins."""
    before = {t.number for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"}
    if not before or not hasattr(study._storage, "get_heartbeat_interval"):
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-API warning
        optuna.storages.fail_stale_trials(study)
    running = {t.number for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"}
    return sorted(before - running)


def run_search(cfg: StudyConfig, opts: SearchOptions) -> dict:
    """Run (or resume) the study with `opts.workers` processes; returns a short result dict."""
    # A device this machine lacks: one line now, not one per worker later.
    device = pick_device(opts.device)
    # Missing data: one line now, before a study database or artifact folder is created
    # (the arrays stay cached for this process's own worker).
    data.load_arrays(cfg.study.dataset, opts.data_dir, True)
    study = open_study(cfg, url=opts.storage_url)  # creates it once, before any worker races
    stale = fail_stale_trials(study)
    oneshot = cfg.oneshot.enabled
    if not oneshot:
        enqueue_seeds(study, cfg)
    elif cfg.oneshot.seeds:  # a one-shot study's seeds only when it asks: what it finds, its sampler found
        enqueue_seeds(study, cfg, oneshot_seed_params)
    n_before = _n_started(study)
    finished_before = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    total = opts.trials if opts.trials is not None else cfg.budget.trials
    k = group_size(opts.batch_trials, device)
    if k > 1 and not oneshot and (why := unbatchable_study(cfg)):
        # Said once, before the live display: each trial would go alone anyway, and a GPU user
        # should know that the batched groups they expect are not what runs.
        print(f"mincap search: all trials train one at a time, not in batched groups of {k}: this "
              f"study uses {why}, which the batched engine does not train", file=sys.stderr)
        opts = replace(opts, batch_trials=1)
    threads = max(1, available_cores() // opts.workers)
    t0 = time.perf_counter()
    timeout = opts.timeout_s if opts.timeout_s is not None else (cfg.budget.timeout_s or None)
    deadline = None if timeout is None else time.time() + timeout
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_terminated)
    supernet = None
    if oneshot:  # before the live display: the supernet's training has its own
        supernet = prepare_supernet(cfg, data_dir=opts.data_dir, device=device, progress=opts.progress,
                                    deadline=deadline, workers=opts.workers)
        record_supernet(study, supernet, cfg)
        if supernet.how == "cached":
            print(f"mincap search: supernet {supernet.key} loaded from its cache ({supernet.epochs} epochs, "
                  f"{supernet.train_time_s / 60:.1f} min of training), not trained again", file=sys.stderr)
        if not supernet.finished:  # the deadline passed first: no trial runs
            return {"trials_total": n_before, "trials_before": n_before, "elapsed_s": time.perf_counter() - t0,
                    "stale_failed": stale, "stopped_at_deadline": [], "trials_run": 0, "unbatched": {},
                    "supernet": supernet.to_dict()}
        timeout = None if deadline is None else max(0.0, deadline - time.time())
    with SearchMonitor(cfg, opts, total=total, n_before=n_before, timeout_s=timeout, enabled=opts.progress):
        if opts.workers == 1:
            run_worker(cfg, opts, total, 0, threads, deadline)
        else:
            _run_processes(cfg, opts, total, threads, deadline)
    trials = open_study(cfg, url=opts.storage_url).get_trials(deepcopy=False)
    mine = [t for t in trials if t.state.is_finished() and t.number not in finished_before]
    failed = failed_run_error(mine)
    if failed is not None:
        raise failed
    at_deadline = [t.number for t in trials[n_before:] if "--timeout" in t.user_attrs.get("stop_reason", "")]
    unbatched = Counter(t.user_attrs["unbatched"] for t in mine if "unbatched" in t.user_attrs)
    return {"trials_total": _n_started_of(trials), "trials_before": n_before, "elapsed_s": time.perf_counter() - t0,
            "stale_failed": stale, "stopped_at_deadline": at_deadline, "trials_run": len(mine),
            "unbatched": dict(unbatched), "supernet": None if supernet is None else supernet.to_dict()}
