"""Serving at the speed of the model: the fast path answers as the table path does,
micro-batches answer each request its own, big bodies go to their own process and answer
as small ones do, and workers warm up before their first request."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from omegaconf import OmegaConf

from verticals.core import pipeline
from verticals.core.bundle import load_bundle, write_bundle
from verticals.core.config import ServeConfig
from verticals.core.contract import records_of
from verticals.core.errors import UserError
from verticals.core.serving import create_app

from .fastpath import assert_same_answers

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def toy_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    cfg = {"vertical": "toy", "seed": 3, "trainer": {"device": "cpu", "precision": "auto"}}
    run = pipeline.train(OmegaConf.create({**cfg, "paths": {"runs_dir": str(root / "runs")}}))
    return write_bundle(run.run_dir, root / "bundles")


def _client_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a client sends them: through JSON."""
    return json.loads(frame.to_json(orient="records"))


def test_finance_fast_path_answers_as_the_table_path(finance_run: pipeline.TrainResult) -> None:
    vertical, model = finance_run.vertical, finance_run.model
    records = _client_records(vertical.example_inputs(finance_run.splits, 40))
    numeric, categorical = model.schema.numeric, list(model.schema.categorical)
    first, second = (model.schema.bounds[name] for name in numeric[:2])
    edge = [
        {},  # every value missing
        {numeric[0]: None, categorical[0]: None},
        {numeric[0]: first[1], numeric[1]: second[0]},  # the extremes the bounds allow
        {numeric[0]: 0.0, categorical[0]: model.schema.categorical[categorical[0]][-1]},
    ]
    answers = assert_same_answers(
        vertical,
        model,
        [[r] for r in records] + [records[:7], edge],  # type: ignore[arg-type]
    )
    assert all(0.0 <= row["pd"] <= 1.0 for rows in answers for row in rows)
    assert numeric[0] in answers[-1][2]["out_of_range"]  # scored, and flagged
    # Unseen levels never pass validation here (a field with a few levels is an enum), but
    # a caller of predict_records directly gets what the table path gives them: missing.
    unseen = [{categorical[0]: "a level never seen", numeric[0]: 3.0}]
    table = records_of(vertical.predict(model, pd.DataFrame(unseen)))
    assert vertical.predict_records(model, [unseen]) == [table]


def test_finance_single_row_call_gives_lightgbms_numbers(
    finance_run: pipeline.TrainResult,
) -> None:
    """One applicant goes through LightGBM's single-row C API: the same SHAP values, bit
    for bit, as `Booster.predict`, missing values and fewer iterations included."""
    import numpy as np

    from verticals.finance import single_row
    from verticals.finance.data import to_matrix

    model = finance_run.model
    frame = finance_run.vertical.example_inputs(finance_run.splits, 40)
    X = to_matrix(frame, model.schema)
    X[::3, 0] = np.nan
    for iterations in (model.best_iteration, model.best_iteration // 2):
        for row in X:
            fast = single_row.contributions(model.booster, row, iterations)
            slow = model.booster.predict(row[None], num_iteration=iterations, pred_contrib=True)
            assert np.array_equal(fast, slow)


async def _post_together(app: Any, bodies: list[Any]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return list(await asyncio.gather(*(client.post("/predict", json=b) for b in bodies)))


def _metric(app: Any, name: str) -> float:
    text = TestClient(app).get("/metrics").text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_micro_batch_answers_each_request_its_own(toy_bundle: Path) -> None:
    options = ServeConfig(batching="on", max_batch=8, batch_wait_ms=500)  # type: ignore[arg-type]
    app = create_app(toy_bundle, options=options)
    threshold = load_bundle(toy_bundle).model["threshold"]
    bodies: list[Any] = [{"x": float(i)} for i in range(6)] + [[{"x": 10.0}, {"x": -3.0}]]
    answers = asyncio.run(_post_together(app, bodies))
    assert [a.status_code for a in answers] == [200] * 7
    for body, answer in zip(bodies, answers, strict=True):
        sent = body if isinstance(body, list) else [body]
        margins = [p["margin"] for p in answer.json()["predictions"]]
        assert margins == pytest.approx([r["x"] - threshold for r in sent])
    # 8 records in 7 requests reached the model in one call (max_batch=8 closed it at once)
    assert _metric(app, "verticals_batch_inputs_count") == 1.0
    assert _metric(app, "verticals_batch_inputs_sum") == 8.0


def test_one_bad_record_in_a_batch_fails_only_its_request(
    toy_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = load_bundle(toy_bundle)
    real = bundle.vertical.predict_records

    def picky(model: Any, requests: list[list[dict]]) -> list[list[dict]]:
        if any(r["x"] == -1.0 for records in requests for r in records):
            raise UserError("x=-1 means 'unknown' upstream; send null")
        return real(model, requests)

    monkeypatch.setattr(bundle.vertical, "predict_records", picky)
    options = ServeConfig(batching="on", max_batch=16, batch_wait_ms=200)  # type: ignore[arg-type]
    app = create_app(bundle, options=options)
    answers = asyncio.run(_post_together(app, [{"x": 1.0}, {"x": -1.0}, {"x": 2.0}]))
    assert [a.status_code for a in answers] == [200, 422, 200]
    assert "x=-1" in answers[1].json()["message"]


def test_a_broken_batch_fails_its_requests_not_the_server(
    toy_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A vertical that answers a batch with the wrong number of rows fails that batch's
    requests with a 500; the batcher lives on and answers the next ones."""
    bundle = load_bundle(toy_bundle)
    real = bundle.vertical.predict_records
    broken = [True]

    def once_wrong(model: Any, requests: list[list[dict]]) -> list[list[dict]]:
        if broken.pop() if broken else False:
            return []
        return real(model, requests)

    monkeypatch.setattr(bundle.vertical, "predict_records", once_wrong)
    options = ServeConfig(batching="on", max_batch=4, batch_wait_ms=100)  # type: ignore[arg-type]
    app = create_app(bundle, options=options)
    first = asyncio.run(_post_together(app, [{"x": 1.0}, {"x": 2.0}]))
    assert [a.status_code for a in first] == [500, 500]
    again = asyncio.run(_post_together(app, [{"x": 1.0}, {"x": 2.0}]))
    assert [a.status_code for a in again] == [200, 200]


def test_batching_auto_asks_the_vertical(toy_bundle: Path) -> None:
    """The toy model gains nothing from batches: `auto` leaves batching off."""
    app = create_app(toy_bundle, options=ServeConfig())
    assert TestClient(app).get("/metadata").json()["serving"]["batching"] is False
    on = create_app(toy_bundle, options=ServeConfig(batching="on"))  # type: ignore[arg-type]
    assert TestClient(on).get("/metadata").json()["serving"]["batching"] is True


def test_big_requests_answer_as_small_ones(
    finance_run: pipeline.TrainResult, tmp_path: Path
) -> None:
    """A body over `big_request_kib` goes whole to the model in a process of its own (the
    table path) and gets the answers the fast path gives record by record."""
    bundle = write_bundle(finance_run.run_dir, tmp_path / "bundles")
    records = _client_records(finance_run.vertical.example_inputs(finance_run.splits, 30))
    body = json.dumps(records).encode()
    assert len(body) > 1024
    app = create_app(bundle, options=ServeConfig(big_request_kib=1))
    with TestClient(app) as client:
        big = client.post("/predict", content=body, headers=JSON)
        assert big.status_code == 200, big.text
        alone = [client.post("/predict", json=r).json()["predictions"][0] for r in records]
        assert big.json()["predictions"] == alone
        records[7]["age"] = "forty"
        bad = client.post("/predict", content=json.dumps(records).encode(), headers=JSON)
        assert bad.status_code == 422 and bad.json()["message"].startswith("record[7].age")
        offload = app.state.predict.offload  # the big ones came from another process
        assert offload.pid is not None and offload.pid != os.getpid()
        os.kill(offload.pid, signal.SIGKILL)  # the process dies (out of memory, say) ...
        again = client.post(
            "/predict", content=body, headers=JSON
        )  # ... and the request is still answered
        assert again.status_code == 200
        assert again.json()["predictions"] == big.json()["predictions"]
        assert again.json()["request_id"] == again.headers["x-request-id"]
        assert (
            client.post("/predict", content=body, headers=JSON).status_code == 200
        )  # by a new child
        assert offload.pid is not None and offload.pid != os.getpid()


def test_a_worker_is_warm_before_its_first_request(toy_bundle: Path) -> None:
    """`warm="startup"` (each of several workers) warms up before the server takes any
    request: the very first `/ready` says ready."""
    with TestClient(create_app(toy_bundle, warm="startup")) as client:
        assert client.get("/ready").status_code == 200


@pytest.mark.parametrize(
    ("override", "key"),
    [("serve.max_batch=0", "max_batch"), ("serve.batch_wait_ms=-1", "batch_wait_ms"),
     ("serve.big_request_kib=0", "big_request_kib"), ("serve.model_threads=0", "model_threads")],
)  # fmt: skip
def test_serving_settings_are_checked(override: str, key: str) -> None:
    from verticals.configs import compose
    from verticals.core.config import ConfigValueError

    with pytest.raises(ConfigValueError, match=f"serve.{key}="):
        compose("serve", "finance", [override])


def test_a_client_that_leaves_mid_body_is_counted_not_crashed(toy_bundle: Path) -> None:
    """A client gone before its body arrived is counted as 499 (nginx's "client closed
    request"), not as a 500 with a traceback."""
    app = create_app(toy_bundle)
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
        "root_path": "", "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert sent == []  # nobody to answer
    metrics = TestClient(app).get("/metrics").text
    assert 'verticals_requests_total{path="/predict",status="499"} 1.0' in metrics
    assert 'status="500"' not in metrics
