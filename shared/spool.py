"""The embedded log's spool: each answer is appended to a file of its server process before
it is sent, and moved into the database in batches, in the background.

Why not commit each answer (or each turn of the event loop's answers) in SQLite: on 2
cores that cost finance 29-57% of its requests/s (a commit is tens of microseconds, more
with two processes taking turns). An append is one `write()` of a JSON line: once it
returns, the row is in the operating system's page cache, so a server killed right after
(SIGKILL) has lost nothing; only a power cut can take the last rows, as with SQLite's own
`synchronous=NORMAL`. A mover process (`spool_mover`) moves the spools into `predictions`
every `interval` seconds, many rows per transaction, and records how far it got
(`spool_offsets`) in the same transaction, so a crash never moves a row twice or not at
all. Readers of the log (feedback, monitor, export) first move every spool in the folder,
a killed server's too. Only the embedded log has a spool: a database server is committed
to before each answer.

Files: `<log_dir>/predictions.db-spool/<host>-<pid>-<random>.jsonl`; renamed `.done` when
their process closes them (shutdown, or past `rotate_bytes`), and deleted once moved.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic_core import from_json, to_json

from verticals.core import predlog_tables as tables
from verticals.core.logs import get_logger

try:
    import fcntl  # one mover per spool file at a time
except ImportError:  # Windows: a thread lock, within this process only
    fcntl = None  # type: ignore[assignment]

log = get_logger("predlog")
SUFFIX, DONE = ".jsonl", ".done"
MOVER_CHECK = 1000  # appends between checks that the mover still runs


class Spool:
    """This process's spool file in `folder` (the embedded log `database`'s), and the
    process that moves spools into it."""

    def __init__(
        self, folder: str | Path, database: Path, interval: float = 0.25,
        rotate_bytes: int = 16 << 20, mover: bool = True,
    ) -> None:  # fmt: skip
        self.folder, self.database = Path(folder), Path(database)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rotate_bytes, self.interval = rotate_bytes, interval
        self._lock = threading.Lock()
        self._second, self._stamp = -1, b""
        self._appends = 0
        self._fd = -1
        self._open_file()
        self.mover = start_mover(self.database, self.folder, interval) if mover else None

    def _open_file(self) -> None:
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        path = self.folder / name
        alive = _hold_alive(path)  # held while this process lives: its spool is in use
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
        # its whole size at once (a hole, no disk yet): each row is then one `pwrite` that
        # does not grow the file, which costs a third of an append's (no size change to
        # journal); the rows end where the zeros start
        os.ftruncate(fd, self.rotate_bytes)
        self.path, self._fd, self._written = path, fd, 0
        self._alive = alive

    def append(self, row: dict[str, Any]) -> None:
        """Write one row; once this returns, a killed process has not lost it.

        A line is the small fields as JSON, a tab, `inputs`, a tab, `outputs`: those two are
        JSON text already and go in as they are (JSON text holds no raw tab or newline:
        inside strings they are escaped, outside they are spaces, as here), so the largest
        parts are neither encoded again here nor parsed again when moved."""
        head = {k: v for k, v in row.items() if k not in _JSON_TEXT}
        head["created"] = _sqlite_time(head["created"])
        self._write(b"\t".join((to_json(head), *(_flat(row[k]) for k in _JSON_TEXT))) + b"\n")

    def append_answer(
        self, request_id: str, vertical: bytes, version: bytes, n_inputs: int,
        latency_ms: float, inputs: bytes | None, outputs: bytes,
    ) -> None:  # fmt: skip
        """`append` for the row of one answered `/predict`, written straight as bytes: the
        server's hot path (a dict, a time format and a JSON encoding per request cost a
        tenth of finance's requests/s). `vertical` and `version` are JSON strings already;
        a request id is a plain token (the server checked it), so it needs no escaping;
        `inputs` and `outputs` are JSON text."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second)).encode()
        line = b'{"request_id":"%s","vertical":%s,"model_version":%s,"created":"%s.%06d",' \
            b'"latency_ms":%.3f,"source":"api","n_inputs":%d}\t%s\t%s\n' % (
                request_id.encode(), vertical, version, self._stamp,
                int((now - second) * 1e6), latency_ms, n_inputs,
                _flat(inputs), _flat(outputs),
            )  # fmt: skip
        self._write(line)

    def _write(self, line: bytes) -> None:
        """Write a whole line or raise `OSError` (a full disk), never half of one: the
        rows end where the zeros start, so a gap would hide every later row."""
        with self._lock:
            if self._written + len(line) > self.rotate_bytes:
                self._rotate()
            done = 0
            while done < len(line):
                n = os.pwrite(self._fd, memoryview(line)[done:], self._written + done)
                if n <= 0:
                    raise OSError(f"the prediction log spool {self.path} took no more bytes")
                done += n
            self._written += done
            self._appends += 1
            if self._appends % MOVER_CHECK == 0 and self.mover is not None:
                self._keep_mover()

    def _rotate(self) -> None:
        """A new file first, then the old one closed: if the new one cannot be made, the
        old one stays in use (and a row that does not fit raises)."""
        old_fd, old_path, old_written, old_alive = self._fd, self.path, self._written, self._alive
        self._open_file()
        _finish(old_fd, old_path, old_written)
        old_alive.close()

    def _keep_mover(self) -> None:
        """Start the mover again if it died (rows are safe in the spool meanwhile)."""
        if self.mover is not None and self.mover.poll() is not None:
            log.warning("the prediction log's mover exited (%s); starting it again",
                        self.mover.returncode)  # fmt: skip
            self.mover = start_mover(self.database, self.folder, self.interval)

    def _close_file(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            _finish(fd, self.path, self._written)
            self._alive.close()

    def close(self, connection: Any | None = None) -> None:
        """Close the file and move what is left (through `connection`, or left to the
        mover, which moves it once this process is gone); stop the mover."""
        with self._lock:
            self._close_file()
        if connection is not None:
            try:
                move(self.path.with_suffix(DONE), connection, finished=True)
            except Exception as exc:  # noqa: BLE001 - the mover or the next reader moves it
                log.warning("the prediction log spool %s is left to move: %s", self.path, exc)
        if self.mover is not None and self.mover.poll() is None:
            self.mover.terminate()  # it moves what is left before it exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.mover.wait(timeout=30)


def _finish(fd: int, path: Path, written: int) -> None:
    """Close a spool file for good: its rows only (no trailing zeros), renamed `.done`."""
    try:
        os.ftruncate(fd, written)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rename(path, path.with_suffix(DONE))
    with contextlib.suppress(OSError):
        _alive_file(path).unlink()


def _alive_file(path: Path) -> Path:
    return path.with_name(path.with_suffix("").name + ".alive")


def _hold_alive(path: Path) -> Any:
    """A lock its writer holds for as long as it lives (the kernel lets go when the
    process ends, however it ends): the sign that a `.jsonl` spool is still in use, which
    a host name and a process id are not where containers share a host name."""
    handle = open(_alive_file(path), "a")  # noqa: SIM115 - held for the process's life
    if fcntl is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    return handle


def start_mover(database: Path, folder: Path, interval: float) -> subprocess.Popen:
    """A process that moves every spool of `folder` into `database` each `interval`
    seconds, until this process is gone (then once more). A process of its own: a thread
    here would take the interpreter lock from the event loop for each row it inserts
    (measured: 30% of finance's requests/s on 2 cores). Several servers' movers share the
    work through a lock file: one moves, the others stand by."""
    command = [sys.executable, "-m", "verticals.core.spool_mover", str(database), str(folder),
               str(os.getpid()), str(interval)]  # fmt: skip
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, close_fds=True)


_local_locks: dict[str, threading.Lock] = {}


def move_all(folder: Path, connection: Any, wait: bool = False) -> int:
    """Move every spool in `folder` (a killed server's too) through the DBAPI SQLite
    `connection`; rows moved. `wait`: for a file another process is moving, wait until it
    is done (a reader that must see every row) instead of leaving it to that process."""
    if not folder.is_dir():
        return 0
    moved = 0
    for path in sorted(folder.glob(f"*{SUFFIX}")) + sorted(folder.glob(f"*{DONE}")):
        finished = path.suffix == DONE or _dead(path)
        moved += move(path, connection, finished=finished, wait=wait)
        if finished and path.suffix == SUFFIX:
            with contextlib.suppress(OSError):
                _alive_file(path).unlink()
    return moved


def move(path: Path, connection: Any, finished: bool, wait: bool = False) -> int:
    """Move the complete lines of `path` past its recorded offset into `predictions`, with
    the new offset, in one transaction; delete a `finished` file once all of it is moved.
    Rows moved (0 when another process is moving it now and `wait` is false)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - held across the lock below
    except FileNotFoundError:
        return 0
    with handle:
        if not _try_lock(handle, path, wait):
            return 0
        try:
            if os.fstat(handle.fileno()).st_nlink == 0:  # moved whole and deleted meanwhile
                return 0
            return _move_locked(path, handle, connection, finished)
        finally:
            _unlock(handle, path)


def _move_locked(path: Path, handle: Any, connection: Any, finished: bool) -> int:
    """One write transaction (`BEGIN IMMEDIATE`: the offset read inside it, so two movers
    never move a line twice): each line split at its tabs, its small head parsed (the JSON
    parts go in as text), every row inserted by one `executemany`."""
    name = path.with_suffix(SUFFIX).name  # the same key before and after `.done`
    cursor = connection.cursor()
    try:
        if connection.in_transaction:
            connection.commit()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            found = cursor.execute(_OFFSET, (name,)).fetchone()
            start = int(found[0]) if found else 0
            handle.seek(start)
            data = handle.read()
            zeros = data.find(b"\0")  # the unwritten rest of a spool still in use
            if zeros >= 0:
                data = data[:zeros]
            end = data.rfind(b"\n") + 1  # a line still being written waits for the next move
            rows = [_row(line) for line in data[:end].split(b"\n") if line]
            if rows:
                cursor.executemany(_INSERT, rows)
                cursor.execute(_SET_OFFSET, (name, start + end))
            # finished: every whole line moved (a killed server's last line, cut short, was
            # never answered: the answer is sent once its line is written)
            gone = finished  # its offset row stays: a late mover of it moves nothing twice
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        if gone:
            path.unlink(missing_ok=True)
        return len(rows)
    finally:
        cursor.close()


def _row(line: bytes) -> tuple[Any, ...]:
    head, inputs, outputs = line.split(b"\t")
    fields = from_json(head)
    fields["inputs"] = inputs.decode() if inputs else None
    fields["outputs"] = outputs.decode() if outputs else None
    return tuple(fields.get(c) for c in _COLUMNS)


def _flat(text: str | bytes | None) -> bytes:
    """JSON text on one line without tabs (whitespace between its tokens; raw ones cannot
    be inside its strings); b"" for None."""
    if not text:
        return b""
    data = text.encode() if isinstance(text, str) else text
    if b"\n" in data or b"\t" in data or b"\r" in data:
        data = data.replace(b"\n", b" ").replace(b"\t", b" ").replace(b"\r", b" ")
    return data


_JSON_TEXT = ("inputs", "outputs")  # columns holding JSON text, spooled as JSON values
_COLUMNS = [c.name for c in tables.predictions.columns if c.name != "id"]
_INSERT = (
    f"INSERT INTO predictions ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_OFFSET = "SELECT offset FROM spool_offsets WHERE spool = ?"
_SET_OFFSET = (
    "INSERT INTO spool_offsets (spool, offset) VALUES (?, ?) "
    "ON CONFLICT (spool) DO UPDATE SET offset = excluded.offset"
)


def _sqlite_time(value: Any) -> Any:
    """A time as SQLAlchemy's SQLite DateTime stores it (so it reads back as one)."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else value


def _dead(path: Path) -> bool:
    """Whether the process that writes the `.jsonl` spool `path` is gone: nobody holds its
    `.alive` lock (or it has none left)."""
    alive = _alive_file(path)
    if fcntl is None or not alive.exists():
        return not alive.exists()
    try:
        handle = open(alive, "a")  # noqa: SIM115
    except OSError:
        return True
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return True


def _try_lock(handle: Any, path: Path, wait: bool = False) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True
    lock = _local_locks.setdefault(str(path.with_suffix(SUFFIX)), threading.Lock())
    return lock.acquire(blocking=wait)


def _unlock(handle: Any, path: Path) -> None:
    if fcntl is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    else:
        _local_locks[str(path.with_suffix(SUFFIX))].release()


def spool_folder(database: Path) -> Path:
    """Where the spools of the embedded log `database` are kept: beside it, by its name
    (two logs in one folder keep apart)."""
    return database.with_name(f"{database.name}-spool")
