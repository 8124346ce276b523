"""Traffic vertical: simulated network -> Graph WaveNet vs baselines; loaders; API; batch."""

from __future__ import annotations

import dataclasses
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from fastapi.testclient import TestClient  # noqa: E402

from tests.fastpath import assert_same_answers, validated  # noqa: E402
from verticals.configs import compose  # noqa: E402
from verticals.core import pipeline  # noqa: E402
from verticals.core.batch import predict_file  # noqa: E402
from verticals.core.bundle import load_bundle, write_bundle  # noqa: E402
from verticals.core.contract import records_of  # noqa: E402
from verticals.core.errors import UserError  # noqa: E402
from verticals.core.serving import create_app  # noqa: E402
from verticals.traffic import graph, sensors, synthetic  # noqa: E402
from verticals.traffic.locations import read_positions  # noqa: E402
from verticals.traffic.metrics import masked  # noqa: E402

# Small enough for CI's two cores; long enough that the graph model sees incidents spread.
TINY = [
    "data.n_sensors=20",
    "data.days=14",
    "data.stride=3",
    "model.channels=16",
    "training.epochs=6",
    "training.batch_size=64",
    "training.baseline_epochs=2",
    "training.cpu_minutes=null",  # the quality asserted needs all 6 epochs, however busy
]


def cfg(root: Path, *overrides: str):
    return compose("train", "traffic", [f"paths.root_dir={root}", "trainer.device=cpu", *overrides])


@pytest.fixture(scope="session")
def traffic_run(tmp_path_factory: pytest.TempPathFactory):
    return pipeline.train(cfg(tmp_path_factory.mktemp("traffic"), *TINY))


@pytest.fixture(scope="session")
def traffic_bundle(traffic_run, tmp_path_factory: pytest.TempPathFactory):
    return load_bundle(write_bundle(traffic_run.run_dir, tmp_path_factory.mktemp("bundles")))


def test_incidents_spread_upstream_with_a_delay() -> None:
    net = synthetic.network(30, np.random.default_rng(1))
    feeds = net.upstream()
    origin = next(i for i, f in enumerate(feeds) if f)
    up, miles = feeds[origin][0]
    loss = np.zeros((len(net.sensors), 200))
    synthetic.spread(loss, feeds, origin, 50, 12, 0.7, wave_mph=12.0)
    first = {s: int(np.flatnonzero(loss[s])[0]) for s in (origin, up)}
    assert first[origin] == 50
    assert first[up] == 50 + round(miles / 12.0 * 60 / synthetic.STEP_MIN)  # later upstream
    assert loss[up].max() < loss[origin].max()  # and less deep
    downstream = [b for a, b, _ in net.edges if a == origin]
    assert all(loss[d].max() == 0 for d in downstream)  # queues do not travel downstream
    table = net.distances()
    table.to_csv(Path(tempfile.mkdtemp()) / "d.csv", index=False)
    road = graph.read_distances_frame(table, net.sensors, 0.1).weights
    linked = [road[a, b] > 0 for a, b, _ in net.edges]
    assert np.mean(linked) > 0.9  # DCRNN's kernel keeps the road links of the simulation
    frame, incidents = synthetic.speeds(net, 3, np.random.default_rng(2))
    assert frame.shape == (3 * synthetic.STEPS_PER_DAY, 30) and len(incidents) > 0
    assert (frame.to_numpy() == 0).mean() > 0  # some readings are missing


def test_masked_metrics_match_hand_computed_values() -> None:
    true = np.array([[50.0, 0.0], [40.0, 20.0]])  # one missing reading (0)
    pred = np.array([[45.0, 99.0], [44.0, 25.0]])
    got = masked(pred, true)
    errors = np.array([5.0, 4.0, 5.0])  # |45-50|, |44-40|, |25-20|; the 0 is skipped
    assert got["mae"] == pytest.approx(errors.mean())
    assert got["rmse"] == pytest.approx(np.sqrt((errors**2).mean()))
    assert got["mape"] == pytest.approx(np.mean([5 / 50, 4 / 40, 5 / 20]) * 100)


def test_graph_model_beats_todays_forecasts_at_60_minutes(traffic_run) -> None:
    m = traffic_run.metrics
    assert m["mae_60min"] < m["historical_mae_60min"], m
    assert m["mae_60min"] < m["last_mae_60min"], m
    run = traffic_run.run_dir
    for name in ("error_by_horizon.png", "forecast_vs_actual.png"):
        assert (run / "plots" / name).is_file()
    table = pd.read_csv(run / "horizons.csv")
    assert set(table["model"]) == {"gwnet", "gru", "historical", "last"}
    assert "Graph WaveNet" in (run / "model_card.md").read_text()


def test_bundle_round_trip_gives_identical_forecasts(traffic_run, traffic_bundle) -> None:
    inputs = traffic_run.vertical.example_inputs(traffic_run.splits, 200)
    here = traffic_run.vertical.predict(traffic_run.model, inputs)
    there = traffic_bundle.vertical.predict(traffic_bundle.model, inputs)
    pd.testing.assert_frame_equal(here, there)
    assert set(here["horizon_min"]) == {15, 30, 60}
    # the synthetic network's positions travel with the bundle (the console's map)
    assert traffic_bundle.model.positions == traffic_run.model.positions
    assert set(traffic_bundle.model.positions) == set(traffic_bundle.model.sensors)


def test_api_forecasts_a_window_and_names_bad_input(traffic_bundle, traffic_run) -> None:
    client = TestClient(create_app(traffic_bundle))
    inputs = traffic_run.vertical.example_inputs(traffic_run.splits, 1)
    window = inputs[inputs["window"] == inputs["window"].iloc[0]].drop(columns="window")
    body = [
        {"sensor": r.sensor, "timestamp": r.timestamp.isoformat(),
         "value": None if pd.isna(r.value) else r.value}
        for r in window.itertuples()
    ]  # fmt: skip
    got = client.post("/predict", json=body)
    assert got.status_code == 200, got.text
    rows = got.json()["predictions"]
    n = len(traffic_bundle.model.sensors)
    assert len(rows) == 3 * n and {"speed", "alert", "horizon_min"} <= set(rows[0])
    unknown = client.post("/predict", json=[*body, {**body[0], "sensor": "nope"}])
    assert unknown.status_code == 422 and "unknown sensor(s) nope" in unknown.json()["message"]
    short = [r for r in body if r["timestamp"] != body[0]["timestamp"]]
    bad = client.post("/predict", json=short)
    assert (
        bad.status_code == 422
        and "has 11 timestamps; expected the latest 12" in bad.json()["message"]
    )


def test_batch_file_of_windows(traffic_bundle, traffic_run, tmp_path: Path) -> None:
    inputs = traffic_run.vertical.example_inputs(traffic_run.splits, 400)
    inputs.to_csv(tmp_path / "windows.csv", index=False)
    rows = predict_file(traffic_bundle, tmp_path / "windows.csv", tmp_path / "out.csv",
                        batch_size=100, progress=False)  # fmt: skip
    out = pd.read_csv(tmp_path / "out.csv")
    windows = inputs["window"].nunique()
    assert rows == len(inputs) and len(out) == windows * 3 * len(traffic_bundle.model.sensors)


def test_metr_la_adjacency_and_bad_graphs(tmp_path: Path) -> None:
    ids = ["773869", "767541", "767542"]
    weights = np.array([[1, 0.5, 0], [0, 1, 0.2], [0.1, 0, 1]], dtype=np.float32)
    with (tmp_path / "adj_mx.pkl").open("wb") as fh:
        pickle.dump([ids, {s: i for i, s in enumerate(ids)}, weights], fh, protocol=2)
    g = graph.load(tmp_path / "adj_mx.pkl", ["767542", "773869"])
    assert g.sensors == ["767542", "773869"] and g.weights[1, 0] == pytest.approx(0.0)
    with pytest.raises(UserError, match="sensors nope of the data are not in the adjacency"):
        graph.load(tmp_path / "adj_mx.pkl", ["nope"])
    np.save(tmp_path / "rect.npy", np.ones((3, 2)))
    with pytest.raises(UserError, match="must be a square matrix"):
        graph.load(tmp_path / "rect.npy")
    pd.DataFrame({"from": ["a", "b"], "to": ["b", "c"], "cost": [100.0, 300.0]}).to_csv(
        tmp_path / "d.csv", index=False
    )
    kernel = graph.load(tmp_path / "d.csv", ["a", "b", "c"], threshold=0.0)
    assert kernel.weights[0, 1] > kernel.weights[1, 2] > 0 and kernel.weights[1, 0] == 0


def test_irregular_readings_are_named(tmp_path: Path) -> None:
    stamps = pd.to_datetime(["2026-01-01 00:00", "2026-01-01 00:05", "2026-01-01 00:12"])
    long = pd.DataFrame({"timestamp": stamps, "sensor": "a", "value": [50.0, 51.0, 52.0]})
    long.to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(
        UserError, match="irregular timestamps: 2026-01-01 00:05:00 -> 2026-01-01 00:12:00"
    ):
        sensors.load(tmp_path / "r.csv")
    long.rename(columns={"value": "speed"}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(UserError, match="no column"):
        sensors.load(tmp_path / "c.csv")


@pytest.mark.skipif(
    not (
        Path(__import__("os").environ.get("VERTICALS_DATA_DIR", "/nonexistent")) / "metr-la"
    ).is_dir(),
    reason="set VERTICALS_DATA_DIR to a folder holding metr-la/",
)
def test_reads_the_real_metr_la_graph() -> None:
    import os

    folder = Path(os.environ["VERTICALS_DATA_DIR"]) / "metr-la"
    g = graph.load(folder / "adj_mx.pkl")
    assert len(g.sensors) == 207 and g.weights.shape == (207, 207)
    where = read_positions(folder / "graph_sensor_locations.csv", g.sensors)
    assert set(where) == set(g.sensors)  # every sensor of the graph on the map
    lon, lat = np.array(list(where.values())).T
    assert -119 < lon.min() < lon.max() < -117.9 and 33.9 < lat.min() < lat.max() < 34.4  # L.A.


def test_sensor_locations_name_what_a_bad_file_lacks(tmp_path: Path) -> None:
    bad = tmp_path / "where.csv"
    bad.write_text("station_name,lat_deg,lon_deg\nA,34.1,-118.2\n")
    with pytest.raises(UserError, match="expected a sensor id column .* it has station_name"):
        read_positions(bad, ["A"])
    with pytest.raises(UserError, match="does not exist"):
        read_positions(tmp_path / "nowhere.csv", ["A"])


def test_resume_continues_the_run(traffic_run, tmp_path: Path) -> None:
    done = int(
        pd.read_csv(traffic_run.run_dir / "history.csv").query("model == 'gwnet'").epoch.max()
    )
    more = [f"training.resume={traffic_run.run_dir}", f"training.epochs={done + 1}"]
    result = pipeline.train(cfg(tmp_path, *TINY, *more))
    history = pd.read_csv(result.run_dir / "history.csv")
    assert history.query("model == 'gwnet'").epoch.tolist() == list(range(1, done + 2))
    again = [f"training.resume={result.run_dir}", f"training.epochs={done + 1}"]
    with pytest.raises(UserError, match=f"set training.epochs above {done + 1}"):
        pipeline.train(cfg(tmp_path, *TINY, *again))


def test_resume_after_an_interruption_before_the_baseline(traffic_run, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "interrupted"
    shutil.copytree(traffic_run.run_dir, run)
    (run / "checkpoints" / "gru.pt").unlink()  # stopped before the GRU baseline started
    done = int(pd.read_csv(run / "history.csv").query("model == 'gwnet'").epoch.max())
    result = pipeline.train(
        cfg(tmp_path, *TINY, f"training.resume={run}", f"training.epochs={done + 1}")
    )
    history = pd.read_csv(result.run_dir / "history.csv")
    assert history.query("model == 'gru'").epoch.tolist() == [1, 2]  # trained afresh


def test_window_checks_and_time_zones(traffic_run) -> None:
    vertical, model = traffic_run.vertical, traffic_run.model
    inputs = vertical.example_inputs(traffic_run.splits, 1)
    window = inputs[inputs["window"] == inputs["window"].iloc[0]].drop(columns="window")
    plain = vertical.predict(model, window)
    aware = window.assign(timestamp=window["timestamp"].dt.tz_localize("America/Los_Angeles"))
    # naive training data: an aware reading keeps its wall-clock time
    pd.testing.assert_frame_equal(vertical.predict(model, aware), plain)
    with pytest.raises(UserError, match="negative or infinite speeds"):
        vertical.predict(model, window.assign(value=np.inf))
    with pytest.raises(UserError, match="two readings at the same time"):
        vertical.predict(model, pd.concat([window, window.iloc[:1]]))
    with pytest.raises(UserError, match="not a date and time"):
        vertical.predict(model, window.assign(timestamp="soon"))


def test_distance_table_must_cover_the_sensors(tmp_path: Path) -> None:
    pd.DataFrame({"from": ["a"], "to": ["b"], "cost": [1.0]}).to_csv(
        tmp_path / "d.csv", index=False
    )
    with pytest.raises(UserError, match="sensors c of the data appear in no row"):
        graph.load(tmp_path / "d.csv", ["a", "b", "c"])


def _plain(frame: pd.DataFrame) -> list[dict]:
    """A frame's rows as dicts, missing values as None."""
    return [{k: None if pd.isna(v) else v for k, v in r.items()} for r in frame.to_dict("records")]


def _readings(frame: pd.DataFrame) -> list[dict]:
    """A frame's readings as a client sends them: ISO times, null for a missing value."""
    return [{**r, "timestamp": r["timestamp"].isoformat()} for r in _plain(frame)]


def _windows(traffic_run, n: int) -> pd.DataFrame:
    """`n` test windows (readings with a `window` column) of the trained model."""
    sensors = len(traffic_run.model.sensors)
    inputs = traffic_run.vertical.example_inputs(traffic_run.splits, n * sensors)
    assert inputs["window"].nunique() == n
    return inputs


def test_fast_path_answers_as_the_table_path(traffic_run, monkeypatch) -> None:
    vertical, model = traffic_run.vertical, traffic_run.model
    inputs = _windows(traffic_run, 3)
    one = inputs[inputs["window"] == inputs["window"].iloc[0]].drop(columns="window")
    holes = one.assign(value=one["value"].where(np.arange(len(one)) % 5 != 0, None))
    holes = holes.assign(value=holes["value"].where(np.arange(len(one)) % 7 != 0, 0.0))
    tokyo = one.assign(timestamp=one["timestamp"].dt.tz_localize("Asia/Tokyo"))
    shuffled = inputs.sample(frac=1.0, random_state=0)  # windows answered in order of first reading
    calls: list[int] = []
    forecast = model.forecast
    monkeypatch.setattr(model, "forecast", lambda x, *a, **k: calls.append(len(x)) or forecast(x))
    requests = [_readings(f) for f in (one, inputs, holes, tokyo, shuffled)]
    for request in requests:  # the demo window, several windows, gaps, another zone, disorder
        assert_same_answers(vertical, model, [request])
    # several requests together (float32 kernels may move a forecast by one 0.01 step)
    answers = assert_same_answers(vertical, model, requests, together_within=0.011)
    calls.clear()
    vertical.predict_records(model, [validated(vertical, model, r) for r in requests])
    assert calls == [1 + 3 + 1 + 1 + 3]  # every window of the call in one forecast
    n = len(model.sensors) * 3
    assert [len(a) for a in answers] == [n, 3 * n, n, n, 3 * n]
    assert answers[3] == answers[0]  # naive training data: an aware reading keeps its wall-clock
    assert answers[1][0]["window"] == inputs["window"].iloc[0] and answers[0][0]["window"] is None
    assert answers[0] == records_of(vertical.predict(model, one))  # the records' own table
    row = answers[0][0]
    assert [type(row[k]) for k in ("sensor", "horizon_min", "speed", "alert")] == [
        str, int, float, bool]  # fmt: skip
    assert isinstance(row["timestamp"], pd.Timestamp) and row["timestamp"].tzinfo is None


def test_fast_path_converts_aware_readings_to_the_training_zone(traffic_run) -> None:
    vertical = traffic_run.vertical
    model = dataclasses.replace(traffic_run.model, tz="America/Los_Angeles")
    one = _windows(traffic_run, 1).drop(columns="window")
    local = one.assign(timestamp=one["timestamp"].dt.tz_localize("America/Los_Angeles"))
    tokyo = local.assign(timestamp=local["timestamp"].dt.tz_convert("Asia/Tokyo"))
    offsets = _readings(tokyo)  # one reading per zone offset: the same instants
    for i, record in enumerate(offsets):
        stamp = tokyo["timestamp"].iloc[i].tz_convert(f"Etc/GMT-{i % 3}")
        record["timestamp"] = stamp.isoformat()
    requests = [_readings(one), _readings(tokyo), offsets]
    answers = assert_same_answers(vertical, model, requests, together_within=0.011)
    assert answers[1] == answers[2] == answers[0]  # Los Angeles wall-clock time, however sent


def test_fast_path_refuses_as_the_table_path(traffic_run) -> None:
    vertical, model = traffic_run.vertical, traffic_run.model
    inputs = _windows(traffic_run, 2)
    one = inputs[inputs["window"] == inputs["window"].iloc[0]].drop(columns="window")
    first, last = one["timestamp"].min(), one["timestamp"].max()
    steps = sorted(one["timestamp"].unique())
    later = one[one["timestamp"] == first].assign(timestamp=last + pd.Timedelta(minutes=5))
    bad = one.assign(value=one["value"].astype(object))
    bad.iloc[3, bad.columns.get_loc("value")] = "fast"
    cases = {
        "unknown sensor(s) nope, x1": pd.concat([one, one.iloc[:2].assign(sensor=["nope", "x1"])]),
        "two readings at the same time": pd.concat([one, one.iloc[:1]]),
        "has 11 timestamps; expected the latest 12": one[one["timestamp"] != first],
        "is not one 5-minute step": pd.concat([one[one["timestamp"] != steps[5]], later]),
        "negative or infinite speeds": one.assign(
            value=np.where(one.index == one.index[4], -1.0, one["value"])
        ),
        "negative or infinite speeds; send": one.assign(value=np.inf),
        "no window while others have one": inputs.assign(
            window=inputs["window"].where(np.arange(len(inputs)) != 5, None)
        ),
        f"window {inputs['window'].iloc[-1]}: a sensor has two": pd.concat([inputs, inputs[-1:]]),
    }
    unchecked = {  # what the request schema refuses, checked all the same for other callers
        "a value is not a number": bad,
        "timestamp 'soon' is not a date and time": one.assign(timestamp="soon"),
        "a reading has no timestamp": one.assign(timestamp=None),
        "no column value": one.drop(columns="value"),
    }
    for match, frame in {**cases, **unchecked}.items():
        records = validated(vertical, model, _readings(frame)) if match in cases else _plain(frame)
        with pytest.raises(UserError) as table:
            vertical.predict(model, pd.DataFrame(records))
        with pytest.raises(UserError) as fast:
            vertical.predict_records(model, [validated(vertical, model, _readings(one)), records])
        assert match in str(table.value)
        assert str(fast.value) == str(table.value), match


def test_batches_well_on_a_gpu_and_where_measured(traffic_run) -> None:
    vertical, model = traffic_run.vertical, traffic_run.model
    assert vertical.batches_well(dataclasses.replace(model, device="cuda:0")) is True
    alone, together = model.batch_gain(4, repeats=1)
    assert alone > 0 and together > 0
    assert isinstance(vertical.batches_well(model), bool)


def test_a_server_micro_batches_windows_not_readings(traffic_bundle, traffic_run) -> None:
    """Three window requests sent together reach the model as one call of 3 inputs (a
    window is one input, whatever its number of readings), each answered its own."""
    import asyncio
    import re

    import httpx

    from verticals.core.config import ServeConfig

    options = ServeConfig(batching="on", max_batch=8, batch_wait_ms=500)
    app = create_app(traffic_bundle, options=options)
    inputs = _windows(traffic_run, 3)
    bodies = [_readings(w.drop(columns="window")) for _, w in inputs.groupby("window")]
    solo = TestClient(create_app(traffic_bundle))
    expected = [solo.post("/predict", json=b).json()["predictions"] for b in bodies]

    async def together() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return list(await asyncio.gather(*(client.post("/predict", json=b) for b in bodies)))

    answers = asyncio.run(together())
    for answer, want in zip(answers, expected, strict=True):
        got = answer.json()["predictions"]
        assert [(g["sensor"], g["horizon_min"]) for g in got] == [
            (w["sensor"], w["horizon_min"]) for w in want
        ]
        assert max(abs(g["speed"] - w["speed"]) for g, w in zip(got, want, strict=True)) <= 0.011
    metrics = TestClient(app).get("/metrics").text
    calls = re.search(r"^verticals_batch_inputs_count (\S+)$", metrics, re.MULTILINE)
    inputs_seen = re.search(r"^verticals_batch_inputs_sum (\S+)$", metrics, re.MULTILINE)
    assert calls and inputs_seen and (float(calls[1]), float(inputs_seen[1])) == (1.0, 3.0)
