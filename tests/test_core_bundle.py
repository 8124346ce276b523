"""Train -> bundle -> load -> serve through the core, with the toy vertical."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from omegaconf import OmegaConf

from verticals.core import pipeline
from verticals.core.batch import predict_file
from verticals.core.bundle import load_bundle, write_bundle
from verticals.core.errors import UserError
from verticals.core.predlog import LogSettings
from verticals.core.serving import create_app

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def toy_run(tmp_path: Path) -> pipeline.TrainResult:
    cfg = OmegaConf.create(
        {
            "vertical": "toy",
            "seed": 3,
            "trainer": {"device": "cpu", "precision": "auto"},
            "paths": {"runs_dir": str(tmp_path / "runs")},
        }
    )
    return pipeline.train(cfg)


def test_run_directory_contents(toy_run: pipeline.TrainResult) -> None:
    run = toy_run.run_dir
    for name in ("config.yaml", "metrics.json", "run.json", "model_card.md", "train.log"):
        assert (run / name).is_file(), name
    assert toy_run.metrics["accuracy"] > 0.97
    assert "accuracy" in (run / "model_card.md").read_text()
    assert (run.parent / "LATEST").read_text().strip() == run.name


def test_bundle_round_trip_and_manifest(toy_run: pipeline.TrainResult, tmp_path: Path) -> None:
    bundle_dir = write_bundle(toy_run.run_dir, tmp_path / "bundles")
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert {"model/toy.json", "config.yaml", "schema.json", "Dockerfile", "serve.py"} <= set(
        manifest["files"]
    )
    assert manifest["versions"]["python"]
    assert not [p for p in bundle_dir.parent.iterdir() if p.name.startswith(".")]
    bundle = load_bundle(bundle_dir)
    frame = pd.DataFrame({"x": [-1.0, 0.1, 0.9]})
    expected = toy_run.vertical.predict(toy_run.model, frame)
    pd.testing.assert_frame_equal(bundle.vertical.predict(bundle.model, frame), expected)


def test_tampered_bundle_is_refused(toy_run: pipeline.TrainResult, tmp_path: Path) -> None:
    bundle_dir = write_bundle(toy_run.run_dir, tmp_path / "bundles")
    (bundle_dir / "model" / "toy.json").write_text('{"threshold": 99}')
    with pytest.raises(UserError, match="does not match its sha256"):
        load_bundle(bundle_dir)


def test_crash_while_packaging_leaves_old_bundle(
    toy_run: pipeline.TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = write_bundle(toy_run.run_dir, tmp_path / "bundles")
    before = (good / "manifest.json").read_text()

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr("verticals.core.bundle._dockerfile", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        write_bundle(toy_run.run_dir, tmp_path / "bundles")
    assert (good / "manifest.json").read_text() == before
    assert sorted(p.name for p in good.parent.iterdir()) == sorted(["LATEST", good.name])
    load_bundle(good)


def test_serving_contract(toy_run: pipeline.TrainResult, tmp_path: Path) -> None:
    bundle_dir = write_bundle(toy_run.run_dir, tmp_path / "bundles")
    client = TestClient(
        create_app(bundle_dir, prediction_log=LogSettings.default(tmp_path / "log"))
    )
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["ready"] is True
    meta = client.get("/metadata").json()
    assert meta["model_version"] == bundle_dir.name and "accuracy" in meta["metrics"]
    answered = client.post("/predict", json={"x": 2.0}, headers={"X-Request-ID": "app-7"})
    one = answered.json()
    assert one["request_id"] == answered.headers["X-Request-ID"] == "app-7"
    assert one["predictions"] == [
        {"label": 1, "margin": pytest.approx(2.0 - toy_run.model["threshold"])}
    ]
    many = client.post("/predict", json=[{"x": -3}, {"x": 3}]).json()["predictions"]
    assert [p["label"] for p in many] == [0, 1]
    bad = client.post("/predict", json=[{"x": 1}, {"x": "high"}])
    assert bad.status_code == 422 and "record[1].x" in bad.json()["message"]
    extra = client.post("/predict", json={"x": 1, "y": 2})
    assert extra.status_code == 422 and "y: Extra inputs" in extra.json()["message"]
    for body in (b"{not json", b"[]", b"42"):
        assert client.post("/predict", content=body, headers=JSON).status_code == 422
    assert client.post("/feedback", json=[{"request_id": "app-7", "y": 1}]).json() == {
        "stored": 1,
        "replaced": 0,
    }
    again = client.post("/feedback", json={"request_id": "app-7", "y": 0}).json()
    assert again["replaced"] == 1 and "app-7" in again["message"]
    unknown = client.post("/feedback", json=[{"request_id": "nobody", "y": 1}])
    assert unknown.status_code == 404 and "nobody" in unknown.json()["message"]
    bad = client.post("/feedback", json=[{"request_id": "app-7", "y": 3}])
    assert bad.status_code == 422 and "feedback[0].y" in bad.json()["message"]
    metrics = client.get("/metrics").text
    assert 'verticals_requests_total{path="/predict",status="422"}' in metrics
    assert "/predict" in client.get("/openapi.json").json()["paths"]


def test_batch_predict_file(toy_run: pipeline.TrainResult, tmp_path: Path) -> None:
    bundle = load_bundle(write_bundle(toy_run.run_dir, tmp_path / "bundles"))
    pd.DataFrame({"id": range(7), "x": [-1, 1] * 3 + [5]}).to_csv(tmp_path / "in.csv", index=False)
    rows = predict_file(bundle, tmp_path / "in.csv", tmp_path / "out.parquet", 3, ["id"], False)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert rows == 7 and out["id"].astype(int).tolist() == list(range(7))
    assert out["label"].tolist() == [0, 1, 0, 1, 0, 1, 1]


def test_bundle_survives_moving(toy_run: pipeline.TrainResult, tmp_path: Path) -> None:
    bundle_dir = write_bundle(toy_run.run_dir, tmp_path / "bundles")
    moved = tmp_path / "elsewhere" / "b"
    shutil.copytree(bundle_dir, moved)
    os.utime(moved / "serve.py")
    assert load_bundle(moved).model == toy_run.model


def test_app_factory_for_worker_processes(
    toy_run: pipeline.TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from verticals.core.serving import BUNDLE_ENV, app_from_env

    monkeypatch.delenv(BUNDLE_ENV, raising=False)
    with pytest.raises(UserError, match=BUNDLE_ENV):
        app_from_env()
    monkeypatch.setenv(BUNDLE_ENV, str(write_bundle(toy_run.run_dir, tmp_path / "bundles")))
    assert TestClient(app_from_env()).post("/predict", json={"x": 9}).json()["predictions"]
