"""Riding out a database server: many machines on one PostgreSQL/MySQL server keep working
through a server restart, and stop with one line when it stays away.

Three layers, each for a failure seen in the tests (tests/search/test_postgres.py):
connections that died while idle are renewed as they leave the pool (`pool_pre_ping`);
once an engine has reached its server, a failed connect is retried for up to
`RECONNECT_S` (`wait_for_restarts`); a storage call cut off mid-query is run once more
(`ResilientRDBStorage`). What still fails is turned into one line (`lost_server_error`).
"""

from __future__ import annotations

import functools
import os
import time

import optuna
import sqlalchemy as sa
from optuna.storages import BaseStorage, RDBStorage
from sqlalchemy import event

from mincap.errors import MincapError

__all__ = ["RECONNECT_S", "ResilientRDBStorage", "connection_lost", "is_server", "lost_server_error",
           "server_engine", "wait_for_restarts"]

# How long a connected worker waits for a restarting database server (the tests shorten it).
RECONNECT_S = float(os.environ.get("MINCAP_RECONNECT_S", "120"))


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


class ResilientRDBStorage(RDBStorage):
    """Optuna's RDBStorage that rides out a database server restart.

    `pool_pre_ping` renews connections that died while idle, but a query running when the
    server went down fails, and Optuna reports it as StorageInternalError: the trial that
    wrote it would FAIL. Each storage call cut off that way is run once more, in a new
    session (the connect waits for the server: `wait_for_restarts`). A write whose commit
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
    setattr(ResilientRDBStorage, _name, _retried_once(_name))


def wait_for_restarts(engine, *, connected: bool = False) -> None:
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


def server_engine(url: str):
    engine = sa.create_engine(url, pool_pre_ping=True)
    wait_for_restarts(engine)
    return engine
