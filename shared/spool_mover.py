"""The process that moves a server's spool into the embedded prediction log (see `spool`).

`python -m verticals.core.spool_mover <database> <spool folder> <server pid> <interval>`:
every `interval` seconds, while the server lives, it moves every spool of the folder;
movers of several servers take turns through a lock file (one moves, the others stand
by), and each moves once more when its server is gone, or when it is told to stop.
Only the standard library's sqlite3: it starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from verticals.core.spool import move_all

try:
    import fcntl
except ImportError:  # Windows: every mover moves; BEGIN IMMEDIATE keeps them apart
    fcntl = None  # type: ignore[assignment]


def connect(database: Path) -> sqlite3.Connection:
    """The log, with the pragmas every writer of it uses (see `predlog`)."""
    connection = sqlite3.connect(database, timeout=30)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
        connection.execute(f"PRAGMA {pragma}")
    return connection


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return os.getppid() == pid  # a reused pid is not our server


def _lead(lock: Any) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def main(database: Path, folder: Path, server: int, interval: float) -> None:
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    with contextlib.suppress(OSError, AttributeError):
        os.nice(19)  # the servers first: under full load rows wait in the spool, durable
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which stops us
    connection = connect(database)
    leading = False
    with open(folder / ".mover.lock", "a") as lock:  # noqa: PTH123
        while not stopping and _alive(server):
            leading = leading or _lead(lock)
            if leading:
                try:
                    move_all(folder, connection)
                except Exception as exc:  # noqa: BLE001 - the rows wait in the spool: next turn
                    print(f"verticals spool mover: {exc}", file=sys.stderr, flush=True)
            time.sleep(interval)
        move_all(folder, connection)  # what the server left (its spool is finished now)
    connection.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
