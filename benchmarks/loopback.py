"""Loopback serving for benchmarks: a bundle under uvicorn in its own process, and a load."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from verticals.core.serving import BUNDLE_ENV


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(
    bundle_dir: Path,
    workers: int,
    timeout: float = 90.0,
    app: str = "verticals.core.serving:app_from_env",
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """The bundle served by uvicorn in its own process(es), as in production; yields the URL
    once `/health` answers (several workers each warm up before they take requests).

    A separate process keeps the load generator's threads from competing with the server
    for the same interpreter lock. `app` is an app factory (`module:function`), `env` adds
    to the server's environment (e.g. `VERTICALS_SERVE` for `serve.*` settings).
    """
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", app, "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, **(env or {}), BUNDLE_ENV: str(bundle_dir)}
    # serving speed against floors that log nothing: the log's own cost is predlog.py's
    env.setdefault("VERTICALS_LOG", "off")
    root = Path(__file__).resolve().parent.parent  # `benchmarks.floors` imports from here
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"the server did not answer {url}/health within {timeout:.0f} s")
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
