"""A real PostgreSQL server for tests: `postgres_url` per session, `postgres_db` per test.

Use in a test module (or conftest) with `from .postgres import postgres_db, postgres_url`.

- VERTICALS_TEST_POSTGRES_URL set: that server is used as is (a SQLAlchemy URL such as
  `postgresql+psycopg://postgres@127.0.0.1:5432/postgres`); nothing is started.
- Otherwise a throwaway cluster is made from the machine's server binaries (the newest
  /usr/lib/postgresql/*/bin, else `initdb` and `pg_ctl` on PATH) in a temporary folder,
  listening on 127.0.0.1 only, with trust authentication for the user `postgres`; it is
  stopped and the folder removed at the end of the session. Postgres refuses to run as root,
  so under root the binaries run as the `postgres` user (`runuser -u postgres --`).
- Neither: the fixture skips, which tests/conftest.py turns into a failure under CI=true.

`postgres_db` creates a fresh database with a unique name on that server for one test and
yields its URL, so tests do not see each other's tables; it is dropped (WITH (FORCE)) after.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .servers import free_port

URL_ENV = "VERTICALS_TEST_POSTGRES_URL"
NO_POSTGRES = "no PostgreSQL: set VERTICALS_TEST_POSTGRES_URL or install postgresql"
USER = "postgres"  # the cluster's superuser (initdb -U), and the OS user under root


def find_binaries() -> Path | None:
    """The folder with `initdb` and `pg_ctl`: the newest /usr/lib/postgresql/*/bin, else PATH's."""

    def version(folder: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name))

    def complete(folder: Path) -> bool:
        return all(os.access(folder / name, os.X_OK) for name in ("initdb", "pg_ctl"))

    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True):
        if complete(folder):
            return folder
    initdb = shutil.which("initdb")
    if initdb and complete(Path(initdb).resolve().parent):
        return Path(initdb).resolve().parent
    return None


class Cluster:
    """A throwaway PostgreSQL cluster in a temporary folder, on a free port of 127.0.0.1."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                owner = pwd.getpwnam(USER)
            except KeyError:
                raise RuntimeError(f"root, and no {USER!r} user to run PostgreSQL as") from None
        # Under root the folder goes in /tmp (the postgres user must reach it), and a short
        # path keeps the Unix socket in it under the 107-byte limit.
        parent = "/tmp" if self.as_root else None
        self.dir = Path(tempfile.mkdtemp(prefix="verticals-pg-", dir=parent))
        self.dir.chmod(0o700)
        if self.as_root:
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self.data = self.dir / "data"
        self.log = self.dir / "log"
        self.port = 0
        self.started_s = 0.0

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", USER, "--", *cmd]
        # cwd: the server user may not be allowed into the test's working directory.
        return subprocess.run(cmd, cwd=self.dir, capture_output=True, text=True, timeout=120)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError as err:
            return f"<no server log: {err}>"

    def start(self) -> None:
        began = time.monotonic()
        init = self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", USER, "--no-sync",
            "--encoding=UTF8", "--locale=C",
        )  # fmt: skip
        if init.returncode != 0:
            output = f"{init.stdout[-2000:]}{init.stderr[-3000:]}"
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{output}")
        for attempt in range(3):  # another process may take the free port before the server does
            self.port = free_port()
            socket_dir = shlex.quote(str(self.dir))  # pg_ctl hands -o to a shell
            options = f"-p {self.port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            ctl = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                            "-o", options, "start")  # fmt: skip
            if ctl.returncode == 0:
                self.started_s = time.monotonic() - began
                return
            if "already in use" not in self.log_tail() or attempt == 2:
                raise RuntimeError(
                    f"PostgreSQL did not start on 127.0.0.1:{self.port}"
                    f" (pg_ctl exit {ctl.returncode}):\n{ctl.stdout[-1000:]}{ctl.stderr[-1000:]}\n"
                    f"--- server log tail ({self.log}) ---\n{self.log_tail()}"
                )

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop the server (immediate shutdown) and remove the folder; safe to call twice."""
        if not self.dir.exists():
            return
        pid = self._postmaster_pid()
        if pid is not None:
            stop = ("pg_ctl", "-D", str(self.data), "-m", "immediate", "-t", "30", "stop")
            try:
                stopped = self._run(*stop).returncode == 0
            except (subprocess.SubprocessError, OSError):
                stopped = False
            if not stopped:  # the postmaster's own signal for an immediate shutdown
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGQUIT)
                deadline = time.monotonic() + 10
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for init to reap it does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's process: it exists
            pass
        return True


# One cluster per process, however many modules import the fixture (each import makes its
# own session-scoped fixture definition): started by the first user, stopped by the last.
_cluster: Cluster | None = None
_users = 0


def _acquire() -> Cluster:
    global _cluster, _users
    if _cluster is None:
        bin_dir = find_binaries()
        if bin_dir is None:
            pytest.skip(NO_POSTGRES)
        cluster = Cluster(bin_dir)
        atexit.register(cluster.stop)  # if the session never reaches the fixture's teardown
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        _cluster = cluster
    _users += 1
    return _cluster


def _release() -> None:
    global _cluster, _users
    _users -= 1
    if _users == 0 and _cluster is not None:
        _cluster.stop()
        _cluster = None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a PostgreSQL server for the whole session (its `postgres` database)."""
    if os.environ.get(URL_ENV):
        yield os.environ[URL_ENV]
        return
    cluster = _acquire()
    try:
        yield cluster.url
    finally:
        _release()


def _libpq(url: str) -> str:
    """A SQLAlchemy URL as a libpq URI that psycopg.connect takes (the driver name dropped)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new database with a unique name on `server_url`'s server: its URL; dropped after."""
    psycopg = pytest.importorskip("psycopg")
    pytest.importorskip("sqlalchemy")
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_libpq(server_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq(server_url), autocommit=True) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """The SQLAlchemy URL of a fresh, empty database for this test only (dropped afterwards)."""
    with fresh_database(postgres_url) as url:
        yield url
