"""Serving that sees its failures: 500s counted with a request id, readiness after a
warm-up on the bundle's examples, `/metrics` that adds up across worker processes, and
bundles of the old layout refused with one line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from omegaconf import OmegaConf

from verticals.core import pipeline
from verticals.core.bundle import MANIFEST, load_bundle, sha256, write_bundle
from verticals.core.errors import UserError
from verticals.core.serving import create_app

from .conftest import finance_cfg
from .servers import free_port, http, wait_ready


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> pipeline.TrainResult:
    runs = tmp_path_factory.mktemp("toy") / "runs"
    cfg = {"vertical": "toy", "seed": 3, "trainer": {"device": "cpu", "precision": "auto"}}
    return pipeline.train(OmegaConf.create({**cfg, "paths": {"runs_dir": str(runs)}}))


def _count(metrics: str, path: str, status: str) -> float:
    found = re.search(
        rf'verticals_requests_total\{{path="{re.escape(path)}",status="{status}"\}} (\S+)', metrics
    )
    return float(found.group(1)) if found else 0.0


def test_unhandled_error_is_a_counted_500_with_request_id(
    toy_run: pipeline.TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = load_bundle(write_bundle(toy_run.run_dir, tmp_path / "bundles"))
    client = TestClient(create_app(bundle))

    def broken(model: object, frame: object) -> None:
        raise RuntimeError("a bug in the model code")

    monkeypatch.setattr(bundle.vertical, "predict", broken)
    resp = client.post("/predict", json={"x": 1.0}, headers={"X-Request-ID": "client-42"})
    assert resp.status_code == 500
    assert resp.json()["request_id"] == "client-42" == resp.headers["x-request-id"]
    assert "bug" not in resp.text  # the traceback goes to the log, not to the client
    odd = client.post("/predict", json={"x": 1.0}, headers={"X-Request-ID": "a b\x7f" * 60})
    assert odd.status_code == 500 and re.fullmatch(r"[0-9a-f]{32}", odd.json()["request_id"])
    assert client.get("/health").status_code == 200  # the process lives on
    assert _count(client.get("/metrics").text, "/predict", "500") == 2.0


def test_ready_after_warm_up_on_the_bundle_examples(
    toy_run: pipeline.TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle_dir = write_bundle(toy_run.run_dir, tmp_path / "bundles")
    assert (bundle_dir / "examples" / "inputs.parquet").is_file()
    bundle = load_bundle(bundle_dir)
    seen: list[int] = []
    real = bundle.vertical.predict

    def counting(model: object, frame: object) -> object:
        seen.append(len(frame))  # type: ignore[arg-type]
        return real(model, frame)

    monkeypatch.setattr(bundle.vertical, "predict", counting)
    app = create_app(bundle)
    assert seen == [2]  # the warm-up scored the two saved examples before serving
    ready = TestClient(app).get("/ready")
    assert ready.status_code == 200 and ready.json()["state"] == "serving"
    app.state.serving.ready, app.state.serving.phase = False, "reloading"
    assert TestClient(app).get("/ready").status_code == 503

    monkeypatch.setattr(bundle.vertical, "predict", lambda m, f: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # a model that cannot score its examples
        create_app(bundle)


def test_a_server_is_not_ready_while_it_warms_up(
    toy_run: pipeline.TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Servers warm up in the background: /health answers and /ready says 503 meanwhile;
    a model that fails on its examples is never ready, and /ready says why."""
    bundle = load_bundle(write_bundle(toy_run.run_dir, tmp_path / "bundles"))
    real = bundle.vertical.predict
    release = threading.Event()

    def slow(model: object, frame: object) -> object:
        release.wait(10)
        return real(model, frame)

    monkeypatch.setattr(bundle.vertical, "predict", slow)
    with TestClient(create_app(bundle, warm="background")) as client:
        assert client.get("/health").status_code == 200
        waiting = client.get("/ready")
        assert waiting.status_code == 503 and waiting.json()["state"] == "warming up"
        release.set()
        deadline = time.monotonic() + 10
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "not ready 10 s after the warm-up could finish"
            time.sleep(0.05)

    monkeypatch.setattr(bundle.vertical, "predict", lambda m, f: 1 / 0)
    with TestClient(create_app(bundle, warm="background")) as client:
        deadline = time.monotonic() + 10
        while "failed" not in (state := client.get("/ready").json()["state"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.get("/ready").status_code == 503 and "ZeroDivisionError" in state


def test_old_layout_bundle_is_refused_in_one_line(
    toy_run: pipeline.TrainResult, tmp_path: Path
) -> None:
    bundle_dir = write_bundle(toy_run.run_dir, tmp_path / "bundles")
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    manifest["format"] = 1
    (bundle_dir / "serve.py").write_text("from shared.serving import create_app\n")
    manifest["files"]["serve.py"] = sha256(bundle_dir / "serve.py")
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"older layout.*package it again: verticals package toy"):
        load_bundle(bundle_dir)


@pytest.mark.slow
def test_metrics_add_up_across_worker_processes(finance_run, tmp_path: Path) -> None:
    bundle = write_bundle(finance_run.run_dir, tmp_path / "bundles")
    port = free_port()
    cfg_root = finance_cfg(tmp_path).paths.root_dir
    server = subprocess.Popen(
        [sys.executable, "-m", "verticals", "serve", "finance", f"bundle={bundle}",
         "serve.workers=2", f"serve.port={port}", f"paths.root_dir={cfg_root}"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, server)
        time.sleep(3)  # let the second worker finish loading too
        record = finance_run.vertical.example_inputs(finance_run.splits, 1)
        body = json.dumps(json.loads(record.to_json(orient="records"))[0]).encode()
        for _ in range(30):  # new connections: the kernel spreads them over both workers
            http(f"{base}/predict", body)
        counts = {_count(http(f"{base}/metrics")[1].decode(), "/predict", "200") for _ in range(6)}
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert counts == {30.0}  # whichever process answers, it reports all 30
