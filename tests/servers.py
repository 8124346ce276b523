"""Helpers for tests that start real servers on loopback and call them over HTTP."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request


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
        assert server.poll() is None, f"server exited: {server.stderr.read()[-2000:]}"
        try:
            if http(f"{base}/ready")[0] == 200:
                return
        except OSError:  # not listening yet
            pass
        assert time.monotonic() < deadline, f"server not ready within {seconds:.0f} s"
        time.sleep(0.5)
