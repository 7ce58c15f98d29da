"""Where a study lives: Optuna storages, the sampler, the artifact store, and `open_study`.

Storage: the default is a SQLite file next to the study file, opened through
`RDBStorage` with a long SQLite busy timeout (`sqlite_timeout_s`, 120 s) so concurrent
writers wait instead of failing with "database is locked", plus heartbeats. Any SQLAlchemy
URL works (`postgresql+psycopg://user@host/db` with `mincap[postgres]`, `mysql://...`); a
path ending in `.log` or `.journal` selects Optuna's JournalFileBackend, for clusters with
a shared filesystem and no database server (no heartbeats there: Optuna has them on RDB only).

Many machines on one server: connections are tested as they leave the pool
(`pool_pre_ping`), and once a worker has connected, a failed connect (the server
restarting) is retried for up to `RECONNECT_S` before the worker gives up.

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
import functools
import os
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
import tomllib
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages.journal import JournalFileBackend
from sqlalchemy import event

from mincap.errors import MincapError
from mincap.search.artifact_db import RDBArtifactStore
from mincap.study import StudyConfig, parse_study

__all__ = ["RECONNECT_S", "artifact_bytes", "artifact_store", "connection_lost", "is_journal", "is_server",
           "lost_server_error", "make_sampler", "make_storage", "open_study", "stored_config"]

# How long a connected worker waits for a restarting database server (the tests shorten it).
RECONNECT_S = float(os.environ.get("MINCAP_RECONNECT_S", "120"))
CONFIG_ATTR = "mincap_study_file"  # study user attribute: the text of the study file that made it


def is_journal(url: str) -> bool:
    return url.endswith((".log", ".journal")) and "://" not in url


def is_server(url: str) -> bool:
    """A database server (PostgreSQL, MySQL, ...): machines share nothing but this URL."""
    return "://" in url and not url.startswith("sqlite")


def connection_lost(err: BaseException) -> bool:
    """Whether `err` (or what caused it) is a connection lost mid-query, as a server restart does."""
    while err is not None:
        if isinstance(err, (sa.exc.OperationalError, sa.exc.PendingRollbackError)):
            return True
        err = err.__cause__ or err.__context__
    return False


def _retried_once(name: str):
    base = getattr(RDBStorage, name)

    @functools.wraps(base)
    def method(self, *args, **kwargs):
        try:
            return base(self, *args, **kwargs)
        except optuna.exceptions.StorageInternalError as err:
            if not connection_lost(err):
                raise
            return base(self, *args, **kwargs)  # a new session, on a connection the pool re-made

    return method


def lost_server_error(url: str, err: BaseException) -> MincapError | None:
    """The one line a worker stops with when the server stays away longer than `RECONNECT_S`
    (None: `err` is something else)."""
    if not (is_server(url) and connection_lost(err)):
        return None
    shown = sa.engine.make_url(url).render_as_string(hide_password=True) if "://" in url else url
    first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
    return MincapError(
        f"storage {shown}: the database server did not come back within {RECONNECT_S:.0f} s ({first.strip()[:120]}); "
        f"this worker stops. Its running trial fails and is retried once its heartbeat is older than the grace "
        f"period; start the worker again when the server is back", exit_code=1)


class _RDBStorage(RDBStorage):
    """Optuna's RDBStorage that rides out a database server restart.

    `pool_pre_ping` renews connections that died while idle, but a query running when the
    server went down fails, and Optuna reports it as StorageInternalError: the trial that
    wrote it would FAIL. Each storage call cut off that way is run once more, in a new
    session (the connect waits for the server: `_wait_for_restarts`). A write whose commit
    landed just before the cut is repeated: an attribute is set again to the same value, a
    new trial would be made twice (the second with the next number: none duplicated).
    Optuna's heartbeat thread ends at its first exception; a missed beat is skipped instead
    (the next one, an interval later, reconnects), so a training trial never looks dead.
    """

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except (optuna.exceptions.StorageInternalError, sa.exc.SQLAlchemyError):
            pass


# The public storage API, and the private calls Optuna's _CachedStorage makes in its place.
_CALLS = [n for n in dir(BaseStorage) if not n.startswith("_") and n != "remove_session"]
for _name in [*_CALLS, "_create_new_trial", "_get_best_trial_id", "_get_stale_trial_ids", "_get_trials",
              "_set_trial_param"]:
    setattr(_RDBStorage, _name, _retried_once(_name))


def _wait_for_restarts(engine, *, connected: bool = False) -> None:
    """Once connected, retry a failed connect for up to `RECONNECT_S` (a server restart)
    instead of failing the trial; a wrong URL or a server never reached still fails at once.
    `connected`: the engine has already reached the server (its first connections predate
    this listener)."""
    connected = [connected]

    @event.listens_for(engine, "do_connect")
    def _connect(dialect, _record, cargs, cparams):
        deadline = time.monotonic() + RECONNECT_S
        while True:
            try:
                conn = dialect.connect(*cargs, **cparams)
                connected[0] = True
                return conn
            except dialect.loaded_dbapi.OperationalError:
                if not connected[0] or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def _server_engine(url: str):
    engine = sa.create_engine(url, pool_pre_ping=True)
    _wait_for_restarts(engine)
    return engine


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
            storage = _RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=cfg.storage.heartbeat_interval_s,
                grace_period=cfg.storage.grace_period_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
            )
            if url.startswith("sqlite"):
                _serialize_sqlite(storage.engine)
            else:
                _wait_for_restarts(storage.engine, connected=True)
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
    return dataclasses.replace(cfg, storage=dataclasses.replace(cfg.storage, url=url))


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
        return RDBArtifactStore(_server_engine(url))
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
    stores = [RDBArtifactStore(_server_engine(url))] if is_server(url) else []
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
