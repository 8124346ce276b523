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
def serving(bundle_dir: Path, workers: int, timeout: float = 90.0) -> Iterator[str]:
    """The bundle served by uvicorn in its own process(es), as in production; yields the URL.

    A separate process keeps the load generator's threads from competing with the server
    for the same interpreter lock.
    """
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "verticals.core.serving:app_from_env", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, BUNDLE_ENV: str(bundle_dir)}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
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
