"""Optuna search for the smallest verified network that reaches the target.

One trial: sample an architecture and its compression (per-layer bit widths, pruning,
epochs, learning rate, ...) -> train on the train split, reporting validation accuracy
each epoch -> prune / quantize -> write the `.mincap` artifact and DECODE it -> evaluate
the decoded network on the validation split. Two objectives: minimize `artifact_bits`,
maximize validation accuracy; a trial is feasible when validation accuracy >= target
(Optuna 5's `Trial.set_constraint`, which its samplers read). The
artifact goes to an `optuna.artifacts` file-system store next to the database.

Faults: a NaN loss or any exception fails that trial with its reason and the study goes
on (`catch=(Exception,)`); a worker killed with SIGKILL leaves a RUNNING trial whose
heartbeat stops, and the next worker on the study fails it and re-queues a copy
(`RetryHeartbeatStaleTrialCallback`); Ctrl-C marks the running trial FAIL and exits 130.

Storage: the default is a SQLite file next to the study file, opened through
`RDBStorage` with a long SQLite busy timeout (`sqlite_timeout_s`, 120 s) so concurrent
writers wait instead of failing with "database is locked", plus heartbeats. Any Optuna
storage URL works (`postgresql://...`, `mysql://...`); a path ending in `.log` or
`.journal` selects a Journal file (no heartbeats there: Optuna supports them on RDB only).

Early stopping (Optuna's pruners do not support multi-objective studies): a trial stops
when, at training progress f = epoch / epochs >= `min_progress`, its best validation
accuracy so far is more than `margin` below the lowest best-so-far accuracy any
target-reaching trial had at the same progress (interpolated), once `min_feasible` such
trials exist; and, from `min_progress` on whatever the other trials did, when it is more
than `hopeless` (10 points) below the target. It is recorded as PRUNED with the
estimated seconds saved in `early_stop_saved_s`.
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mincap.errors import MincapError, Terminated, raise_terminated
from mincap.study import StudyConfig

if TYPE_CHECKING:

    from mincap.data import Splits

__all__ = ["SearchOptions", "make_storage", "open_study", "run_search", "sample_trial"]


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


# --- storage and study ----------------------------------------------------------------------


def make_storage(cfg: StudyConfig, url: str | None = None):
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    url = url or cfg.storage_url
    if url.endswith((".log", ".journal")) and "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": cfg.storage.sqlite_timeout_s}}
    # Two processes creating the same new database race on its schema tables (alembic's
    # version row); the loser finds them made on a second try.
    for attempt in range(4):
        try:
            storage = RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=cfg.storage.heartbeat_interval_s,
                grace_period=cfg.storage.grace_period_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
            )
            if url.startswith("sqlite"):
                _serialize_sqlite(storage.engine)
            return storage
        except Exception as err:  # noqa: BLE001 - sqlalchemy raises many kinds for a bad file/URL
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if attempt < 3 and ("UNIQUE constraint" in msg or "locked" in msg or "already exists" in msg):
                time.sleep(0.5 * (attempt + 1))
                continue
            raise MincapError(f"storage {url}: cannot open ({msg[:200]})") from None
    raise AssertionError("unreachable")


def _serialize_sqlite(engine) -> None:
    """Make every SQLite transaction take the write lock when it begins (BEGIN IMMEDIATE).

    pysqlite starts transactions lazily, so Optuna's read-then-update steps (popping a
    WAITING trial, numbering a new one) can interleave between processes: two workers
    were seen running the same enqueued trial. Taking the lock at BEGIN serializes those
    steps; the busy timeout makes the others wait their turn instead of failing.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners existed are dropped


def make_sampler(cfg: StudyConfig, worker: int = 0, n_existing: int = 0):
    """The study's sampler, seeded by (study seed, worker, trials so far).

    Optuna does not store samplers: a resumed study gets a new one. Seeding it with the
    number of trials already there makes the resumed run continue instead of replaying
    the first run's random start-up draws, and keeps every run reproducible.
    """
    import optuna

    seed = cfg.study.seed + 1000 * worker + 7919 * n_existing
    if cfg.study.sampler == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=8, multivariate=True, group=True, constant_liar=True,
        )
    if cfg.study.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=16)
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(cfg: StudyConfig, *, url: str | None = None, worker: int = 0, create: bool = True):
    """Create or resume the study; the sampler is passed again because Optuna does not store it."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats, grouped TPE and the retry callback are marked experimental; they are chosen on purpose.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = make_storage(cfg, url)
    if not create:
        try:
            return optuna.load_study(study_name=cfg.study.name, storage=storage, sampler=make_sampler(cfg, worker))
        except KeyError:
            raise MincapError(f"no study named {cfg.study.name!r} in {url or cfg.storage_url}") from None
    study = optuna.create_study(
        study_name=cfg.study.name, storage=storage, sampler=make_sampler(cfg, worker),
        directions=["minimize", "maximize"], load_if_exists=True,
    )
    if study.user_attrs.get("dataset") not in (None, cfg.study.dataset):
        raise MincapError(
            f"study {cfg.study.name!r} in {url or cfg.storage_url} was made for dataset "
            f"{study.user_attrs['dataset']!r}, not {cfg.study.dataset!r}"
        )
    if not study.user_attrs:
        study.set_user_attr("dataset", cfg.study.dataset)
        study.set_user_attr("target", cfg.study.target)
    study.sampler = make_sampler(cfg, worker, len(study.get_trials(deepcopy=False)))
    return study


# --- the search space --------------------------------------------------------------------------


def _int(trial, name: str, rng: tuple[int, int], log: bool = False) -> int:
    lo, hi = rng
    if lo == hi:
        return lo
    return trial.suggest_int(name, lo, hi, log=log and lo > 0)


def _float(trial, name: str, rng: tuple[float, float], log: bool = False) -> float:
    lo, hi = rng
    if lo == hi:
        return lo
    return trial.suggest_float(name, lo, hi, log=log and lo > 0)


def _cat(trial, name: str, choices: tuple):
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, list(choices))


def sample_trial(trial, cfg: StudyConfig, in_shape: tuple[int, int, int], n_classes: int):
    """(spec, TrainConfig, CompressConfig) for one trial, drawn from `cfg.space`."""
    from mincap.compress import CompressConfig
    from mincap.models import Conv, Spec
    from mincap.train import TrainConfig

    sp = cfg.space
    family = _cat(trial, "family", sp.families)
    act = _cat(trial, "activation", sp.activations)
    if family == "cnn":
        depth = _int(trial, "conv_depth", sp.conv_depth)
        n_pools = min(depth, _int(trial, "pools", sp.pools))
        convs = []
        for i in range(depth):
            k = int(_cat(trial, f"k{i}", sp.kernels))
            c = _int(trial, f"c{i}", sp.channels, log=True)
            convs.append(Conv(c, k, 1, 2 if i < n_pools else 1, k // 2))
        head = _cat(trial, "head", sp.heads)
        n_hidden = _int(trial, "hidden_depth", sp.hidden_depth)
        hidden = tuple(_int(trial, f"h{i}", sp.hidden_width, log=True) for i in range(n_hidden))
        spec = Spec("cnn", tuple(convs), hidden, act, bool(_cat(trial, "batch_norm", sp.batch_norm)), head)
    else:
        depth = _int(trial, "mlp_depth", sp.mlp_depth)
        hidden = tuple(_int(trial, f"m{i}", sp.mlp_width, log=True) for i in range(depth))
        spec = Spec("mlp", (), hidden, act)
    spec = spec.with_data(in_shape, n_classes)
    n_layers = len(spec.convs) + len(spec.hidden) + 1
    if sp.per_layer_bits:
        bits = tuple(_int(trial, f"bits{i}", sp.bits) for i in range(n_layers))
    else:
        bits = (_int(trial, "bits", sp.bits),) * n_layers
    epochs = _int(trial, "epochs", sp.epochs)
    train_cfg = TrainConfig(
        epochs=epochs,
        batch_size=int(_cat(trial, "batch_size", sp.batch_size)),
        lr=_float(trial, "lr", sp.lr, log=True),
        weight_decay=_float(trial, "weight_decay", sp.weight_decay, log=True),
        augment_shift=_int(trial, "augment", sp.augment),
        seed=cfg.study.seed + trial.number,
    )
    prune = _float(trial, "prune_ratio", sp.prune_ratio)
    comp = CompressConfig(
        bits_per_layer=bits,
        qat_epochs=max(1, round(_float(trial, "qat_fraction", sp.qat_fraction) * epochs)),
        prune_ratio=prune,
        prune_steps=_int(trial, "prune_steps", sp.prune_steps) if prune > 0 else 1,
        prune_criterion=_cat(trial, "prune_criterion", sp.prune_criteria) if prune > 0 else "l1",
        prune_finetune_epochs=_int(trial, "finetune_epochs", sp.finetune_epochs) if prune > 0 else 0,
    )
    return spec, train_cfg, comp


def preset_params(name: str, cfg: StudyConfig) -> dict[str, Any]:
    """Parameters that make `sample_trial` reproduce preset `name`: a known-good seed trial."""
    from mincap.models import PRESETS

    spec, sp = PRESETS[name], cfg.space
    mid = lambda r: r[0] + (r[1] - r[0]) // 2  # noqa: E731
    p: dict[str, Any] = {"family": spec.family, "activation": spec.activation}
    if spec.family == "cnn":
        p.update(conv_depth=len(spec.convs), pools=sum(c.pool > 1 for c in spec.convs), head=spec.head,
                 hidden_depth=len(spec.hidden), batch_norm=spec.batch_norm)
        for i, c in enumerate(spec.convs):
            p[f"k{i}"], p[f"c{i}"] = c.kernel, c.channels
        p.update({f"h{i}": h for i, h in enumerate(spec.hidden)})
        n_layers = len(spec.convs) + len(spec.hidden) + 1
    else:
        p["mlp_depth"] = len(spec.hidden)
        p.update({f"m{i}": h for i, h in enumerate(spec.hidden)})
        n_layers = len(spec.hidden) + 1
    # 4-bit weights, no pruning, the longest training: a design that usually reaches the target.
    bits = min(max(4, sp.bits[0]), sp.bits[1])
    p.update({f"bits{i}": bits for i in range(n_layers)} if sp.per_layer_bits else {"bits": bits})
    p.update(epochs=sp.epochs[1], batch_size=sp.batch_size[0], lr=math.sqrt(sp.lr[0] * sp.lr[1]),
             weight_decay=sp.weight_decay[0], augment=mid(sp.augment), qat_fraction=sp.qat_fraction[1],
             prune_ratio=sp.prune_ratio[0])
    return p


# --- early stopping ----------------------------------------------------------------------------


def _curve_at(curve: list[float], frac: float) -> float:
    """Accuracy of a curve (one value per epoch) at training progress `frac`, linearly interpolated."""
    pos = frac * len(curve) - 1  # epoch e (1-based) sits at progress e / len
    if pos <= 0:
        return curve[0]
    i = min(int(pos), len(curve) - 2) if len(curve) > 1 else 0
    if len(curve) == 1:
        return curve[0]
    t = min(pos - i, 1.0)
    return curve[i] + t * (curve[i + 1] - curve[i])


class EarlyStopRule:
    """The documented rule on validation curves (see the module docstring)."""

    def __init__(self, cfg: StudyConfig, feasible_curves: list[list[float]]) -> None:
        self.cfg = cfg.early_stop
        self.target = cfg.study.target
        # Best-so-far curves: on a small validation split (digits: 300 images) with a high
        # learning rate, one epoch's accuracy swings by several points, and comparing raw
        # curves stopped trials that were at 99.7% two epochs later. A trial is stopped only
        # when its best epoch so far is behind every feasible trial's best at that progress.
        self.curves = [list(itertools.accumulate(c, max)) for c in feasible_curves if c]

    def should_stop(self, epoch: int, epochs: int, val_acc: float) -> bool:
        """`val_acc`: the trial's best validation accuracy up to `epoch`."""
        frac = epoch / epochs
        if epoch >= epochs:  # the last epoch: stopping saves nothing
            return False
        if not self.cfg.enabled or frac < self.cfg.min_progress:
            return False
        if val_acc < self.target - self.cfg.hopeless:
            return True
        if len(self.curves) < self.cfg.min_feasible:
            return False
        floor = min(_curve_at(c, frac) for c in self.curves)
        return val_acc < floor - self.cfg.margin


# --- one trial ---------------------------------------------------------------------------------


class TrialRun:
    """One trial's bookkeeping while it trains: its validation curve and the early-stop decision."""

    def __init__(self, trial, rule: EarlyStopRule, epochs: int) -> None:
        self.trial, self.rule, self.epochs = trial, rule, epochs
        self.curve: list[float] = []
        self.saved_s: float | None = None  # set when the rule stopped the trial
        self.t0 = time.perf_counter()

    def on_epoch(self, stats) -> bool:
        """`mincap.train`'s on_epoch callback: True = stop this trial's training now."""
        self.curve.append(stats.val_acc)
        self.trial.set_user_attr("progress", [len(self.curve), self.epochs, stats.val_acc])
        n = len(self.curve)
        if math.isnan(stats.train_loss) or n > self.epochs:  # fine-tuning epochs are not judged
            return False
        if self.rule.should_stop(n, self.epochs, max(self.curve)):
            self.saved_s = (time.perf_counter() - self.t0) / n * (self.epochs - n)
            return True
        return False


class _Stop(Exception):
    """Raised out of a lone trial's training once the early-stop rule fired: nothing after it is needed."""


def record_failure(trial, err: BaseException) -> None:
    # Optuna 5 keeps no failure reason in storage; record it where summaries can read it.
    trial.set_user_attr("fail_reason", f"{type(err).__name__}: {err}"[:500])


class Objective:
    """A trial in three steps -- `begin` (record the spec, set up early stopping), training,
    `finish` (record size and accuracy, store the artifact) -- so that the batched path
    (`mincap.search_batched`) can train many begun trials at once and finish each alone."""

    def __init__(self, cfg: StudyConfig, splits: Splits, device, artifact_store) -> None:
        self.cfg, self.splits, self.device, self.store = cfg, splits, device, artifact_store

    def _feasible_curves(self, study) -> list[list[float]]:
        import optuna

        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        target = self.cfg.study.target
        return [t.user_attrs.get("curve", []) for t in done if t.user_attrs.get("val_acc", 0.0) >= target]

    def __call__(self, trial) -> tuple[float, float]:
        import optuna

        from mincap.compress import train_compressed

        try:
            spec, train_cfg, comp = sample_trial(trial, self.cfg, self.splits.in_shape, self.splits.n_classes)
            run = self.begin(trial, spec, train_cfg)

            def on_epoch(stats) -> bool:
                if run.on_epoch(stats):
                    raise _Stop
                return False

            try:
                res = train_compressed(spec, self.splits, train_cfg, comp, on_epoch=on_epoch, device=self.device)
            except _Stop:
                res = None
            return self.finish(run, res, comp)
        except optuna.TrialPruned:
            raise
        except Exception as err:
            record_failure(trial, err)
            raise

    def begin(self, trial, spec, train_cfg) -> TrialRun:
        from mincap.models import build, count_params

        trial.set_user_attr("spec", spec.to_json())
        trial.set_user_attr("n_params_initial", count_params(build(spec)))
        return TrialRun(trial, EarlyStopRule(self.cfg, self._feasible_curves(trial.study)), train_cfg.epochs)

    def finish(self, run: TrialRun, res, comp) -> tuple[float, float]:
        """Record a trained trial (`res`: its `Compressed`, None when early-stopped); its two objective values."""
        import tempfile

        import optuna

        from mincap.artifact import write

        trial, curve = run.trial, run.curve
        trial.set_user_attr("curve", curve[: run.epochs])
        trial_time_s = res.train_time_s if res is not None else time.perf_counter() - run.t0
        trial.set_user_attr("train_time_s", round(trial_time_s, 2))
        if run.saved_s is not None:
            trial.set_user_attr("early_stop_saved_s", round(run.saved_s, 1))
            trial.set_user_attr("early_stop_val_acc", curve[-1])
            raise optuna.TrialPruned(f"early stop at epoch {len(curve)}: val {curve[-1]:.4f}")
        size = res.size
        trial.set_user_attr("final_spec", res.spec.to_json())
        trial.set_user_attr("bits_per_layer", list(comp.bits_per_layer or ()))
        for key in ("n_params", "n_nonzero", "nominal_bits", "artifact_bits"):
            trial.set_user_attr(key, size[key])
        trial.set_user_attr("layers", size.get("layers", []))
        trial.set_user_attr("val_acc", res.val_acc)
        # Optuna's constraint mechanism (v5: Trial.set_constraint): feasible when <= 0.
        trial.set_constraint("val_acc_target", self.cfg.study.target - res.val_acc)
        with tempfile.TemporaryDirectory() as tmp:
            path = write(os.path.join(tmp, f"trial-{trial.number}.mincap"), res.artifact)
            artifact_id = optuna.artifacts.upload_artifact(
                artifact_store=self.store, file_path=str(path), study_or_trial=trial
            )
        trial.set_user_attr("artifact_id", artifact_id)
        return float(size["artifact_bits"]), float(res.val_acc)


# --- running ---------------------------------------------------------------------------------


def _artifact_store(cfg: StudyConfig):
    from optuna.artifacts import FileSystemArtifactStore

    cfg.artifacts_dir.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(cfg.artifacts_dir))


def enqueue_seeds(study, cfg: StudyConfig) -> None:
    """Enqueue each seed preset once per study, also one added to the file later.

    The names already enqueued are kept in the study (`seeded`), so a seed trial that
    failed is not enqueued again on every resume; studies from before that list held
    `True` and fall back on `skip_if_exists` (a preset whose trial already ran is skipped).
    """
    seeded = study.user_attrs.get("seeded")
    done = list(seeded) if isinstance(seeded, list) else []
    new = [name for name in cfg.study.seeds if name not in done]
    for name in new:
        study.enqueue_trial(preset_params(name, cfg), skip_if_exists=True)
    if new or not isinstance(seeded, list):
        study.set_user_attr("seeded", done + new)


def run_worker(cfg: StudyConfig, opts: SearchOptions, n_trials: int | None, worker: int, threads: int) -> None:
    """One process's share of the search (also the in-process path for --workers 1)."""
    from mincap import data
    from mincap.train import pick_device, setup_threads

    setup_threads(threads)
    device = pick_device(opts.device)
    study = open_study(cfg, url=opts.storage_url, worker=worker)
    splits = data.load(
        cfg.study.dataset, root=opts.data_dir, n_val=cfg.data.n_val, split_seed=cfg.data.split_seed,
        limit=cfg.data.limit or None, device=device,
    )
    objective = Objective(cfg, splits, device, _artifact_store(cfg))
    timeout = opts.timeout_s if opts.timeout_s is not None else (cfg.budget.timeout_s or None)
    k = group_size(opts.batch_trials, device)
    if k > 1:
        from mincap.search_batched import optimize_batched

        optimize_batched(study, objective, n_trials=n_trials, timeout_s=timeout, group_size=k)
    else:
        study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(Exception,), gc_after_trial=False)


GPU_GROUP = 8  # trials per batched group on CUDA when not given


def group_size(batch_trials: int, device) -> int:
    """Trials per batched group: `batch_trials` when given, else `GPU_GROUP` on CUDA and 1 on CPU.

    On the 2-core CPU machine one trial after another is the fastest path measured
    (bench/search_speed.py: batched groups of 2 ran at 0.47x), so batching is only the
    default where many small networks leave a GPU idle.
    """
    if batch_trials:
        return batch_trials
    return GPU_GROUP if str(device).startswith("cuda") else 1


def _worker_main(cfg, opts, n_trials, worker, threads) -> None:  # pragma: no cover - child process
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        run_worker(cfg, opts, n_trials, worker, threads)
    except KeyboardInterrupt:
        pass


def split_trials(total: int | None, workers: int) -> list[int | None]:
    if total is None:
        return [None] * workers
    return [total // workers + (1 if i < total % workers else 0) for i in range(workers)]


def run_search(cfg: StudyConfig, opts: SearchOptions) -> dict:
    """Run (or resume) the study with `opts.workers` processes; returns a short result dict."""
    import multiprocessing as mp

    from mincap.progress import SearchMonitor
    from mincap.train import available_cores, pick_device

    pick_device(opts.device)  # a device this machine lacks: one line now, not one per worker later
    study = open_study(cfg, url=opts.storage_url)  # creates it once, before any worker races
    enqueue_seeds(study, cfg)
    n_before = len([t for t in study.get_trials(deepcopy=False) if t.state.name != "WAITING"])
    total = opts.trials if opts.trials is not None else cfg.budget.trials
    workers = opts.workers
    threads = max(1, available_cores() // workers)
    t0 = time.perf_counter()
    timeout = opts.timeout_s if opts.timeout_s is not None else (cfg.budget.timeout_s or None)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_terminated)
    with SearchMonitor(cfg, opts, total=total, n_before=n_before, timeout_s=timeout, enabled=opts.progress):
        if workers == 1:
            run_worker(cfg, opts, total, 0, threads)
        else:
            ctx = mp.get_context("spawn")
            procs = [
                ctx.Process(target=_worker_main, args=(cfg, replace(opts, progress=False), n, i, threads))
                for i, n in enumerate(split_trials(total, workers))
                if n is None or n > 0
            ]
            for p in procs:
                p.start()
            try:
                for p in procs:
                    p.join()
            except KeyboardInterrupt as stop:
                for p in procs:
                    # Ctrl-C reached the whole process group; a SIGTERM only this process.
                    if isinstance(stop, Terminated) and p.is_alive():
                        p.terminate()
                for p in procs:
                    p.join(timeout=30)
                raise
            bad = [p.exitcode for p in procs if p.exitcode not in (0, None)]
            if bad:
                raise MincapError(f"{len(bad)} worker process(es) exited abnormally (codes {bad})", exit_code=1)
    study = open_study(cfg, url=opts.storage_url)
    n_after = len([t for t in study.get_trials(deepcopy=False) if t.state.name != "WAITING"])
    return {"trials_total": n_after, "trials_before": n_before,
            "elapsed_s": time.perf_counter() - t0}
