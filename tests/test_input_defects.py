"""Hostile inputs of the record verticals (issue 16): booleans are not numbers or ids,
retail answers never hold a filtered or repeated item, traffic never wraps a date, and
finance refuses impossible values and flags values outside its training range."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.fastpath import assert_same_answers
from verticals.configs import compose
from verticals.core import pipeline
from verticals.core.bundle import load_bundle, write_bundle
from verticals.core.config import ConfigValueError
from verticals.core.errors import UserError
from verticals.finance.config import FinanceDataConfig
from verticals.finance.data import FeatureSchema, default_bounds, plausible_bounds
from verticals.retail.model import FILTERED


def _client(run: pipeline.TrainResult, tmp: Path) -> TestClient:
    from verticals.core.serving import create_app

    return TestClient(create_app(load_bundle(write_bundle(run.run_dir, tmp))))


def _tiny(tmp: Path, vertical: str, *overrides: str) -> pipeline.TrainResult:
    root = [f"paths.root_dir={tmp}", "trainer.device=cpu", "debug=fast", *overrides]
    return pipeline.train(compose("train", vertical, root))


# --- retail ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def retail(tmp_path_factory: pytest.TempPathFactory) -> tuple[pipeline.TrainResult, TestClient]:
    pytest.importorskip("implicit")
    run = _tiny(tmp_path_factory.mktemp("retail"), "retail")
    return run, _client(run, tmp_path_factory.mktemp("retail_bundle"))


def _answer(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]


def _check_clean(answer: dict[str, Any], k: int, banned: set[str]) -> list[str]:
    """An answer's items: none banned, none twice, no filtered score; short iff < k."""
    items = [r["item_id"] for r in answer["recommendations"]]
    assert not banned & set(items), banned & set(items)
    assert len(set(items)) == len(items), items
    assert all(r["score"] > FILTERED for r in answer["recommendations"])
    assert [r["rank"] for r in answer["recommendations"]] == list(range(1, len(items) + 1))
    assert answer["short"] is (len(items) < k)
    return items


def test_retail_never_answers_excluded_bought_or_repeated_items(retail) -> None:
    run, client = retail
    model = run.model
    user = run.splits.test.users[0]
    bought = {str(model.item_ids[i]) for i in model.user_items[model.user_index[user]].indices}
    catalog = [str(i) for i in model.item_ids]
    excluded = catalog[:-5]  # most of the catalog
    cases = [
        ({"user_id": user, "exclude_items": excluded, "k": 10}, set(excluded) | bought),
        ({"user_id": user, "exclude_items": excluded, "exclude_bought": False}, set(excluded)),
        ({"user_id": "ghost", "exclude_items": excluded, "k": 10}, set(excluded)),
        ({"item_id": catalog[-1], "exclude_items": excluded, "k": 10}, set(excluded)),
        ({"user_id": user, "k": 1000}, bought),
        ({"item_id": catalog[0], "k": 1000}, {catalog[0]}),
        ({"user_id": "ghost", "k": 1000}, set()),
        ({"user_id": user, "category": "segment_1", "k": 1000}, bought),
    ]
    for body, banned in cases:
        k = body.get("k", int(model.params["k"]))
        items = _check_clean(_answer(client, body), k, banned)
        assert items, body  # shorter, but something is left
    full = _answer(client, {"user_id": user, "k": 3})
    assert _check_clean(full, 3, bought) and full["short"] is False


def test_retail_short_answers_come_the_same_both_ways(retail) -> None:
    run, _ = retail
    user = run.splits.test.users[0]
    excluded = [str(i) for i in run.model.item_ids[:-3]]
    requests = [
        [{"user_id": user, "exclude_items": excluded}],
        [{"user_id": user, "k": 1000}, {"item_id": excluded[0], "k": 1000}],
    ]
    answers = assert_same_answers(run.vertical, run.model, requests)
    assert all(row["short"] for rows in answers for row in rows)
    flat = run.vertical.predict_table(run.model, pd.DataFrame(requests[0]))
    assert bool(flat["short"][0]) and "item_1" in flat.columns


@pytest.mark.parametrize(
    "field, body",
    [
        ("item_id", {"item_id": False}),  # was item "0"
        ("user_id", {"user_id": True}),
        ("k", {"user_id": "1", "k": True}),
        ("exclude_items", {"user_id": "1", "exclude_items": ["2", False]}),
    ],
)
def test_retail_refuses_booleans_as_ids_or_counts(retail, field: str, body: dict) -> None:
    _, client = retail
    response = client.post("/predict", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["message"]


def test_retail_table_rows_refuse_booleans_too(retail) -> None:
    run, _ = retail
    for row in ({"item_id": False}, {"user_id": "1", "k": True}):
        with pytest.raises(UserError, match="is not"):
            run.vertical.predict(run.model, pd.DataFrame([row]))


def test_retail_openapi_declares_short(retail) -> None:
    _, client = retail
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    answer = schemas["RecommendResponse"]
    assert "short" in answer["required"] and answer["properties"]["short"]["type"] == "boolean"


# --- traffic --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> tuple[pipeline.TrainResult, TestClient]:
    pytest.importorskip("torch")
    run = _tiny(tmp_path_factory.mktemp("traffic"), "traffic")
    return run, _client(run, tmp_path_factory.mktemp("traffic_bundle"))


def _window(run: pipeline.TrainResult, start: str | None = None) -> list[dict[str, Any]]:
    """One example window as JSON records, moved to begin at `start`."""
    frame = run.vertical.example_inputs(run.splits, 1)
    frame = frame[frame["window"] == frame["window"].iloc[0]].copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    records = frame.to_dict("records")
    first = frame["timestamp"].min()
    for r in records:
        offset = r["timestamp"] - first
        r["timestamp"] = (offset + pd.Timestamp(start or first)).isoformat()
        r["value"] = None if pd.isna(r["value"]) else float(r["value"])
    return records


@pytest.mark.parametrize("start", ["9999-12-31T23:00", "0001-01-01T00:00", "8999-12-31T23:00"])
def test_traffic_refuses_windows_whose_forecasts_leave_the_calendar(traffic, start: str) -> None:
    run, client = traffic
    response = client.post("/predict", json=_window(run, start))
    assert response.status_code == 422, response.text
    assert "timestamp" in response.json()["message"]


def test_traffic_table_path_refuses_an_overflowing_window(traffic) -> None:
    run, _ = traffic
    records = _window(run, "8999-12-31T23:00")
    with pytest.raises(UserError, match="between the years 1900 and 8999"):
        run.vertical.predict(run.model, pd.DataFrame(records))


def test_traffic_forecasts_follow_the_window(traffic) -> None:
    run, client = traffic
    records = _window(run, "8999-12-01T00:00")
    last = max(pd.Timestamp(r["timestamp"]) for r in records)
    rows = _answer_rows(client, records)
    assert rows and all(pd.Timestamp(r["timestamp"]) > last for r in rows)
    assert all(pd.Timestamp(r["timestamp"]).year == 8999 for r in rows)


def _answer_rows(client: TestClient, body: Any) -> list[dict[str, Any]]:
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_traffic_refuses_a_boolean_speed(traffic) -> None:
    run, client = traffic
    records = _window(run)
    records[0]["value"] = True
    response = client.post("/predict", json=records)
    assert response.status_code == 422 and "value" in response.json()["message"]


# --- finance --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finance_client(finance_run: pipeline.TrainResult, tmp_path_factory) -> TestClient:
    return _client(finance_run, tmp_path_factory.mktemp("finance_bundle"))


def _applicant(run: pipeline.TrainResult, **changes: Any) -> dict[str, Any]:
    record = run.vertical.example_inputs(run.splits, 1).to_dict("records")[0]
    return {**record, **changes}


@pytest.mark.parametrize(
    "field, value",
    [("loan_term_months", False), ("age", True), ("age", -5), ("age", 1e308), ("income", -1.0)],
)
def test_finance_refuses_impossible_values(finance_run, finance_client, field, value) -> None:
    response = finance_client.post("/predict", json=_applicant(finance_run, **{field: value}))
    assert response.status_code == 422, response.text
    assert field in response.json()["message"]


def test_finance_flags_values_outside_the_training_range(finance_run, finance_client) -> None:
    schema = finance_run.model.schema
    low, high = schema.ranges["age"]
    assert low >= 0 and schema.bounds["age"][0] == 0.0 and schema.bounds["age"][1] > high
    inside = _answer_rows(finance_client, _applicant(finance_run))[0]
    assert inside["out_of_range"] == []
    old = _answer_rows(finance_client, _applicant(finance_run, age=high + 10))[0]
    assert old["out_of_range"] == ["age"] and 0 < old["pd"] < 1
    both = _applicant(finance_run, age=high + 10, loan_amount=schema.ranges["loan_amount"][1] * 2)
    assert _answer_rows(finance_client, both)[0]["out_of_range"] == ["age", "loan_amount"]


def test_finance_fast_path_flags_as_the_table_path(finance_run) -> None:
    high = finance_run.model.schema.ranges["age"][1]
    requests = [
        [_applicant(finance_run), _applicant(finance_run, age=high + 1)],
        [_applicant(finance_run, age=None, income=None)],
    ]
    answers = assert_same_answers(finance_run.vertical, finance_run.model, requests)
    assert [row["out_of_range"] for row in answers[0]] == [[], ["age"]]
    table = finance_run.vertical.predict_table(
        finance_run.model, pd.DataFrame([_applicant(finance_run, age=high + 1)])
    )
    assert table["out_of_range"].tolist() == ["age"]


def test_finance_openapi_shows_bounds_and_the_flag(finance_run, finance_client) -> None:
    document = finance_client.get("/openapi.json").json()
    assert "out_of_range" in document["components"]["schemas"]["Prediction"]["required"]
    text = json.dumps(document)
    assert '"minimum": 0.0' in text and "training range [" in text


def test_bounds_from_training_ranges_and_config() -> None:
    assert default_bounds(19.0, 75.0) == [0.0, 830.0]  # never negative, 10 widths up
    low, high = default_bounds(-3.0, 5.0)
    assert low < -3.0 and high > 5.0
    ranges = {"age": [19.0, 75.0], "income": [1.0, 2.0]}
    bounds = plausible_bounds(ranges, ["age", "income"], {"age": [18, 120], "income": [None, 5]})
    assert bounds == {"age": [18.0, 120.0], "income": [None, 5.0]}
    with pytest.raises(UserError, match="data.bounds names \\['agee'\\]"):
        plausible_bounds(ranges, ["age", "income"], {"agee": [0, 1]})
    for bad in ([5, 1], [1], ["a", 2], [0, float("inf")], [True, 2]):
        with pytest.raises(ConfigValueError):
            FinanceDataConfig(bounds={"age": bad})


def test_config_bounds_reach_the_request_schema(tmp_path: Path) -> None:
    run = _tiny(
        tmp_path,
        "finance",
        "data=synthetic",
        "data.n_rows=1000",
        "model.num_boost_round=20",
        "++data.bounds={age: [18, 120]}",
    )
    assert run.model.schema.bounds["age"] == [18.0, 120.0]
    client = _client(run, tmp_path / "bundle")
    refused = client.post("/predict", json=_applicant(run, age=17))
    assert refused.status_code == 422 and "age" in refused.json()["message"]
    assert _answer_rows(client, _applicant(run, age=119))[0]["out_of_range"] == ["age"]


def test_models_saved_before_ranges_flag_nothing() -> None:
    schema = FeatureSchema.from_dict({"numeric": ["age"], "categorical": {}})
    assert schema.ranges == {} and schema.bounds == {}
    assert schema.out_of_range(np.array([[1e9], [np.nan]])) == [[], []]
