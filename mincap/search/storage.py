"""Where a study lives: Optuna storages, the sampler, the artifact store, and `open_study`.

Storage: the default is a SQLite file next to the study file, opened through
`RDBStorage` with a long SQLite busy timeout (`sqlite_timeout_s`, 120 s) so concurrent
writers wait instead of failing with "database is locked", plus heartbeats. Any SQLAlchemy
URL works (`postgresql+psycopg://user@host/db` with `mincap[postgres]`, `mysql://...`); a
path ending in `.log` or `.journal` selects Optuna's JournalFileBackend, for clusters with
a shared filesystem and no database server (no heartbeats there: Optuna has them on RDB only).

Many machines on one server: the storage rides out a server restart
(`mincap.search.server`).

A worker killed with SIGKILL leaves a RUNNING trial whose heartbeat stops; the next
worker on the study fails it and re-queues a copy (`RetryHeartbeatStaleTrialCallback`).

Artifacts (the trials' `.mincap` files): on a server storage they are rows of the same
database (`mincap.search.artifact_db`: the study is self-contained, a third machine needs
only the URL); on file storages (SQLite, journal) a folder beside the storage file
(or `[storage] artifacts`). `artifact_bytes` reads either. The study file's text is kept in the
study too (user attribute `mincap_study_file`), so `stored_config` rebuilds the settings
from the URL and the study name alone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
import tomllib
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import JournalStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from sqlalchemy import event

from mincap.config.study import StudyConfig, parse_study
from mincap.errors import MincapError
from mincap.search.artifact_db import RDBArtifactStore
from mincap.search.server import ResilientRDBStorage, is_server, server_engine, wait_for_restarts

__all__ = ["artifact_bytes", "artifact_store", "is_journal", "last_heartbeats", "make_sampler", "make_storage",
           "open_study", "search_wall_s", "stored_config", "trial_spans"]

CONFIG_ATTR = "mincap_study_file"  # study user attribute: the text of the study file that made it


def is_journal(url: str) -> bool:
    return url.endswith((".log", ".journal")) and "://" not in url


def last_heartbeats(storage) -> dict[int, Any]:
    """{trial_id: the trial's last heartbeat (naive UTC datetime)} of an RDB storage; {} for others.

    The time a trial was last alive: for one failed as stale (its worker killed, found by a later
    run), `datetime_complete` is when it was found, maybe a day later."""
    storage = getattr(storage, "_backend", storage)  # Optuna wraps an RDB storage in a cache
    engine = getattr(storage, "engine", None)
    if engine is None:
        return {}
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT trial_id, heartbeat FROM trial_heartbeats")).fetchall()
    except Exception:  # an older schema, a server gone: fall back on the cap in `trial_spans`
        return {}
    out = {}
    for tid, hb in rows:
        out[tid] = dt.datetime.fromisoformat(hb) if isinstance(hb, str) else hb
    return out


def trial_spans(trials, heartbeats: dict[int, Any] | None = None) -> dict[int, tuple]:
    """{trial number: (start, end)} of the trials that ran. A FAILED trial ends at its last
    heartbeat where known, and in any case after at most the longest trial that ended by itself."""
    timed = [t for t in trials if t.datetime_start and t.datetime_complete]
    cap = max(((t.datetime_complete - t.datetime_start) for t in timed if t.state.name != "FAIL"), default=None)
    spans = {}
    for t in timed:
        end = t.datetime_complete
        if t.state.name == "FAIL":
            hb = (heartbeats or {}).get(t._trial_id)
            if hb is not None and t.datetime_start <= hb < end:
                end = hb
            if cap is not None:
                end = min(end, t.datetime_start + cap)
        spans[t.number] = (t.datetime_start, end)
    return spans


def search_wall_s(trials, heartbeats: dict[int, Any] | None = None) -> float:
    """Wall time spent searching, over all `mincap search` runs and workers: the union of the
    trials' intervals (`trial_spans`; a budget in the study file says nothing about how often it was run)."""
    spans = sorted(trial_spans(trials, heartbeats).values())
    wall, end = 0.0, None
    for a, b in spans:
        if end is None or a > end:
            wall += (b - a).total_seconds()
            end = b
        elif b > end:
            wall += (b - end).total_seconds()
            end = b
    return wall


def make_storage(cfg: StudyConfig, url: str | None = None):
    """The Optuna storage for `url` (default: the study file's), with mincap's heartbeats and timeouts."""
    url = url or cfg.storage_url
    if is_journal(url):
        return JournalStorage(JournalFileBackend(url))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": cfg.storage.sqlite_timeout_s}}
    else:  # a restarted server leaves dead connections in the pool: test each one as it is taken out
        engine_kwargs = {"pool_pre_ping": True}
    # Two processes creating the same new database race on its schema tables (alembic's
    # version row; on PostgreSQL the tables' types: "duplicate key"); the loser finds them made
    # on a second try.
    for attempt in range(4):
        try:
            storage = ResilientRDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=cfg.storage.heartbeat_interval_s,
                grace_period=cfg.storage.grace_period_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
            )
            if url.startswith("sqlite"):
                _serialize_sqlite(storage.engine)
            else:
                wait_for_restarts(storage.engine, connected=True)
            return storage
        except Exception as err:  # noqa: BLE001 - sqlalchemy raises many kinds for a bad file/URL
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if attempt < 3 and any(k in msg for k in ("UNIQUE constraint", "duplicate key", "locked", "already exists")):
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
    if cfg.path and CONFIG_ATTR not in study.user_attrs:  # also added to studies made before it was kept
        study.set_user_attr(CONFIG_ATTR, Path(cfg.path).read_text())
    study.sampler = make_sampler(cfg, worker, len(study.get_trials(deepcopy=False)))
    return study


def stored_config(url: str, name: str) -> StudyConfig:
    """The settings of study `name` in `url`, kept in the study when it was made: a machine
    without the study file joins or reads the study from the URL and the name alone."""
    probe = dataclasses.replace(StudyConfig(), storage=dataclasses.replace(StudyConfig().storage, url=url))
    probe = dataclasses.replace(probe, study=dataclasses.replace(probe.study, name=name))
    text = open_study(probe, url=url, create=False).user_attrs.get(CONFIG_ATTR)
    if text is None:
        raise MincapError(f"study {name!r} in {url} keeps no study file (made by an older mincap or in code): "
                          f"give its study file")
    cfg = parse_study(tomllib.loads(text), path="")
    # The name asked for: a study made with `--study NAME` keeps a file naming another.
    return dataclasses.replace(cfg, study=dataclasses.replace(cfg.study, name=name),
                               storage=dataclasses.replace(cfg.storage, url=url))


def _artifact_dirs(cfg: StudyConfig, url: str) -> list[Path]:
    """Folders that may hold a file storage's artifacts, where new ones go first: `[storage]
    artifacts` when set, else beside the storage file (the SQLite database or the journal, so
    that a journal on a shared filesystem has its networks there too); then the folder beside
    the study file, where studies run with `--storage FILE` before this rule wrote them."""
    dirs = [cfg.artifacts_dir]
    if not cfg.storage.artifacts:
        db = url if is_journal(url) else sa.engine.make_url(url).database
        if db and db != ":memory:":
            dirs.insert(0, Path(db).resolve().parent / f"{cfg.study.name}.artifacts")
    return list(dict.fromkeys(dirs))


def artifact_store(cfg: StudyConfig, url: str | None = None):
    """Where a search stores its trials' `.mincap` files (an `optuna.artifacts` store): in the
    database on a server storage, else a folder beside the storage file (see `_artifact_dirs`)."""
    url = url or cfg.storage_url
    if is_server(url):
        return RDBArtifactStore(server_engine(url))
    folder = _artifact_dirs(cfg, url)[0]
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def artifact_bytes(cfg: StudyConfig, trial, url: str | None = None) -> bytes:
    """The `.mincap` file a trial stored (its `artifact_id`): from the database's artifact table
    when the storage is a server, else from the folders of `_artifact_dirs`."""
    artifact_id = trial.user_attrs.get("artifact_id")
    if not artifact_id:
        raise MincapError(f"trial {trial.number} of {cfg.study.name!r} has no artifact (not complete?)")
    url = url or cfg.storage_url
    stores = [RDBArtifactStore(server_engine(url))] if is_server(url) else []
    dirs = _artifact_dirs(cfg, url)
    stores += [FileSystemArtifactStore(str(d)) for d in dirs if d.is_dir()]
    for store in stores:
        try:
            with store.open_reader(artifact_id) as f:
                return f.read()
        except ArtifactNotFound:
            continue
    where = (["the database's artifact table"] if is_server(url) else []) + [str(d) for d in dirs]
    raise MincapError(f"trial {trial.number}: artifact {artifact_id} is in none of: {', '.join(where)}")
