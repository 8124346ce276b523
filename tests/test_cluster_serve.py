"""`verticals serve cluster=ray_local serve.replicas=2`: the same app (tokens, prediction
log) as two Ray Serve replicas behind one loopback address, both answering and logging
into one log, stopped by SIGTERM with exit 0."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from verticals.core import auth
from verticals.core.examples import EXAMPLES, example_body
from verticals.core.predlog import DB_FILE, LogSettings, PredictionLog

from .servers import free_port

pytest.importorskip("ray.serve")  # in CI (CI=true) a skip fails: the extra must be there


def _call(url: str, body: bytes | None = None, token: str | None = None) -> tuple[int, dict]:
    status, answer, _ = _call_with_ids(url, body, token)
    return status, answer


def _call_with_ids(
    url: str, body: bytes | None = None, token: str | None = None
) -> tuple[int, dict, list[str]]:
    """The status, the JSON body and the answer's `X-Request-ID` headers."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            ids = resp.headers.get_all("x-request-id") or []
            return resp.status, json.loads(resp.read() or b"{}"), ids
    except urllib.error.HTTPError as err:
        ids = err.headers.get_all("x-request-id") or []
        return err.code, json.loads(err.read() or b"{}"), ids


def _wait_ready(base: str, server: subprocess.Popen, log: Path, seconds: float = 150) -> None:
    """Until `/ready` answers 200 and the command says where it listens (all replicas up)."""
    deadline = time.monotonic() + seconds
    while True:
        text = log.read_text()
        assert server.poll() is None, f"server exited: {text[-3000:]}"
        try:
            if "Ray Serve: " in text and _call(f"{base}/ready")[0] == 200:
                return
        except OSError:  # not listening yet
            pass
        assert time.monotonic() < deadline, f"not ready in {seconds:.0f} s: {text[-3000:]}"
        time.sleep(0.5)


def _answering_pids(database: Path) -> set[str]:
    """The processes whose spools were moved into the log (`<host>-<pid>-<random>.jsonl`)."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT spool FROM spool_offsets WHERE offset > 0").fetchall()
    return {name.rsplit("-", 2)[-2] for (name,) in rows}


def test_two_ray_serve_replicas_share_tokens_and_log(tiny, tmp_path: Path) -> None:
    _, bundle = tiny("finance")
    token, _ = auth.create(tmp_path / "tokens" / "finance.tokens", "predict", "app")
    body = json.dumps(json.loads(example_body(bundle / EXAMPLES))[:1]).encode()
    port, log = free_port(), tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "verticals", "serve", "finance", f"bundle={bundle}",
             "cluster=ray_local", "serve.replicas=2", f"serve.port={port}",
             f"paths.root_dir={tmp_path}"],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, server, log)
        if sys.platform == "linux":  # bound to 127.0.0.1, not every address (0.0.0.0)
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.2", port), timeout=5).close()
        status, refused = _call(f"{base}/predict", body)
        assert status == 401 and "bearer token" in refused["message"]
        status, answer, once = _call_with_ids(f"{base}/predict", body, token)
        assert status == 200 and once == [answer["request_id"]], (answer, once)
        ids, pids = [answer["request_id"]], set()
        database = tmp_path / "predlog" / DB_FILE
        plog = PredictionLog(LogSettings.default(tmp_path / "predlog"), migrate_schema=False)
        try:
            for _ in range(5):  # concurrent requests: Serve's router spreads them out
                with ThreadPoolExecutor(20) as pool:
                    answers = list(pool.map(lambda _: _call(f"{base}/predict", body, token),
                                            range(20)))  # fmt: skip
                assert {status for status, _ in answers} == {200}, answers[:3]
                ids += [a["request_id"] for _, a in answers]
                found = plog.find("finance", ids)  # moves the spools first
                assert set(found) == set(ids)  # every answer is in the one log
                pids = _answering_pids(database)
                if len(pids) >= 2:
                    break
        finally:
            plog.close()
        assert len(pids) == 2, f"answered by the processes {pids}, not two replicas"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, log.read_text()[-3000:]
        text = log.read_text()
        assert "2 replicas of finance" in text and f"http://127.0.0.1:{port}" in text
        assert "Traceback" not in text, text[-3000:]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(30)
        with contextlib.suppress(ProcessLookupError):  # Ray's, should any outlive it
            os.killpg(server.pid, signal.SIGKILL)
