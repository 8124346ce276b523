"""Monitoring of retail and traffic end to end, on demo data: a bundle served with a
prediction log (an embedded SQLite file, and a PostgreSQL server the tests start), traffic
from the test split as clients send it, feedback from the data's own truth, and the
`monitor` command: inside its thresholds on honest traffic, exit 1 naming the shifted
columns once the incoming data moves (a category asked for, unknown customers; half the
road sensors reading half their speed). 404 and 422 from /feedback for each vertical."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from verticals.configs import compose
from verticals.core import pipeline
from verticals.core.bundle import write_bundle
from verticals.core.predlog import LogSettings, PredictionLog, utcnow
from verticals.core.serving import create_app

from .postgres import postgres_db, postgres_url  # noqa: F401 - fixtures
from .servers import run_cli


def _train(root: Path, vertical: str, *overrides: str) -> pipeline.TrainResult:
    cfg = compose(
        "train",
        vertical,
        [f"paths.root_dir={root}", "trainer.device=cpu", "tracking=none", *overrides],
    )
    return pipeline.train(cfg)


@pytest.fixture(scope="module")
def retail(tmp_path_factory: pytest.TempPathFactory) -> pipeline.TrainResult:
    pytest.importorskip("implicit")
    return _train(tmp_path_factory.mktemp("retail"), "retail", "debug=fast")


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> pipeline.TrainResult:
    pytest.importorskip("torch")
    # debug=fast's 5 days leave a test day of 23 hourly windows, fewer than the monitor's
    # min_rows=30 requests it judges; 10 days give 47
    return _train(tmp_path_factory.mktemp("traffic"), "traffic", "debug=fast", "data.days=10")


@pytest.fixture(scope="module")
def bundles(
    retail: pipeline.TrainResult,
    traffic: pipeline.TrainResult,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bundles")
    return {run.vertical.name: write_bundle(run.run_dir, folder) for run in (retail, traffic)}


@pytest.fixture(params=["sqlite", "postgresql"])
def log_settings(request: pytest.FixtureRequest, tmp_path: Path) -> LogSettings:
    """The log on an embedded SQLite file (where the CLI finds it under paths.root_dir)
    and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return LogSettings.default(tmp_path / "predlog")
    url = request.getfixturevalue("postgres_db")
    return LogSettings(url=url, files_dir=str(tmp_path / "predlog" / "files"))


def _watch(bundle: Path, settings: LogSettings, root: Path) -> list[str]:
    """The CLI overrides that read this bundle's log."""
    args = [f"bundle={bundle}", f"paths.root_dir={root}"]
    if settings.embedded_file is None:
        args.append(f"log.url='{settings.url}'")
    return args


def _monitor(vertical: str, watch: list[str], output: Path, *window: str) -> tuple[int, dict]:
    code = run_cli("monitor", vertical, *watch, "tracking=none", *window, f"output={output}")
    return code, json.loads((output / "figures.json").read_text())


def _psi(figures: dict[str, Any]) -> dict[str, float]:
    return {name: round(c["psi"], 4) for name, c in figures["columns"].items()}


def _shifted(out: str) -> list[str]:
    (line,) = [line for line in out.splitlines() if line.startswith("shifted: ")]
    return line.removeprefix("shifted: ").split(", ")


# -- retail -----------------------------------------------------------------------------


def test_retail_monitor_live_metrics_and_two_shifts(
    retail: pipeline.TrainResult,
    bundles: dict[str, Path],
    log_settings: LogSettings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every test customer asks for their top 10 and later buys their held-out items: the
    live ranking metrics are the test metrics, nothing drifted. Then customers asking for
    one category only, then customers the model never saw: exit 1 naming each."""
    bundle = bundles["retail"]
    client = TestClient(create_app(bundle, prediction_log=log_settings))
    test = retail.splits.test
    users = retail.vertical.example_inputs(retail.splits, len(test.users))["user_id"].tolist()
    truth = dict(zip(test.users, test.items, strict=True))
    ids = []
    for user in users:  # one customer per request, as the shop's page asks
        answer = client.post("/predict", json={"user_id": user})
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["request_id"])
    outcomes = [
        {"request_id": rid, "items": [str(i) for i in truth[user]], "observed_at": "2027-01-05"}
        for rid, user in zip(ids, users, strict=True)
    ]
    stored = client.post("/feedback", json=outcomes)
    assert stored.json() == {"stored": len(users), "replaced": 0}, stored.text

    watch = _watch(bundle, log_settings, tmp_path)
    code, figures = _monitor("retail", watch, tmp_path / "honest")
    assert code == 0, figures["breaches"]
    assert figures["requests"] == figures["feedback"] == len(users) and figures["judged"]
    live = figures["live"]
    assert live["feedback_requests"] == len(users)
    assert live["hit_rate@10"] > 0.2, live  # 0.38: well above the 0.05 threshold
    # the same customers, the same held-out items: the live figures are the test's
    for name in ("precision@10", "recall@10", "map@10", "ndcg@10"):
        assert live[name] == pytest.approx(retail.metrics[name], rel=1e-6), name
        assert figures["test"][name] == retail.metrics[name]
    assert max(_psi(figures).values()) < 0.1
    assert "every figure inside its threshold" in capsys.readouterr().out

    # customers browsing one category
    categories = retail.model.catalog["category"].value_counts()
    category = str(categories.index[-1])
    since = utcnow()
    for user in users[:60]:
        answer = client.post("/predict", json={"user_id": user, "category": category})
        assert answer.status_code == 200, answer.text
    # then new customers, never seen in training: best sellers instead
    until = utcnow()
    for n in range(60):
        answer = client.post("/predict", json={"user_id": f"new-customer-{n}"})
        assert answer.json()["predictions"][0]["fallback"] is True

    capsys.readouterr()
    window = (f"since={since.isoformat()}", f"until={until.isoformat()}")
    code, figures = _monitor("retail", watch, tmp_path / "category", *window)
    out = capsys.readouterr().out
    assert code == 1 and figures["requests"] == 60 and figures["feedback"] == 0
    assert "BREACH category drifted" in out
    assert "category" in _shifted(out) and "unknown_user" not in _shifted(out)
    assert figures["columns"]["category"]["new"] == 1.0  # a category never asked before

    code, figures = _monitor("retail", watch, tmp_path / "new", f"since={until.isoformat()}")
    out = capsys.readouterr().out
    assert code == 1 and figures["requests"] == 60
    shifted = _shifted(out)
    assert "category" not in shifted
    assert {"unknown_user", "recommended_popularity"} <= set(shifted), shifted
    assert "BREACH unknown_user rate 1 > 0.25" in out  # a share, bounded in conf/retail/monitor
    assert figures["rates"]["unknown_user"] == 1.0


# -- traffic ----------------------------------------------------------------------------


def _windows(run: pipeline.TrainResult, offset: int) -> pd.DataFrame:
    """Hourly test windows starting `offset` steps after those of the training reference
    (the same day's traffic, not the very readings the reference holds)."""
    test = run.splits.test
    later = dataclasses.replace(
        run.splits, test=dataclasses.replace(test, starts=test.starts[offset:])
    )
    return run.vertical.example_inputs(later, 10_000)


def _requests(frame: pd.DataFrame) -> list[list[dict[str, Any]]]:
    """One request per window, its readings as JSON (missing as null)."""
    requests = []
    for _, rows in frame.groupby("window", sort=False):
        requests.append([
            {"sensor": r.sensor, "timestamp": r.timestamp.isoformat(),
             "value": None if pd.isna(r.value) else float(r.value)}
            for r in rows.itertuples()
        ])  # fmt: skip
    return requests


def test_traffic_monitor_live_errors_and_slowed_sensors(
    traffic: pipeline.TrainResult,
    bundles: dict[str, Path],
    log_settings: LogSettings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A window per request over the test day; the speeds the sensors then read, as a
    table through `verticals feedback`: live errors by horizon near the test errors,
    nothing drifted. Then half the sensors read half their speed: exit 1 naming their
    `speed.<sensor>` columns."""
    bundle = bundles["traffic"]
    model = traffic.model
    client = TestClient(create_app(bundle, prediction_log=log_settings))
    requests = _requests(_windows(traffic, 6))
    assert len(requests) >= 40
    net = traffic.splits.test.net
    speeds = pd.DataFrame(net.speeds, index=net.times, columns=net.sensors)
    rows = []
    for body in requests:
        answer = client.post("/predict", json=body)
        assert answer.status_code == 200, answer.text
        reply = answer.json()
        for forecast in reply["predictions"]:  # what the sensor read then (0: missing)
            sensor, when = forecast["sensor"], forecast["timestamp"]
            seen = float(speeds.at[pd.Timestamp(when), sensor])
            rows.append({"request_id": reply["request_id"], "observed.sensor": sensor,
                         "observed.timestamp": when, "observed.speed": seen})  # fmt: skip
    table = pd.DataFrame(rows)
    table.to_csv(tmp_path / "observed.csv", index=False)
    watch = _watch(bundle, log_settings, tmp_path)
    assert run_cli("feedback", "traffic", f"input={tmp_path / 'observed.csv'}", *watch) == 0
    assert f"stored {len(requests)} outcomes" in capsys.readouterr().out

    code, figures = _monitor("traffic", watch, tmp_path / "honest")
    psi = _psi(figures)
    assert code == 0, figures["breaches"]
    assert figures["requests"] == figures["feedback"] == len(requests) and figures["judged"]
    live = figures["live"]
    assert live["matched"] == (table["observed.speed"] > 0).sum()
    for minutes in (15, 30, 60):
        name = f"mae_{minutes}min"
        assert figures["test"][name] == traffic.metrics[name]
        # hourly windows of the test day against all its windows: close, not equal
        assert live[name] == pytest.approx(traffic.metrics[name], rel=0.1), name
    assert live["mae_60min"] < 10  # the threshold
    assert {f"speed.{s}" for s in model.sensors} <= set(psi)
    assert max(psi.values()) < 0.1
    assert (tmp_path / "honest" / "report.html").is_file()

    slowed = model.sensors[: len(model.sensors) // 2]
    shifted_frame = _windows(traffic, 6)
    half = shifted_frame["sensor"].isin(slowed)
    shifted_frame.loc[half, "value"] *= 0.5
    since = utcnow()
    for body in _requests(shifted_frame):
        assert client.post("/predict", json=body).status_code == 200
    capsys.readouterr()
    code, figures = _monitor("traffic", watch, tmp_path / "slow", f"since={since.isoformat()}")
    out = capsys.readouterr().out
    psi = _psi(figures)
    assert code == 1 and figures["requests"] == len(requests) and figures["feedback"] == 0
    shifted = set(_shifted(out))
    assert {f"speed.{s}" for s in slowed} <= shifted, out
    for sensor in slowed:
        column = figures["columns"][f"speed.{sensor}"]
        assert column["mean"] == pytest.approx(column["mean_reference"] / 2, rel=0.1)
    untouched = {f"speed.{s}" for s in model.sensors if s not in slowed}
    assert not shifted & untouched, out
    assert "speed" in shifted  # every reading's speed, half of them halved
    # the monitor's result is in the log's database: the server shows it
    metrics = client.get("/metrics").text
    assert f'verticals_monitor_ok{{model_version="{figures["model_version"]}"}} 0.0' in metrics
    assert f'verticals_monitor_psi{{column="speed.{slowed[0]}"}}' in metrics


# -- feedback refusals ------------------------------------------------------------------


def _outcome(vertical: str, answer: dict[str, Any]) -> dict[str, Any]:
    """A well-formed outcome of an answer."""
    if vertical == "retail":
        return {"items": [answer["predictions"][0]["recommendations"][0]["item_id"]]}
    first = answer["predictions"][0]
    return {"observed": [{"sensor": first["sensor"], "timestamp": first["timestamp"],
                          "speed": 50.0}]}  # fmt: skip


@pytest.mark.parametrize("vertical", ["retail", "traffic"])
def test_feedback_404_for_unknown_ids_and_422_naming_the_field(
    vertical: str,
    retail: pipeline.TrainResult,
    traffic: pipeline.TrainResult,
    bundles: dict[str, Path],
    log_settings: LogSettings,
) -> None:
    run = {"retail": retail, "traffic": traffic}[vertical]
    client = TestClient(create_app(bundles[vertical], prediction_log=log_settings))
    if vertical == "retail":
        body: Any = {"user_id": run.splits.test.users[0]}
    else:
        body = _requests(run.vertical.example_inputs(run.splits, 1))[0]
    answer = client.post("/predict", json=body, headers={"X-Request-ID": "seen-1"}).json()
    good = {"request_id": "seen-1", **_outcome(vertical, answer)}

    unknown = client.post("/feedback", json=[good, {**good, "request_id": "never-logged"}])
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["request_ids"] == ["never-logged"]
    assert "never-logged" in unknown.json()["message"]

    if vertical == "retail":
        bad = [
            ({**good, "items": []}, "feedback[1].items"),
            ({**good, "items": [1.5]}, "feedback[1].items"),
            ({**good, "event": "view"}, "feedback[1].event"),
            ({"request_id": "seen-1"}, "feedback[1].items"),
        ]
    else:
        seen = good["observed"][0]
        noon, twice = [{**seen, "timestamp": "noon"}], [seen, {**seen, "speed": 3.0}]
        bad = [
            ({**good, "observed": [{**seen, "speed": -1}]}, "feedback[1].observed[0].speed"),
            ({**good, "observed": noon}, "feedback[1].observed[0].timestamp"),
            ({**good, "observed": []}, "feedback[1].observed"),
            ({**good, "observed": twice}, "feedback[1].observed: Value error, two speeds"),
        ]
    for item, field in bad:
        reply = client.post("/feedback", json=[good, item])
        assert reply.status_code == 422, reply.text
        assert field in reply.json()["message"], reply.text
    assert PredictionLog(log_settings).counts(vertical) == {"predictions": 1, "outcomes": 0}
    stored = client.post("/feedback", json=good)
    assert stored.json() == {"stored": 1, "replaced": 0}
