"""Servers follow the champion: a running server swaps the model version it serves for the
one its `follow` names (every `serve.reload_seconds`, or on SIGHUP) without dropping or
failing a request. Each answer names the version that gave it; a bundle that cannot be
served is logged and counted, and the server keeps its version."""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from omegaconf import OmegaConf

from verticals.core import pipeline
from verticals.core.bundle import load_bundle, write_bundle
from verticals.core.config import ConfigValueError, ServeConfig
from verticals.core.predlog import LogSettings, PredictionLog
from verticals.core.serving import (
    BUNDLE_ENV,
    FOLLOW_ENV,
    SERVE_ENV,
    app_from_env,
    create_app,
    options_to_env,
)

from .servers import Pointer, free_port, http, serving_in_thread, wait_ready

ROOT = Path(__file__).resolve().parent.parent
RELOADS = "verticals_model_reloads_total"

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def toy_bundles(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three toy bundles from runs on different seeds: each its threshold and its name."""
    root = tmp_path_factory.mktemp("toys")
    bundles = []
    for seed in (1, 2, 3):
        cfg = {"vertical": "toy", "seed": seed, "trainer": {"device": "cpu", "precision": "auto"}}
        run = pipeline.train(OmegaConf.create({**cfg, "paths": {"runs_dir": str(root / "runs")}}))
        bundles.append(write_bundle(run.run_dir, root / "bundles"))
    assert len({b.name for b in bundles}) == len({_threshold(b) for b in bundles}) == 3
    return bundles


def _threshold(bundle: Path) -> float:
    return float(json.loads((bundle / "model" / "toy.json").read_text())["threshold"])


def _metric(text: str, name: str, **labels: str) -> float:
    inside = ",".join(f'{key}="{value}"' for key, value in labels.items())
    found = re.search(rf"^{re.escape(f'{name}{{{inside}}}')} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _wait(condition: Callable[[], Any], seconds: float = 10, what: str = "it") -> float:
    """Poll `condition` until it holds; the seconds that took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"{what}: not within {seconds:.0f} s"
        time.sleep(0.02)
    return time.monotonic() - started


class Answers:
    """`/predict` through a test client, each answer checked to name one version in its
    body and header, and to come from that version's model; counted per version."""

    def __init__(self, client: TestClient, bundles: list[Path]) -> None:
        self.client, self.counts = client, Counter[str]()
        self.thresholds = {b.name: _threshold(b) for b in bundles}

    def version(self, x: float = 1.0) -> str:
        response = self.client.post("/predict", json={"x": x})
        assert response.status_code == 200, response.text
        version = response.headers["x-model-version"]
        body = response.json()
        assert body["model_version"] == version
        assert body["predictions"][0]["margin"] == x - self.thresholds[version]
        self.counts[version] += 1
        return version

    def until(self, version: str, seconds: float = 10) -> float:
        return _wait(lambda: self.version() == version, seconds, f"answers from {version}")


def test_a_server_swaps_to_the_version_it_follows_and_back(
    toy_bundles: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Within an interval of the pointer's move, answers come from the new version, which
    every endpoint names; the old version, micro-batcher and all, is freed."""
    a, b = toy_bundles[:2]
    pointer = Pointer(tmp_path / "champion", a)
    options = ServeConfig(reload_seconds=0.2, batching="on")  # type: ignore[arg-type]
    log = LogSettings.default(tmp_path / "log")
    app = create_app(a, options=options, follow=pointer, prediction_log=log)
    with TestClient(app) as client:
        answers = Answers(client, toy_bundles)
        assert [answers.version(x) for x in (-1.0, 0.5, 3.0)] == [a.name] * 3
        first = weakref.ref(app.state.served)
        pointer.point(b)
        answers.until(b.name, seconds=30)  # one interval (0.2 s); room for busy cores
        _wait(lambda: app.state.versions.retiring == 0, 10, "A closed")
        freed = lambda: gc.collect() >= 0 and first() is None  # noqa: E731
        _wait(freed, 5, "A freed")  # nothing holds A's model any more
        assert app.state.served.bundle.model_version == b.name
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["model_version"] == b.name
        meta = client.get("/metadata").json()
        assert meta["model_version"] == b.name and meta["follows"] == "pointer"
        assert meta["checked"] and meta["reload_seconds"] == 0.2 and meta["reload_error"] is None
        bad = client.post("/predict", json={"x": "many"})
        assert bad.status_code == 422 and bad.headers["x-model-version"] == b.name
        answers.counts[b.name] += 1  # the next request's, counted like the others
        client.post("/predict", json={"x": 1.0}, headers={"X-Request-ID": "after-swap"})
        fb = client.post("/feedback", json=[{"request_id": "after-swap", "y": 1}])
        assert fb.status_code == 200
        (logged,) = PredictionLog(log).entries("toy", outcomes_only=True)
        assert logged.model_version == b.name and logged.outcome == {"y": 1}

        pointer.point(a)  # a rollback is a swap like any other
        answers.until(a.name)
        metrics = client.get("/metrics").text
    for version, count in answers.counts.items():
        assert _metric(metrics, "verticals_predictions_total", model_version=version) == count
    assert _metric(metrics, RELOADS, outcome="swapped") == 2
    assert _metric(metrics, RELOADS, outcome="failed") == 0
    assert "destroyed but it is pending" not in caplog.text  # the batcher's task was ended


def test_swaps_under_load_drop_no_request(toy_bundles: list[Path], tmp_path: Path) -> None:
    """Six clients send 2,000 requests without pause to a real server while the pointer
    moves A -> B -> C: every answer is a 200 from the model it names, and no client ever
    sees an older version after a newer one."""
    names = [b.name for b in toy_bundles]
    thresholds = {b.name: _threshold(b) for b in toy_bundles}
    pointer = Pointer(tmp_path / "champion", toy_bundles[0])
    app = create_app(toy_bundles[0], options=ServeConfig(reload_seconds=0.05), follow=pointer)
    total, clients = 2000, 6
    sent, seen = [0], set[str]()
    lock = threading.Lock()
    answers: list[list[tuple[float, int, str | None, bytes]]] = [[] for _ in range(clients)]
    give_up = time.monotonic() + 60

    def send(port: int, mine: list[tuple[float, int, str | None, bytes]]) -> None:
        conn = HTTPConnection("127.0.0.1", port, timeout=30)  # keep-alive
        try:
            while True:
                with lock:  # 2,000 in all, and on until the last version has answered
                    if sent[0] >= total and (names[-1] in seen or time.monotonic() > give_up):
                        return
                    sent[0] += 1
                    x = float(sent[0] % 97) - 48.0
                conn.request(
                    "POST", "/predict", json.dumps({"x": x}), {"Content-Type": "application/json"}
                )
                response = conn.getresponse()
                version, data = response.getheader("x-model-version"), response.read()
                mine.append((x, response.status, version, data))
                if response.status == 200 and version:
                    seen.add(version)
        finally:
            conn.close()

    started = time.monotonic()
    with serving_in_thread(app) as (base, _):
        port = urlsplit(base).port
        assert port is not None
        threads = [threading.Thread(target=send, args=(port, mine)) for mine in answers]
        for thread in threads:
            thread.start()
        _wait(lambda: sent[0] >= 300, 30, "300 requests")
        pointer.point(toy_bundles[1])
        _wait(lambda: names[1] in seen and sent[0] >= 900, 30, "B under load")
        pointer.point(toy_bundles[2])
        for thread in threads:
            thread.join(60)
        _wait(lambda: app.state.versions.retiring == 0, 10, "old versions closed")
        metrics = http(f"{base}/metrics")[1].decode()
    assert time.monotonic() - started < 180  # bounded: a stuck swap would hang here

    flat = [answer for mine in answers for answer in mine]
    assert len(flat) == sent[0] >= total and seen == set(names)  # each request answered
    for mine in answers:
        versions = []
        for x, status, version, data in mine:
            assert status == 200, data
            body = json.loads(data)
            assert body["model_version"] == version
            assert body["predictions"][0]["margin"] == x - thresholds[version]
            versions.append(version)
        runs = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
        steps = [names.index(v) for v in runs]  # in promotion order, none skipped back
        assert steps == list(range(steps[0], steps[0] + len(steps))), runs
    by_version = Counter(version for _, _, version, _ in flat)
    for version in names:
        scored = _metric(metrics, "verticals_predictions_total", model_version=version)
        assert scored == by_version[version]
    assert _metric(metrics, RELOADS, outcome="swapped") == 2


def test_requests_in_flight_finish_on_the_version_that_took_them(
    toy_bundles: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request still running on A when B is swapped in is answered by A; A's threads are
    shut down only after that answer."""
    a = load_bundle(toy_bundles[0])
    real = a.vertical.predict
    entered, release = threading.Event(), threading.Event()

    def held(model: Any, frame: Any) -> Any:  # holds the one request with x=42 on A
        if model is a.model and list(frame["x"]) == [42.0]:
            entered.set()
            release.wait(20)
        return real(model, frame)

    monkeypatch.setattr(a.vertical, "predict", held)
    pointer = Pointer(tmp_path / "champion", a.path)
    app = create_app(a, options=ServeConfig(reload_seconds=0.05), follow=pointer)
    old = app.state.served
    slow: list[tuple[int, bytes]] = []
    with serving_in_thread(app) as (base, _):
        waiting = threading.Thread(target=lambda: slow.append(http(f"{base}/predict", b'{"x":42}')))
        waiting.start()
        assert entered.wait(10)
        pointer.point(toy_bundles[1])
        latest = lambda: json.loads(http(f"{base}/predict", b'{"x": 1}')[1])["model_version"]  # noqa: E731
        _wait(lambda: latest() == toy_bundles[1].name, 10, "answers from B")
        assert old.active == 1 and old.pool.running and app.state.versions.retiring == 1
        release.set()
        waiting.join(10)
        _wait(lambda: app.state.versions.retiring == 0, 10, "A closed")
    status, body = slow[0]
    assert status == 200 and json.loads(body)["model_version"] == a.model_version
    assert json.loads(body)["predictions"][0]["margin"] == 42.0 - a.model["threshold"]
    assert old.active == 0 and not old.pool.running


def test_a_damaged_bundle_is_refused_and_the_server_keeps_its_version(
    toy_bundles: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = toy_bundles[:2]
    damaged = shutil.copytree(toy_bundles[2], tmp_path / "copies" / toy_bundles[2].name)
    (damaged / "model" / "toy.json").write_text('{"threshold": 99.0}')  # after packaging
    pointer = Pointer(tmp_path / "champion", a)
    app = create_app(a, options=ServeConfig(reload_seconds=0.05), follow=pointer)
    metrics = lambda: client.get("/metrics").text  # noqa: E731
    with caplog.at_level(logging.INFO, logger="verticals"), TestClient(app) as client:
        answers = Answers(client, toy_bundles)
        pointer.point(damaged)
        _wait(lambda: _metric(metrics(), RELOADS, outcome="failed") == 1, 10, "the failure")
        time.sleep(0.5)  # ten more checks: the same folder is not tried on each one
        assert _metric(metrics(), RELOADS, outcome="failed") == 1
        assert answers.version() == a.name and client.get("/ready").status_code == 200
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, errors
        assert damaged.name in errors[0] and "model/toy.json" in errors[0]
        assert f"still serving {a.name}" in errors[0] and "\n" not in errors[0]
        assert "model/toy.json" in client.get("/metadata").json()["reload_error"]

        assert client.portal.call(app.state.reload) is False  # SIGHUP's check tries again
        assert _metric(metrics(), RELOADS, outcome="failed") == 2

        pointer.point(b)  # a good bundle: swapped in
        answers.until(b.name)
        assert client.get("/metadata").json()["reload_error"] is None
        assert _metric(metrics(), RELOADS, outcome="swapped") == 1
    assert f"now serving {b.name} (was {a.name})" in caplog.text


def test_a_follow_that_fails_is_logged_once_and_asked_again(
    toy_bundles: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A registry that is down: one error while it lasts, the server keeps its version,
    and the next answer after it is back is followed."""
    a, b = toy_bundles[:2]
    pointer, down = Pointer(tmp_path / "champion", a), [True]

    def champion() -> Path | None:
        if down[0]:
            raise ConnectionError("the registry at http://mlflow:5000 does not answer")
        return pointer()

    app = create_app(a, options=ServeConfig(reload_seconds=0.05), follow=champion)
    metrics = lambda: client.get("/metrics").text  # noqa: E731
    with caplog.at_level(logging.INFO, logger="verticals"), TestClient(app) as client:
        answers = Answers(client, toy_bundles)
        _wait(lambda: client.get("/metadata").json()["reload_error"], 10, "the failure")
        time.sleep(0.5)  # ten more checks, each failing the same way
        assert _metric(metrics(), RELOADS, outcome="failed") == 1
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "ConnectionError: the registry" in errors[0], errors
        assert answers.version() == a.name
        pointer.point(b)
        down[0] = False
        answers.until(b.name)
        assert client.get("/metadata").json()["reload_error"] is None
    assert "champion answers again" in caplog.text


SERVER = """
import sys
from pathlib import Path

from verticals.core import registry
from verticals.core.bundle import load_bundle
from verticals.core.config import ServeConfig
from verticals.core.serving import run_server
from tests.servers import Pointer
from tests.toy_vertical import ToyVertical

registry.register(ToyVertical())
fallback, pointer, port = sys.argv[1:]
settings = ServeConfig(port=int(port), reload_seconds=None, log_level="warning")
run_server(load_bundle(fallback), settings, follow=Pointer(Path(pointer)))
"""


def test_sighup_makes_a_server_process_ask_at_once(toy_bundles: list[Path], tmp_path: Path) -> None:
    """`run_server` with a follow: the process starts on the version it names (not on the
    fallback), does not poll with `reload_seconds` null, and swaps on SIGHUP."""
    fallback, named, promoted = toy_bundles
    pointer = Pointer(tmp_path / "champion", named)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(fallback), str(pointer.file), str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    version = lambda: json.loads(http(f"{base}/predict", b'{"x": 1}')[1])["model_version"]  # noqa: E731
    try:
        wait_ready(base, server, 60)
        assert version() == named.name
        pointer.point(promoted)
        time.sleep(0.5)
        assert version() == named.name  # nobody asked yet
        os.kill(server.pid, signal.SIGHUP)
        _wait(lambda: version() == promoted.name, 15, "the swap after SIGHUP")
        assert server.poll() is None and http(f"{base}/ready")[0] == 200
        assert json.loads(http(f"{base}/metadata")[1])["follows"] == "pointer"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_worker_processes_start_on_the_followed_version(
    toy_bundles: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`VERTICALS_FOLLOW` (a Champion in production; a pointer file here) makes each worker
    serve the version it names from the start, and follow it; `VERTICALS_BUNDLE` is the
    fallback when that version cannot be served."""
    from verticals.core import model_versions

    fallback, named, promoted = toy_bundles
    pointer = Pointer(tmp_path / "champion", named)
    monkeypatch.setattr(
        model_versions.Champion, "from_env", classmethod(lambda cls, v: Pointer(Path(v)))
    )
    monkeypatch.setenv(BUNDLE_ENV, str(fallback))
    monkeypatch.setenv(FOLLOW_ENV, str(pointer.file))
    monkeypatch.setenv(SERVE_ENV, options_to_env(ServeConfig(reload_seconds=0.05)))
    monkeypatch.setenv("VERTICALS_LOG_DIR", str(tmp_path / "log"))
    with TestClient(app_from_env()) as client:
        answers = Answers(client, toy_bundles)
        assert answers.version() == named.name
        pointer.point(promoted)
        answers.until(promoted.name)

    damaged = shutil.copytree(named, tmp_path / "copies" / named.name)
    (damaged / "metrics.json").write_text("{}")
    pointer.point(damaged)
    with TestClient(app_from_env()) as client:
        assert Answers(client, toy_bundles).version() == fallback.name


@pytest.mark.slow
def test_a_replaced_version_stops_its_big_request_process(
    finance_run: pipeline.TrainResult, tmp_path: Path
) -> None:
    """The process that scores big bodies belongs to its version: the new one starts its
    own, and the old one's ends once the swap is done."""
    retrained = shutil.copytree(finance_run.run_dir, tmp_path / "runs" / "finance" / "retrained")
    a = write_bundle(finance_run.run_dir, tmp_path / "bundles")
    b = write_bundle(retrained, tmp_path / "bundles")
    frame = finance_run.vertical.example_inputs(finance_run.splits, 30)
    body = frame.to_json(orient="records").encode()
    pointer = Pointer(tmp_path / "champion", a)
    options = ServeConfig(big_request_kib=1, reload_seconds=0.05)
    with TestClient(create_app(a, options=options, follow=pointer)) as client:
        app = client.app
        big = client.post("/predict", content=body, headers=JSON)
        assert big.status_code == 200 and big.headers["x-model-version"] == a.name
        old = app.state.served  # type: ignore[attr-defined]
        child = old.offload.pid
        assert child is not None and child != os.getpid()
        pointer.point(b)
        _wait(
            lambda: (
                client.post("/predict", content=body, headers=JSON).headers["x-model-version"]
                == b.name
            )
        )
        again = client.post("/predict", content=body, headers=JSON)
        assert again.json()["predictions"] == big.json()["predictions"]  # the same model
        assert app.state.served.offload.pid not in (None, child)  # type: ignore[attr-defined]
        _wait(lambda: _gone(child), 15, "the old version's big-request process")
        assert not old.pool.running


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_reload_seconds_is_checked() -> None:
    with pytest.raises(ConfigValueError, match="reload_seconds=-1"):
        ServeConfig(reload_seconds=-1)
    assert ServeConfig(reload_seconds=None).reload_seconds is None
