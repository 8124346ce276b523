"""Feedback and monitoring hooks of the record verticals (finance, retail, traffic): outcome
schemas, the tables the drift monitor compares, and live metrics on planted outcomes.

Each vertical trains a seconds-long run; entries are built as the log keeps them: the
validated request records and the answer rows, also after a trip through JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json
from sklearn.metrics import roc_auc_score

from tests.fastpath import validated
from verticals.configs import compose
from verticals.core import pipeline
from verticals.core.contract import Logged
from verticals.core.predlog import private_records, value_hash


def _train(root: Path, vertical: str, *overrides: str) -> pipeline.TrainResult:
    cfg = compose(
        "train",
        vertical,
        [f"paths.root_dir={root}", "trainer.device=cpu", "tracking=none", *overrides],
    )
    return pipeline.train(cfg)


def _logged(
    run: pipeline.TrainResult, requests: list[list[dict[str, Any]]], via_json: bool = False
) -> list[Logged]:
    """One entry per request, as the server logs it: validated records in, answer rows out;
    `via_json`: as read back from a log stored as JSON (datetimes as text)."""
    vertical, model = run.vertical, run.model
    checked = [validated(vertical, model, records) for records in requests]
    answers = vertical.predict_records(model, checked)
    entries = []
    for n, (inputs, outputs) in enumerate(zip(checked, answers, strict=True)):
        if via_json:
            inputs, outputs = json.loads(to_json(inputs)), json.loads(to_json(outputs))
        entries.append(Logged(request_id=f"r{n}", inputs=inputs, outputs=outputs))
    return entries


def _private(entries: list[Logged], inputs: str, drop: tuple[str, ...] = ()) -> list[Logged]:
    """The entries as the log keeps them under `log.inputs` (hashed: each value a hash
    string, None kept; none: no inputs) and `log.drop`."""
    return [
        Logged(e.request_id, private_records(e.inputs, inputs, drop), e.outputs) for e in entries
    ]


def _outcome(schema: type[BaseModel], value: dict[str, Any]) -> dict[str, Any]:
    """An outcome as the core stores it: validated, dumped as JSON."""
    return schema.model_validate(value).model_dump(mode="json")


def _labelled(entries: list[Logged], schema: type[BaseModel], outcomes: list[dict]) -> list:
    return [
        Logged(e.request_id, e.inputs, e.outputs, outcome=_outcome(schema, o))
        for e, o in zip(entries, outcomes, strict=True)
    ]


def _rejects(schema: type[BaseModel], value: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        schema.model_validate(value)
    assert field in str(info.value), str(info.value)


# -- finance ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finance(tmp_path_factory: pytest.TempPathFactory) -> pipeline.TrainResult:
    root = tmp_path_factory.mktemp("finance")
    return _train(root, "finance", "data=synthetic", "data.n_rows=6000", "debug=fast")


@pytest.fixture(scope="module")
def applicants(finance: pipeline.TrainResult) -> list[Logged]:
    """Every test applicant, one request each (an outcome is one applicant's)."""
    frame = finance.vertical.example_inputs(finance.splits, len(finance.splits.test.X))
    return _logged(finance, [[r] for r in frame.to_dict("records")])


def test_finance_outcome_takes_zero_or_one_only(finance: pipeline.TrainResult) -> None:
    schema = finance.vertical.outcome_schema(finance.model)
    assert schema.model_validate({"defaulted": 1}).model_dump(mode="json") == {"defaulted": 1}
    assert schema.model_validate_json('{"defaulted": 0}').defaulted == 0
    for bad in (True, False, 1.0, 0.3, "1", 2, -1, None):
        _rejects(schema, {"defaulted": bad}, "defaulted")
    with pytest.raises(ValidationError, match="defaulted"):
        schema.model_validate_json('{"defaulted": true}')
    _rejects(schema, {}, "defaulted")
    _rejects(schema, {"defaulted": 1, "default": 1}, "default")


def test_finance_monitor_frame(finance: pipeline.TrainResult, applicants: list[Logged]) -> None:
    vertical, model = finance.vertical, finance.model
    features = model.schema.features
    frame = vertical.monitor_frame(model, applicants)
    assert list(frame.columns) == [*features, "pd", "score", "grade"]
    assert len(frame) == len(applicants)
    for name in model.schema.numeric:
        assert pd.api.types.is_float_dtype(frame[name]), name
    for name in model.schema.categorical:
        assert frame[name].dropna().map(type).eq(str).all(), name
    assert frame["pd"].between(0, 1).all() and frame["grade"].notna().all()
    # a request of many applicants gives a row each
    many = _logged(finance, [[e.inputs[0] for e in applicants[:5]]])
    assert len(vertical.monitor_frame(model, many)) == 5
    # as read back from a JSON log, the same table
    again = vertical.monitor_frame(
        model, _logged(finance, [e.inputs for e in applicants[:50]], True)
    )
    pd.testing.assert_frame_equal(again, frame.head(50))
    # without inputs: the outputs alone, typed as before
    outputs = vertical.monitor_frame(model, _private(applicants, "none"))
    pd.testing.assert_frame_equal(outputs, frame[["pd", "score", "grade"]])
    # hashed: numbers have no distribution left, levels still make a mix
    levels = list(model.schema.categorical)
    assert levels
    hashed = vertical.monitor_frame(model, _private(applicants, "hashed"))
    assert list(hashed.columns) == [*levels, "pd", "score", "grade"]
    for name in levels:
        assert hashed[name].tolist() == [value_hash(name, v) for v in frame[name]]
    # a field dropped from the log is left out, not taken as missing
    dropped = vertical.monitor_frame(model, _private(applicants, "full", (features[0],)))
    pd.testing.assert_frame_equal(dropped, frame.drop(columns=features[0]))
    assert vertical.monitor_frame(model, []).empty


def test_finance_live_metrics(finance: pipeline.TrainResult, applicants: list[Logged]) -> None:
    vertical, model = finance.vertical, finance.model
    schema = vertical.outcome_schema(model)
    pds = np.array([e.outputs[0]["pd"] for e in applicants])
    rng = np.random.default_rng(0)
    drawn = (rng.random(len(pds)) < pds).astype(int)  # outcomes as the model predicts them
    live = vertical.live_metrics(
        model, _labelled(applicants, schema, [{"defaulted": int(y)} for y in drawn])
    )
    assert live["labelled"] == len(pds)
    # a seconds-long model's PDs are close together: a modest AUC, but well above chance
    assert live["roc_auc"] > 0.6 and live["ks"] > 0.15, live
    assert live["roc_auc"] == pytest.approx(roc_auc_score(drawn, pds))
    assert abs(live["calibration_gap"]) < 0.03, live
    assert live["calibration_gap"] == pytest.approx(live["default_rate"] - live["mean_pd"])
    assert live["mean_pd"] == pytest.approx(pds.mean())
    assert live["brier"] == pytest.approx(np.mean((pds - drawn) ** 2))
    assert all(isinstance(v, float) for v in live.values())

    shuffled = rng.permutation(drawn)  # outcomes unrelated to the applicant
    noise = vertical.live_metrics(
        model, _labelled(applicants, schema, [{"defaulted": int(y)} for y in shuffled])
    )
    assert abs(noise["roc_auc"] - 0.5) < 0.06, noise

    # all repaid so far: no AUC or KS yet, the rates and the gap all the same
    repaid = vertical.live_metrics(
        model, _labelled(applicants[:20], schema, [{"defaulted": 0}] * 20)
    )
    assert "roc_auc" not in repaid and "ks" not in repaid
    assert repaid["default_rate"] == 0 and repaid["labelled"] == 20
    assert repaid["calibration_gap"] == pytest.approx(-pds[:20].mean())
    assert vertical.live_metrics(model, []) == {"labelled": 0.0}


# -- retail -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def retail(tmp_path_factory: pytest.TempPathFactory) -> pipeline.TrainResult:
    pytest.importorskip("implicit")
    return _train(tmp_path_factory.mktemp("retail"), "retail", "debug=fast")


def test_retail_outcome_schema(retail: pipeline.TrainResult) -> None:
    schema = retail.vertical.outcome_schema(retail.model)
    assert _outcome(schema, {"items": ["a7", 3]}) == {"items": ["a7", "3"], "event": "purchase"}
    assert _outcome(schema, {"items": [1], "event": "click"})["event"] == "click"
    _rejects(schema, {"items": []}, "items")
    _rejects(schema, {"items": [True]}, "items")
    _rejects(schema, {"items": [1.5]}, "items")
    _rejects(schema, {"items": [""]}, "items")
    _rejects(schema, {"items": "3"}, "items")
    _rejects(schema, {"event": "purchase"}, "items")
    _rejects(schema, {"items": [1], "event": "view"}, "event")
    _rejects(schema, {"items": [1], "user_id": "u1"}, "user_id")


def test_retail_monitor_frame(retail: pipeline.TrainResult) -> None:
    vertical, model = retail.vertical, retail.model
    users = list(retail.splits.test.users[:20])
    item = str(model.item_ids[0])
    requests = [
        *([{"user_id": u}] for u in users),
        [{"user_id": "never-seen"}],
        [{"item_id": item}],
        [{"item_id": "no-such-item"}],
        [{"user_id": users[0], "category": "segment_3"}],
        [{"user_id": users[1]}, {"user_id": users[2], "k": 3}],  # two records, two rows
    ]
    entries = _logged(retail, requests)
    frame = vertical.monitor_frame(model, entries)
    columns = ["unknown_user", "unknown_item", "category", "recommended_popularity", "top_category"]
    assert list(frame.columns) == columns
    assert len(frame) == len(requests) + 1
    assert frame["unknown_user"].tolist() == [False] * 20 + [True] + [False] * 5
    assert frame["unknown_item"].tolist() == [False] * 22 + [True] + [False] * 3
    assert frame["category"].tolist() == ["(any)"] * 23 + ["segment_3", "(any)", "(any)"]
    assert frame.loc[23, "top_category"] == "segment_3"
    top = [e.outputs[0]["recommendations"][0]["item_id"] for e in entries[:20]]
    assert frame["top_category"][:20].tolist() == model.catalog.loc[top, "category"].tolist()
    # popularity percentiles: the fallback answers with best sellers, the model less so
    popularity = frame["recommended_popularity"]
    assert popularity.between(0, 100).all()
    assert popularity[20] > 90 and popularity[22] > 90
    assert popularity[:20].mean() < popularity[20]
    # without inputs (or the field dropped): all but the asked category, which only the
    # request says; hashed: the category's hash, a mix all the same
    for hidden in (_private(entries, "none"), _private(entries, "full", ("category",))):
        outputs = vertical.monitor_frame(model, hidden)
        pd.testing.assert_frame_equal(outputs, frame.drop(columns="category"))
    hashed = vertical.monitor_frame(model, _private(entries, "hashed"))
    asked = ["(any)"] * 23 + [value_hash("category", "segment_3"), "(any)", "(any)"]
    assert hashed["category"].tolist() == asked
    pd.testing.assert_frame_equal(hashed.drop(columns="category"), frame.drop(columns="category"))
    via_json = vertical.monitor_frame(model, _logged(retail, requests, via_json=True))
    pd.testing.assert_frame_equal(via_json, frame)
    model.catalog, catalog = None, model.catalog
    try:  # no catalog: no category of the top item
        assert "top_category" not in vertical.monitor_frame(model, entries).columns
    finally:
        model.catalog = catalog


def test_retail_live_metrics(retail: pipeline.TrainResult) -> None:
    vertical, model = retail.vertical, retail.model
    schema = vertical.outcome_schema(model)
    entries = _logged(retail, [[{"user_id": u}] for u in retail.splits.test.users[:30]])
    shown = [[r["item_id"] for r in e.outputs[0]["recommendations"]] for e in entries]
    assert all(len(items) == 10 for items in shown)

    bought_all = vertical.live_metrics(
        model, _labelled(entries, schema, [{"items": items} for items in shown])
    )
    names = {"precision@10", "recall@10", "map@10", "ndcg@10", "hit_rate@10"}
    assert set(bought_all) == names | {"feedback_requests"}
    assert set(bought_all) - {"hit_rate@10", "feedback_requests"} <= set(retail.metrics)
    assert all(bought_all[name] == pytest.approx(1.0) for name in names)
    assert bought_all["feedback_requests"] == 30

    # the second recommendation bought (as a number): NDCG 1 / log2(3); a later item the
    # model never saw counts as a miss
    outcomes = [{"items": [int(items[1])], "event": "click"} for items in shown]
    second = vertical.live_metrics(model, _labelled(entries, schema, outcomes))
    assert second["hit_rate@10"] == 1.0 and second["precision@10"] == pytest.approx(0.1)
    assert second["ndcg@10"] == pytest.approx(1 / np.log2(3))
    others = [{"items": ["not-in-catalog", items[0]]} for items in shown]
    half = vertical.live_metrics(model, _labelled(entries, schema, others))
    assert half["recall@10"] == pytest.approx(0.5) and half["hit_rate@10"] == 1.0

    unseen = [{"items": ["not-in-catalog"]}] * 30
    missed = vertical.live_metrics(model, _labelled(entries, schema, unseen))
    assert missed["hit_rate@10"] == 0 and missed["ndcg@10"] == 0
    assert vertical.live_metrics(model, []) == {"feedback_requests": 0.0}


# -- traffic ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> pipeline.TrainResult:
    pytest.importorskip("torch")
    return _train(tmp_path_factory.mktemp("traffic"), "traffic", "debug=fast")


@pytest.fixture(scope="module")
def windows(traffic: pipeline.TrainResult) -> list[list[dict[str, Any]]]:
    """Three windows' readings, one request each."""
    n = 3 * len(traffic.model.sensors)
    frame = traffic.vertical.example_inputs(traffic.splits, n).drop(columns="window")
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    size = traffic.model.input_steps * len(traffic.model.sensors)
    records = [
        {**r, "value": None if pd.isna(r["value"]) else r["value"]}
        for r in frame.to_dict("records")
    ]  # missing as null, as in JSON
    return [records[i : i + size] for i in range(0, len(records), size)]


def test_traffic_outcome_schema(traffic: pipeline.TrainResult) -> None:
    schema = traffic.vertical.outcome_schema(traffic.model)
    good = {"sensor": "s001", "timestamp": "2026-03-06T01:10:00", "speed": 55.5}
    assert _outcome(schema, {"observed": [good]}) == {"observed": [good]}
    aware = {**good, "timestamp": "2026-03-06T01:10:00Z", "speed": 0}
    assert _outcome(schema, {"observed": [good, aware]})["observed"][1]["speed"] == 0
    _rejects(schema, {"observed": []}, "observed")
    _rejects(schema, {}, "observed")
    _rejects(schema, {"observed": [{**good, "speed": -1}]}, "speed")
    _rejects(schema, {"observed": [{**good, "speed": "fast"}]}, "speed")
    _rejects(schema, {"observed": [{**good, "timestamp": "noon"}]}, "timestamp")
    _rejects(schema, {"observed": [{"timestamp": good["timestamp"], "speed": 1}]}, "sensor")
    _rejects(schema, {"observed": [{**good, "value": 3}]}, "value")
    _rejects(schema, {"observed": [good, {**good, "speed": 40}]}, "observed")
    with pytest.raises(ValidationError, match="speed"):
        schema.model_validate_json(
            '{"observed": [{"sensor": "s1", "timestamp": "2026-03-06", "speed": Infinity}]}'
        )


def test_traffic_monitor_frame(traffic: pipeline.TrainResult, windows: list) -> None:
    vertical, model = traffic.vertical, traffic.model
    entries = _logged(traffic, windows)
    frame = vertical.monitor_frame(model, entries)
    per_sensor = [f"speed.{s}" for s in model.sensors]
    assert list(frame.columns) == ["speed", "missing", "sensor", *per_sensor,
                                   "forecast_speed", "alert"]  # fmt: skip
    readings = [r for w in windows for r in w]
    forecasts = [row for e in entries for row in e.outputs]
    assert len(frame) == len(readings) + len(forecasts)
    read, out = frame.iloc[: len(readings)], frame.iloc[len(readings) :]
    values = np.array([r["value"] or 0.0 for r in readings])
    assert read["missing"].tolist() == (values == 0).tolist() and read["missing"].any()
    np.testing.assert_allclose(read["speed"], np.where(values > 0, values, np.nan))
    assert read["sensor"].tolist() == [r["sensor"] for r in readings]
    for sensor in model.sensors:
        own = read["sensor"] == sensor
        np.testing.assert_allclose(read.loc[own, f"speed.{sensor}"], read.loc[own, "speed"])
        assert (
            read.loc[~own, f"speed.{sensor}"].isna().all() and out[f"speed.{sensor}"].isna().all()
        )
    assert read["forecast_speed"].isna().all() and read["alert"].isna().all()
    assert out["forecast_speed"].tolist() == [r["speed"] for r in forecasts]
    assert out["alert"].tolist() == [r["alert"] for r in forecasts]
    assert out["speed"].isna().all() and out["missing"].isna().all()
    assert pd.api.types.is_bool_dtype(frame["missing"]) and pd.api.types.is_bool_dtype(
        frame["alert"]
    )
    via_json = vertical.monitor_frame(model, _logged(traffic, windows, via_json=True))
    pd.testing.assert_frame_equal(via_json, frame)
    outputs = vertical.monitor_frame(model, _private(entries, "none"))
    assert list(outputs.columns) == ["forecast_speed", "alert"]
    pd.testing.assert_frame_equal(outputs, out[["forecast_speed", "alert"]].reset_index(drop=True))
    # hashed: no speeds, but which readings are missing (null stays null) and from where
    hashed = vertical.monitor_frame(model, _private(entries, "hashed"))
    assert list(hashed.columns) == ["missing", "sensor", "forecast_speed", "alert"]
    assert hashed["missing"].tolist() == frame["missing"].tolist()
    assert hashed["sensor"][: len(readings)].tolist() == [
        value_hash("sensor", r["sensor"]) for r in readings
    ]


def _observed(entries: list[Logged], shift: float = 0.0) -> list[dict[str, Any]]:
    """Every forecast's sensor and time, with its own speed (+ shift) as the truth."""
    return [
        {"observed": [
            {"sensor": r["sensor"], "timestamp": r["timestamp"], "speed": r["speed"] + shift}
            for r in e.outputs
        ]}
        for e in entries
    ]  # fmt: skip


def test_traffic_live_metrics(traffic: pipeline.TrainResult, windows: list) -> None:
    vertical, model = traffic.vertical, traffic.model
    schema = vertical.outcome_schema(model)
    entries = _logged(traffic, windows)
    n = sum(len(e.outputs) for e in entries)
    exact = vertical.live_metrics(model, _labelled(entries, schema, _observed(entries)))
    maes = {k for k in traffic.metrics if k.startswith("mae_") and k.endswith("min")}
    assert maes == {"mae_15min", "mae_30min", "mae_60min"}
    assert maes <= set(exact) and exact["matched"] == n
    assert all(exact[k] == 0 for k in maes)
    slow = vertical.live_metrics(model, _labelled(entries, schema, _observed(entries, 2.0)))
    assert all(slow[k] == pytest.approx(2.0, abs=1e-6) for k in maes)
    assert slow["rmse_60min"] == pytest.approx(2.0, abs=1e-6)
    # the same from a JSON log (timestamps as text), and with the truth given in UTC
    as_text = _logged(traffic, windows, via_json=True)
    assert vertical.live_metrics(model, _labelled(as_text, schema, _observed(entries, 2.0))) == slow
    utc = [
        {"observed": [{**o, "timestamp": f"{pd.Timestamp(o['timestamp']).isoformat()}Z"}
                      for o in outcome["observed"]]}
        for outcome in _observed(entries, 2.0)
    ]  # fmt: skip
    assert vertical.live_metrics(model, _labelled(entries, schema, utc)) == slow

    # only the first window's 60-minute forecasts observed, one of them missing (0)
    first = [r for r in entries[0].outputs if r["horizon_min"] == 60]
    seen = [{"sensor": r["sensor"], "timestamp": r["timestamp"], "speed": r["speed"] + 4}
            for r in first]  # fmt: skip
    seen[0]["speed"] = 0.0
    seen.append({"sensor": "elsewhere", "timestamp": first[0]["timestamp"], "speed": 50.0})
    some = vertical.live_metrics(model, _labelled(entries[:1], schema, [{"observed": seen}]))
    assert some["matched"] == len(first) - 1
    assert some["mae_60min"] == pytest.approx(4.0, abs=1e-6) and "mae_15min" not in some
    assert vertical.live_metrics(model, []) == {"matched": 0.0}
