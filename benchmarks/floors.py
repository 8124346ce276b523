"""Hand-written FastAPI apps that call the raw library on a NumPy row: the physical floor
of this stack (uvicorn + FastAPI + the model), against which `serving.py` measures the
suite's `/predict`.

Each app loads the bundle's model once with the vertical's own `load` (loading is not on
the request path), then answers one JSON record with the least work that still gives the
same information: finance, LightGBM's PD and SHAP contributions of one applicant; retail,
implicit's top-k for one customer; traffic, one torch forward pass over one window.
Run: `VERTICALS_BUNDLE=<bundle> uvicorn benchmarks.floors:finance --factory`.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response

from verticals.core.bundle import load_bundle


def _model() -> Any:
    return load_bundle(os.environ["VERTICALS_BUNDLE"]).model


def _json(payload: Any) -> Response:
    return Response(json.dumps(payload), media_type="application/json")


def _app() -> FastAPI:
    """A bare app with the `/health` the benchmark's server start waits for."""
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def finance() -> FastAPI:
    model = _model()
    booster, schema = model.booster, model.schema
    numeric = list(schema.numeric)
    levels = {name: {lv: i for i, lv in enumerate(lvs)} for name, lvs in schema.categorical.items()}
    app = _app()

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        record = json.loads(await request.body())
        row = np.full((1, len(numeric) + len(levels)), np.nan)
        for j, name in enumerate(numeric):
            if record.get(name) is not None:
                row[0, j] = record[name]
        for j, (name, codes) in enumerate(levels.items(), start=len(numeric)):
            row[0, j] = codes.get(record.get(name), np.nan)
        contrib = booster.predict(row, pred_contrib=True, num_threads=1)[0]
        pd_ = 1.0 / (1.0 + np.exp(-contrib.sum()))
        return _json({"pd": float(pd_), "contributions": contrib[:-1].round(4).tolist()})

    return app


def retail() -> FastAPI:
    model = _model()
    recommender, users, items = model.recommender, model.user_index, model.item_ids
    app = _app()

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        record = json.loads(await request.body())
        user = users[str(record["user_id"])]
        ids, scores = recommender.recommend(
            user, model.user_items[user], N=int(record.get("k") or model.params["k"])
        )
        pairs = zip(ids.tolist(), scores.tolist(), strict=True)
        return _json([{"item_id": str(items[i]), "score": s} for i, s in pairs])

    return app


def traffic() -> FastAPI:
    import torch

    model = _model()
    net, columns = model.network(), {s: i for i, s in enumerate(model.sensors)}
    app = _app()

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        readings = json.loads(await request.body())
        stamps = sorted({r["timestamp"] for r in readings})
        steps = {t: i for i, t in enumerate(stamps)}
        speeds = np.zeros((model.input_steps, len(columns)), np.float32)
        for r in readings:
            speeds[steps[r["timestamp"]], columns[r["sensor"]]] = r["value"] or 0.0
        times = [datetime.fromisoformat(t) for t in stamps]
        minutes = np.array([t.hour * 60 + t.minute for t in times])
        x = torch.from_numpy(model.features_at(speeds, minutes)[None])
        with torch.inference_mode():
            out = net(x).numpy()[0] * model.std + model.mean
        return _json(np.clip(out, 0, None).round(2).tolist())

    return app
