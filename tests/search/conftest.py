"""A throwaway PostgreSQL server for the many-machines tests (session-scoped), and a fresh database per test.

The server programs (`initdb`, `pg_ctl`, `postgres`) must be on the PATH or in PostgreSQL's
usual Debian folder: without them the tests fail with one clear message, they are never
skipped (CI runs them). PostgreSQL refuses to run as root, so as root the cluster belongs to
an unprivileged user (`postgres` when it exists, else `nobody`). It listens on 127.0.0.1 on a
free port, with its unix socket in its own temporary folder, trusts local connections, and
runs with fsync off (a test cluster: speed over durability; restarts stay clean).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from machines import free_port

PROGRAMS = ("initdb", "pg_ctl", "postgres")


def _pg_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if all((Path(cand) / p).is_file() for p in PROGRAMS):
            return Path(cand)
    pytest.fail(f"PostgreSQL server programs ({', '.join(PROGRAMS)}) not found on PATH or in "
                f"/usr/lib/postgresql/*/bin: install PostgreSQL >= 13 to run the many-machines tests")


@dataclass
class PgServer:
    bin: Path
    data: Path
    port: int
    user: str | None  # the OS user running the server (None: this one)
    opts: str = ""  # the server's command-line options
    db_user: str = "mincap"

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / "pg_ctl"), "-D", str(self.data), *args], user=self.user,
                              cwd=self.data.parent, capture_output=True, text=True, timeout=timeout, check=True)

    def start(self) -> None:
        self.ctl("-l", str(self.data.parent / "server.log"), "-w", "-o", self.opts, "start", timeout=120)

    def stop(self) -> None:
        self.ctl("-w", "-m", "fast", "stop")

    def restart(self) -> None:
        """`pg_ctl restart` (fast shutdown: sessions are cut), waiting until it accepts connections."""
        self.ctl("-l", str(self.data.parent / "server.log"), "-w", "-m", "fast", "restart", timeout=120)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.db_user}@127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="session")
def pg_server():
    pg_bin = _pg_bin()
    user = None
    if os.geteuid() == 0:
        names = [p.pw_name for p in pwd.getpwall()]
        user = "postgres" if "postgres" in names else "nobody"
    base = Path(tempfile.mkdtemp(prefix="mincap-pg-"))  # in /tmp: the server's user can reach it
    if user:
        pw = pwd.getpwnam(user)
        os.chown(base, pw.pw_uid, pw.pw_gid)
    server = PgServer(bin=pg_bin, data=base / "data", port=free_port(), user=user)
    subprocess.run([str(pg_bin / "initdb"), "-D", str(server.data), "-U", server.db_user, "--auth=trust",
                    "-E", "UTF8", "--no-instructions"], user=user, cwd=base, capture_output=True, check=True,
                   timeout=120)
    (base / "sock").mkdir()
    if user:
        os.chown(base / "sock", pw.pw_uid, pw.pw_gid)
    server.opts = f"-h 127.0.0.1 -p {server.port} -k {base / 'sock'} -c fsync=off -c max_connections=100"
    server.start()
    try:
        yield server
    finally:
        subprocess.run([str(pg_bin / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "-w", "stop"],
                       user=user, cwd=base, capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server) -> str:
    """A SQLAlchemy URL of a new, empty database on the test server."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"host=127.0.0.1 port={pg_server.port} user={pg_server.db_user} dbname=postgres",
                         autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg_server.url(name)

