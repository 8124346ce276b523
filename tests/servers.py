"""Helpers for tests that start real servers on loopback and call them over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(url: str, body: bytes | None = None) -> tuple[int, bytes]:
    """GET `url` (POST `body` as JSON when given): the status and the body, errors included."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_ready(base: str, server: subprocess.Popen, seconds: float = 120) -> None:
    """Poll `base`/ready until it answers 200; fail if the server exits or takes too long."""
    deadline = time.monotonic() + seconds
    while True:
        if server.poll() is not None:
            log = server.stderr.read()[-2000:] if server.stderr else "(its log went to a file)"
            raise AssertionError(f"server exited: {log}")
        try:
            if http(f"{base}/ready")[0] == 200:
                return
        except OSError:  # not listening yet
            pass
        assert time.monotonic() < deadline, f"server not ready within {seconds:.0f} s"
        time.sleep(0.5)


class Pointer:
    """A `follow` for tests: the bundle folder named in a file, rewritten as a registry's
    champion alias is moved (None while the file is empty)."""

    def __init__(self, file: Path, target: Path | None = None) -> None:
        self.file = Path(file)
        if target is not None:
            self.point(target)

    def point(self, target: Path | None) -> None:
        tmp = self.file.with_name(f".{self.file.name}.tmp")
        tmp.write_text("" if target is None else str(target))
        os.replace(tmp, self.file)  # a reader sees the old name or the new one, never half

    def __call__(self) -> Path | None:
        text = self.file.read_text().strip() if self.file.exists() else ""
        return Path(text) if text else None


@contextmanager
def serving_in_thread(app: Any, seconds: float = 30) -> Iterator[tuple[str, uvicorn.Server]]:
    """`app` served by uvicorn on a free loopback port, in a thread of this process (its
    lifespan runs; no signal handlers): the base URL and the server, once it has started."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + seconds
    try:
        while not server.started:
            assert thread.is_alive(), "the server thread ended before it started"
            assert time.monotonic() < deadline, f"server not started within {seconds:.0f} s"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(30)


def run_cli(*args: str) -> int:
    """`verticals <args>` in this process; its exit code (0 when it returns)."""
    from verticals.cli import main

    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


_SESSION = """
import json, sys
from verticals.cli import main
for i, args in enumerate(json.loads(sys.argv[1])):
    for stream in (sys.stdout, sys.stderr):
        print(f"\\n\\x00{i}\\x00", file=stream, flush=True)
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    print(f"\\n\\x00rc {code}\\x00", file=sys.stdout, flush=True)
"""


def cli_session(
    cwd: Path, *commands: list[str], env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (), timeout: float = 600,
) -> list[subprocess.CompletedProcess[str]]:  # fmt: skip
    """`verticals` commands typed one after another, run in one new Python process (as
    many processes would run them, without paying the imports each time): one result per
    command, with its own exit code, stdout and stderr. `prefix` goes before the
    interpreter (`unshare -n`)."""
    script = [*prefix, sys.executable, "-c", _SESSION, json.dumps([list(c) for c in commands])]
    done = subprocess.run(
        script, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )  # fmt: skip
    outs = done.stdout.split("\x00")[1:]  # "0", out, "rc 0", "", "1", out, "rc 2", ...
    errs = done.stderr.split("\x00")[1:]
    results = []
    for i, command in enumerate(commands):
        try:
            out, code = outs[4 * i + 1], int(outs[4 * i + 2].removeprefix("rc "))
        except (IndexError, ValueError):  # the process died in this command: the last one
            tail = done.stdout[-4000:] + done.stderr[-4000:]
            results.append(subprocess.CompletedProcess(command, done.returncode or 1, tail, tail))
            break
        err = errs[2 * i + 1] if len(errs) > 2 * i + 1 else ""
        results.append(subprocess.CompletedProcess(["verticals", *command], code, out, err))
    return results
