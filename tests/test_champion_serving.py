"""`verticals serve` follows the registry's champion: train -> package -> promote -> serve
-> promote another -> the server answers with it; rollback -> the old one answers again;
all while requests keep coming, with one server process or several."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from verticals.core import model_versions, pipeline
from verticals.core.bundle import write_bundle
from verticals.core.examples import EXAMPLES, example_body
from verticals.core.tracking import Store

from .conftest import finance_cfg
from .servers import free_port, http, wait_ready

SMALL = ["data=synthetic", "data.n_rows=1500", "model.num_boost_round=30"]
RELOAD_S = 0.5


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Store, dict[int, str]]:
    """A working folder whose store holds versions 1 (champion) and 2 of finance."""
    root = tmp_path_factory.mktemp("champion")
    store = Store.of(finance_cfg(root))
    names = {}
    for seed in (1, 2):
        result = pipeline.train(finance_cfg(root, *SMALL, f"seed={seed}"))
        bundle = write_bundle(result.run_dir, root / "bundles")
        number, _ = model_versions.register(store, bundle, "finance")
        names[number] = bundle.name
    return root, store, names


def _serve(root: Path, *overrides: str, reload: object = RELOAD_S) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log_path = root / f"serve-{port}.log"  # a pipe nobody reads would fill up and stall it
    args = ["serve", "finance", f"serve.port={port}", f"serve.reload_seconds={reload}"]
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "verticals", *args, *overrides],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    server.log_path = log_path  # type: ignore[attr-defined]
    base = f"http://127.0.0.1:{port}"
    wait_ready(base, server)
    return server, base


def _stop(server: subprocess.Popen) -> str:
    """Stop the server; what it logged."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    log = Path(server.log_path)  # type: ignore[attr-defined]
    text = log.read_text()
    log.unlink()
    return text


def _record(root: Path) -> bytes:
    bundle = next(p for p in (root / "bundles" / "finance").iterdir() if p.is_dir())
    return json.dumps(json.loads(example_body(bundle / EXAMPLES))[:1]).encode()


def _version(base: str, body: bytes) -> str:
    status, answer = http(f"{base}/predict", body)
    assert status == 200, answer[:500]
    return json.loads(answer)["model_version"]


def _wait_for(base: str, body: bytes, name: str, seconds: float = 20) -> float:
    started = time.monotonic()
    while _version(base, body) != name:
        assert time.monotonic() - started < seconds, f"still not serving {name}"
        time.sleep(0.05)
    return time.monotonic() - started


def test_the_server_follows_promotions_and_rollbacks(registry) -> None:
    root, store, names = registry
    model_versions.promote(store, "finance", 1, reason="start")
    server, base = _serve(root)
    body = _record(root)
    try:
        assert _version(base, body) == names[1]
        model_versions.promote(store, "finance", 2, reason="better")
        assert _wait_for(base, body, names[2]) < RELOAD_S + 10
        meta = json.loads(http(f"{base}/metadata")[1])
        assert meta["model_version"] == names[2]
        model_versions.rollback(store, "finance", reason="back")
        _wait_for(base, body, names[1])
        metrics = http(f"{base}/metrics")[1].decode()
        for name in names.values():
            assert f'model_version="{name}"' in metrics
    finally:
        err = _stop(server)
    assert "now serving" in err


def test_no_request_fails_while_the_champion_moves_twice(registry) -> None:
    """4 clients send requests without pause (at least 2,000 in all) while the champion
    moves 1 -> 2 -> 1. Every answer is 200 from one of the two versions, and each client
    sees the versions change only in the order of the promotions (never back and forth)."""
    root, store, names = registry
    model_versions.promote(store, "finance", 1, reason="start")
    server, base = _serve(root)
    body = _record(root)
    seen: list[list[str]] = [[] for _ in range(4)]
    errors: list[str] = []
    moved = threading.Event()  # both promotions done and served

    def client(k: int) -> None:
        deadline = time.monotonic() + 180
        while not (moved.is_set() and sum(map(len, seen)) >= 2000):
            status, answer = http(f"{base}/predict", body)
            if status != 200 or time.monotonic() > deadline:
                errors.append(f"{status}: {answer[:200]!r}")
                return
            seen[k].append(json.loads(answer)["model_version"])

    def served(name: str, after: int = 0) -> bool:
        return all(name in versions[after:] for versions in seen)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        model_versions.promote(store, "finance", 2, reason="load test")
        _until(lambda: served(names[2]) or bool(errors))
        mark = min(map(len, seen))
        model_versions.promote(store, "finance", 1, reason="load test, back")
        _until(lambda: served(names[1], after=mark) or bool(errors))
        moved.set()
        for thread in threads:
            thread.join(timeout=240)
    finally:
        moved.set()
        _stop(server)
    assert not errors, errors[:3]
    assert sum(map(len, seen)) >= 2000
    order = [names[1], names[2], names[1]]
    for versions in seen:
        runs = [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]
        assert runs == order, runs


def _until(done, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _all_answer(base: str, body: bytes, name: str, seconds: float = 90) -> None:
    """Until 30 answers in a row come from `name` (whichever worker takes each)."""
    deadline = time.monotonic() + seconds
    while not all(_version(base, body) == name for _ in range(30)):
        assert time.monotonic() < deadline, f"not every worker serves {name}"
        time.sleep(0.2)


def test_every_worker_follows_the_champion(registry) -> None:
    root, store, names = registry
    body = _record(root)
    model_versions.promote(store, "finance", 1, reason="start")
    server, base = _serve(root, "serve.workers=2")  # each worker asks every 0.5 s
    try:
        model_versions.promote(store, "finance", 2, reason="workers")
        _all_answer(base, body, names[2])
    finally:
        _stop(server)
    # no interval: SIGHUP to the parent replaces each worker with one that asks afresh
    server, base = _serve(root, "serve.workers=2", reload="null")
    try:
        model_versions.promote(store, "finance", 1, reason="hup")
        time.sleep(2 * RELOAD_S)
        assert {_version(base, body) for _ in range(20)} == {names[2]}  # nobody asked yet
        os.kill(server.pid, signal.SIGHUP)
        _all_answer(base, body, names[1])
        assert json.loads(http(f"{base}/ready")[1])["ready"] is True
    finally:
        _stop(server)


def test_a_champion_that_fails_to_load_leaves_the_old_one_serving(registry) -> None:
    root, store, names = registry
    model_versions.promote(store, "finance", 1, reason="start")
    server, base = _serve(root, reload="null")  # checks on SIGHUP only
    body = _record(root)
    model_file = root / "bundles" / "finance" / names[2] / "model" / "lightgbm.txt"
    intact = model_file.read_bytes()
    try:
        model_versions.promote(store, "finance", 2, reason="to be damaged")
        model_file.write_bytes(intact + b"\n")  # damaged after it was promoted
        os.kill(server.pid, signal.SIGHUP)
        _until(lambda: json.loads(http(f"{base}/metadata")[1])["reload_error"])
        assert {_version(base, body) for _ in range(10)} == {names[1]}
        assert http(f"{base}/ready")[0] == 200
        model_file.write_bytes(intact)  # repaired: the next SIGHUP loads it
        os.kill(server.pid, signal.SIGHUP)
        _wait_for(base, body, names[2])
    finally:
        model_file.write_bytes(intact)
        err = _stop(server)
    assert "ERROR" in err and "lightgbm.txt" in err


def test_no_champion_falls_back_to_the_latest_bundle(tmp_path: Path) -> None:
    result = pipeline.train(finance_cfg(tmp_path, *SMALL, "tracking=none"))
    write_bundle(result.run_dir, tmp_path / "bundles")
    server, base = _serve(tmp_path)
    try:
        assert _version(base, _record(tmp_path)) == result.run_dir.name
    finally:
        err = _stop(server)
    assert "serving the latest bundle" in err
