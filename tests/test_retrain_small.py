"""Retrain from feedback for traffic, medical and manufacturing on seconds-long configs:
a champion served in-process with a prediction log, clients' requests and their outcomes
through `/predict` and `/feedback` as a user sends them, then `verticals retrain` through the
CLI. The demo models are too small for a planted win to be reliable, so these tests hold the
machinery to account: the feedback reached the challenger's training data, both models were
scored on the same holdout, and the decision, whichever it was, is recorded in the registry,
in MLflow and in the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient  # noqa: E402

from verticals.configs import compose  # noqa: E402
from verticals.core import model_versions, pipeline  # noqa: E402
from verticals.core.bundle import write_bundle  # noqa: E402
from verticals.core.predlog import LogSettings  # noqa: E402
from verticals.core.serving import create_app  # noqa: E402
from verticals.core.tracking import Store  # noqa: E402

from .conftest import needs_ultralytics  # noqa: E402
from .servers import run_cli  # noqa: E402


def _champion(vertical: str, root: Path, *overrides: str) -> tuple[pipeline.TrainResult, Store]:
    cfg = compose("train", vertical, [f"paths.root_dir={root}", "trainer.device=cpu",
                                      "debug=fast", *overrides])  # fmt: skip
    run = pipeline.train(cfg)
    store = Store.of(cfg)
    bundle = write_bundle(run.run_dir, root / "bundles")
    assert model_versions.register(store, bundle, vertical) == (1, True)
    return run, store


def _client(run: pipeline.TrainResult, root: Path, keep_files: bool = False) -> TestClient:
    bundle = next(p for p in (root / "bundles" / run.vertical.name).iterdir() if p.is_dir())
    settings = LogSettings(**{**vars(LogSettings.default(root / "predlog")),
                              "keep_files": keep_files})  # fmt: skip
    return TestClient(create_app(bundle, prediction_log=settings))


def _retrain(vertical: str, root: Path, store: Store, capsys, *more: str) -> dict[str, Any]:
    """`verticals retrain`; the figures it recorded, checked to be recorded everywhere."""
    code = run_cli("retrain", vertical, f"paths.root_dir={root}", "trainer.device=cpu", *more)
    out = capsys.readouterr().out
    assert code == 0, out
    report = Path(out.split("report: ")[-1].split()[0])
    figures = json.loads((report.parent / "retrain.json").read_text())
    assert figures["challenger_version"] == 2 and figures["champion_version"] == 1
    assert figures["verdict"] in ("promoted", "refused"), figures
    headline = pipeline.registry.get(vertical).headline_metric
    for side in ("champion", "challenger"):
        assert np.isfinite(figures[side][headline]), figures
    version = model_versions.get_version(store, vertical, 2)
    assert version.tags["verticals.retrain.decision"] == figures["verdict"]
    champion = model_versions.champion(store, vertical)
    assert champion is not None
    assert champion.version == (2 if figures["verdict"] == "promoted" else 1)
    run = store.client().get_run(version.run_id)
    assert run.data.tags["verticals.retrain.decision"] == figures["verdict"]
    assert f"holdout_challenger.{headline.replace('@', '_at_')}" in run.data.metrics or any(
        k.startswith("holdout_challenger.") for k in run.data.metrics
    )
    text = report.read_text()
    assert "## Metrics on the holdout" in text and figures["verdict"] in text
    learnt = json.loads((report.parent / "run.json").read_text())["data"]["feedback"]
    return {**figures, "learnt": learnt}


def test_traffic_learns_the_readings_that_came_after_its_series(tmp_path: Path, capsys) -> None:
    pytest.importorskip("torch")
    run, store = _champion("traffic", tmp_path, "data.days=10")
    test = run.splits.test
    net, shift = test.net, pd.Timedelta(days=7)  # a week on: readings the series never had
    client = _client(run, tmp_path)
    outcomes = []
    for start in test.starts[: 4 * 12 : 4]:  # 12 windows, 20 minutes apart
        records = [
            {"sensor": sensor, "timestamp": (net.times[t] + shift).isoformat(),
             "value": float(net.speeds[t, s]) or None}
            for t in range(start, start + test.input_steps)
            for s, sensor in enumerate(net.sensors)
        ]  # fmt: skip
        answer = client.post("/predict", json=records)
        assert answer.status_code == 200, answer.text
        observed = []
        for row in answer.json()["predictions"]:
            when = pd.Timestamp(row["timestamp"]) - shift
            t = int(np.flatnonzero(net.times == when.tz_localize(None))[0])
            speed = float(net.speeds[t, net.sensors.index(row["sensor"])])
            observed.append({"sensor": row["sensor"], "timestamp": row["timestamp"],
                             "speed": speed})  # fmt: skip
        outcomes.append({"request_id": answer.json()["request_id"], "observed": observed})
    assert client.post("/feedback", json=outcomes).json()["stored"] == 12
    figures = _retrain("traffic", tmp_path, store, capsys, "retrain.min_feedback=3",
                       "retrain.holdout_share=0.25")  # fmt: skip
    fed = figures["feedback"]
    # windows 20 minutes apart that each read two hours share readings with the 3 newest,
    # held out: those stay out of training, so no reading is both learnt and scored
    assert fed["to_holdout"] == 3 and fed["overlap"] >= 3, fed
    assert fed["learnt"] + fed["overlap"] + fed["to_holdout"] == 12, fed
    assert figures["learnt"]["windows"] >= 1, figures["learnt"]


def test_medical_learns_the_corrected_masks(tmp_path: Path, capsys) -> None:
    pytest.importorskip("monai")
    run, store = _champion("medical", tmp_path, "data.n_cases=10")
    client = _client(run, tmp_path, keep_files=True)
    for case in run.splits.val:  # cases the champion never trained on, as new scans
        image, label = Path(case["image"]), Path(case["label"])
        reply = client.post("/predict?format=summary",
                            files={"file": (image.name, image.read_bytes())})  # fmt: skip
        assert reply.status_code == 200, reply.text
        mask = {"mask": (f"corrected_{label.name}", label.read_bytes())}
        rid = reply.json()["request_id"]
        stored = client.post("/feedback", data={"request_id": rid}, files=mask)
        assert stored.json() == {"stored": 1, "replaced": 0}, stored.text
    figures = _retrain("medical", tmp_path, store, capsys, "retrain.min_feedback=1")
    n = len(run.splits.val)
    assert figures["feedback"]["learnt"] == n and figures["learnt"]["cases"] == n


def test_manufacturing_learns_the_inspectors_boxes(tmp_path: Path, capsys) -> None:
    needs_ultralytics()
    from verticals.manufacturing.dataset import label_path

    run, store = _champion("manufacturing", tmp_path)
    client = _client(run, tmp_path, keep_files=True)
    items = []
    for image in run.splits.val.images:  # parts the champion never trained on
        reply = client.post("/predict?format=summary",
                            files={"file": (image.name, image.read_bytes())})  # fmt: skip
        assert reply.status_code == 200, reply.text
        boxes = [ln.strip() for ln in label_path(image).read_text().splitlines() if ln.strip()]
        items.append({"request_id": reply.json()["request_id"],
                      "verdict": "fail" if boxes else "pass", "boxes": boxes})  # fmt: skip
    assert client.post("/feedback", json=items).json()["stored"] == len(items)
    figures = _retrain("manufacturing", tmp_path, store, capsys, "retrain.min_feedback=3")
    assert figures["feedback"]["learnt"] == len(items)
    assert figures["learnt"]["images"] == len(items), figures["learnt"]
