"""Where a study lives: Optuna storages, the sampler, the artifact store, and `open_study`.

Storage: the default is a SQLite file next to the study file, opened through
`RDBStorage` with a long SQLite busy timeout (`sqlite_timeout_s`, 120 s) so concurrent
writers wait instead of failing with "database is locked", plus heartbeats. Any Optuna
storage URL works (`postgresql://...`, `mysql://...`); a path ending in `.log` or
`.journal` selects a Journal file (no heartbeats there: Optuna supports them on RDB only).

A worker killed with SIGKILL leaves a RUNNING trial whose heartbeat stops; the next
worker on the study fails it and re-queues a copy (`RetryHeartbeatStaleTrialCallback`).
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from sqlalchemy import event

from mincap.errors import MincapError
from mincap.study import StudyConfig

__all__ = ["artifact_bytes", "artifact_store", "make_sampler", "make_storage", "open_study"]


def make_storage(cfg: StudyConfig, url: str | None = None):
    """The Optuna storage for `url` (default: the study file's), with mincap's heartbeats and timeouts."""
    url = url or cfg.storage_url
    if url.endswith((".log", ".journal")) and "://" not in url:
        return JournalStorage(JournalFileBackend(url))
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


def artifact_store(cfg: StudyConfig) -> FileSystemArtifactStore:
    """The study's `optuna.artifacts` store: a folder next to the study file."""
    cfg.artifacts_dir.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(cfg.artifacts_dir))


def artifact_bytes(cfg: StudyConfig, trial) -> bytes:
    """The `.mincap` file a trial stored (its `artifact_id` in the study's artifact store)."""
    artifact_id = trial.user_attrs.get("artifact_id")
    if not artifact_id:
        raise MincapError(f"trial {trial.number} of {cfg.study.name!r} has no artifact (not complete?)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trial.mincap"
        download_artifact(artifact_store=FileSystemArtifactStore(str(cfg.artifacts_dir)), file_path=str(path),
                          artifact_id=artifact_id)
        return path.read_bytes()
