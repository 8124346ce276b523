"""The prediction log, feedback and monitor through the core: on a real SQLite file and on a
real PostgreSQL server the tests start, through the app, the CLI and a killed server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from http.client import HTTPException
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from verticals.core import pipeline
from verticals.core.bundle import write_bundle
from verticals.core.errors import UserError
from verticals.core.predlog import (
    LogSettings,
    PredictionLog,
    current_revision,
    head_revision,
    parse_since,
    prediction_row,
    value_hash,
)
from verticals.core.serving import create_app

from .postgres import postgres_db, postgres_url  # noqa: F401 - fixtures
from .servers import free_port, http, run_cli, wait_ready


@pytest.fixture(params=["sqlite", "postgresql"])
def log_settings(request: pytest.FixtureRequest, tmp_path: Path) -> LogSettings:
    """The same log on an embedded SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return LogSettings.default(tmp_path / "predlog")
    url = request.getfixturevalue("postgres_db")
    return LogSettings(url=url, files_dir=str(tmp_path / "files"))


@pytest.fixture(scope="module")
def finance_bundle(finance_run: pipeline.TrainResult, tmp_path_factory: pytest.TempPathFactory):
    return write_bundle(finance_run.run_dir, tmp_path_factory.mktemp("b"))


def _records(run: pipeline.TrainResult, n: int) -> list[dict]:
    frame = run.vertical.example_inputs(run.splits, n)
    return json.loads(frame.to_json(orient="records"))


def test_opening_migrates_once_and_a_worker_never_does(log_settings: LogSettings) -> None:
    log = PredictionLog(log_settings)
    assert current_revision(log.engine) == head_revision()
    names = set(sa.inspect(log.engine).get_table_names())
    assert {"predictions", "feedback", "monitor_runs", "predlog_alembic_version"} <= names
    PredictionLog(log_settings, migrate_schema=False)  # current: opens
    if log_settings.embedded_file is not None:
        other = LogSettings.default(Path(log_settings.files_dir).parent / "other")
        with pytest.raises(UserError, match="is not migrated"):
            PredictionLog(other, migrate_schema=False)


def test_an_older_log_is_upgraded_in_place(tmp_path: Path) -> None:
    """A log written by a suite at revision 0001 keeps its rows when a newer suite opens it."""
    from alembic import command

    from verticals.core.predlog import _alembic_config, _engine

    settings = LogSettings.default(tmp_path / "old")
    engine = _engine(settings.url)
    config = _alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    old = {"request_id": "old-1", "vertical": "toy", "model_version": "v0",
           "created": "2026-01-01 00:00:00.000000", "source": "api", "n_inputs": 1}  # fmt: skip
    with engine.begin() as conn:
        conn.execute(sa.insert(sa.table("predictions", *map(sa.column, old))), [old])
    assert current_revision(engine) == "0001"
    log = PredictionLog(settings)
    assert current_revision(log.engine) == head_revision() != "0001"
    assert "spool_offsets" in sa.inspect(log.engine).get_table_names()
    (entry,) = log.entries("toy")
    assert entry.request_id == "old-1" and entry.model_version == "v0"


def test_concurrent_writes_share_commits_and_all_land(log_settings: LogSettings) -> None:
    log = PredictionLog(log_settings)

    async def burst() -> None:
        rows = [prediction_row(f"r{i}", "toy", "v1", inputs='[{"x": 1}]', outputs="{}")
                for i in range(400)]  # fmt: skip
        await asyncio.gather(*(log.write(row) for row in rows))

    asyncio.run(burst())
    if log.settings.embedded_file is None:  # a server: committed, many rows per commit
        assert log.writer.groups < 100
    else:  # embedded: in this process's spool until moved, in batches
        assert log.spool is not None and log.spool.path.stat().st_size > 400 * 50
    assert log.counts("toy") == {"predictions": 400, "outcomes": 0}
    log.close()


def test_feedback_replaces_and_refuses_unknown_ids(finance_bundle: Path, log_settings) -> None:
    client = TestClient(create_app(finance_bundle, prediction_log=log_settings))
    record = {"age": 40, "income": 50000}
    answered = client.post("/predict", json=record, headers={"X-Request-ID": "app-1"})
    assert answered.json()["request_id"] == "app-1" == answered.headers["x-request-id"]
    bad_id = client.post("/predict", json=record, headers={"X-Request-ID": "no spaces allowed"})
    assert bad_id.headers["x-request-id"] != "no spaces allowed"  # a fresh id instead
    assert bad_id.json()["request_id"] == bad_id.headers["x-request-id"]
    first = client.post("/feedback", json=[{"request_id": "app-1", "defaulted": 1,
                                            "observed_at": "2027-03-01"}])  # fmt: skip
    assert first.json() == {"stored": 1, "replaced": 0}
    second = client.post("/feedback", json={"request_id": "app-1", "defaulted": 0})
    assert (
        second.json()["replaced"] == 1
        and "replaced the earlier outcome" in second.json()["message"]
    )
    missing = client.post("/feedback", json=[{"request_id": "app-1", "defaulted": 1},
                                             {"request_id": "ghost", "defaulted": 1}])  # fmt: skip
    assert missing.status_code == 404 and missing.json()["request_ids"] == ["ghost"]
    for body, field in (([{"request_id": "app-1", "defaulted": 2}], "feedback[0].defaulted"),
                        ([{"request_id": "app-1"}], "feedback[0].defaulted"),
                        ([{"request_id": "app-1", "defaulted": 1, "colour": 1}], "colour"),
                        ([], "empty")):  # fmt: skip
        reply = client.post("/feedback", json=body)
        assert reply.status_code == 422 and field in reply.json()["message"], reply.text
    log = PredictionLog(log_settings)
    (entry,) = log.entries("finance", outcomes_only=True)
    assert entry.outcome == {"defaulted": 0} and entry.inputs[0]["income"] == 50000
    assert entry.observed_at is None  # the replacement said nothing of when


def test_privacy_settings_keep_what_they_say(finance_bundle: Path, tmp_path: Path) -> None:
    record = {"age": 40, "income": 50000, "region": "north"}
    kept = {}
    for inputs, drop in (("full", ["income"]), ("hashed", []), ("none", [])):
        settings = LogSettings(url=f"sqlite:///{tmp_path / inputs}.db", files_dir=str(tmp_path),
                               inputs=inputs, drop=tuple(drop))  # fmt: skip
        client = TestClient(create_app(finance_bundle, prediction_log=settings))
        assert client.post("/predict", json=record).status_code == 200
        (entry,) = PredictionLog(settings).entries("finance")
        kept[inputs] = entry.inputs
        assert entry.outputs[0]["pd"] > 0  # outputs are always kept
    assert "income" not in kept["full"][0] and kept["full"][0]["age"] == 40
    assert kept["hashed"][0]["region"] == value_hash("region", "north") != "north"
    assert kept["none"] is None


def test_a_killed_server_loses_no_answered_prediction(
    finance_run: pipeline.TrainResult, finance_bundle: Path, tmp_path: Path
) -> None:
    """SIGKILL in the middle of a burst: every request that got a 200 is in the log, and
    the log opens cleanly afterwards."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "verticals", "serve", "finance", f"bundle={finance_bundle}",
               f"paths.root_dir={tmp_path}", f"serve.port={port}", "tracking=none"]  # fmt: skip
    with (tmp_path / "server.log").open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    answered: list[str] = []
    records = _records(finance_run, 50)
    try:
        wait_ready(base, server)
        stop = threading.Event()

        def client(k: int) -> None:
            i = 0
            while not stop.is_set():
                try:
                    status, body = http(
                        f"{base}/predict", json.dumps(records[(k + i) % 50]).encode()
                    )
                except (OSError, HTTPException):
                    return  # the server is gone (mid-answer, perhaps)
                if status == 200:
                    answered.append(json.loads(body)["request_id"])
                i += 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        if server.poll() is None:
            server.kill()
    assert len(answered) > 50
    spool = tmp_path / "predlog" / "predictions.db-spool"
    log = PredictionLog(LogSettings.default(tmp_path / "predlog"))  # opening it is clean
    assert log.counts("finance")["predictions"] >= len(answered)  # readers move spools first
    left = [*spool.glob("*.jsonl"), *spool.glob("*.done")]
    assert not left, "a dead server's spool is removed once moved"
    db = tmp_path / "predlog" / "predictions.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        logged = [r for (r,) in conn.execute("SELECT request_id FROM predictions")]
    assert set(answered) <= set(logged), f"{len(set(answered) - set(logged))} answered, not logged"
    assert len(logged) == len(set(logged)), "a row moved twice"


def test_monitor_flags_scaled_incomes_and_the_cli_round_trip(
    finance_run: pipeline.TrainResult, finance_bundle: Path, tmp_path: Path, capsys
) -> None:
    """Batch traffic and feedback through the CLI, a monitor inside its thresholds, then
    incomes tripled: exit 1 naming income; export and prune."""
    root = [f"paths.root_dir={tmp_path}", f"bundle={finance_bundle}"]
    watch = [*root, "tracking=none"]
    frame = finance_run.vertical.example_inputs(finance_run.splits, 600)
    frame.to_csv(tmp_path / "in.csv", index=False)
    assert run_cli("predict", "finance", f"input={tmp_path / 'in.csv'}",
                f"output={tmp_path / 'out.csv'}", *root) == 0  # fmt: skip
    scored = pd.read_csv(tmp_path / "out.csv")
    assert scored.columns[0] == "request_id" and scored.request_id.is_unique
    rng = np.random.default_rng(0)
    defaulted = (rng.random(len(scored)) < scored["pd"]).astype(int)
    outcomes = pd.DataFrame({"request_id": scored.request_id, "defaulted": defaulted})
    outcomes.to_csv(tmp_path / "outcomes.csv", index=False)
    assert run_cli("feedback", "finance", f"input={tmp_path / 'outcomes.csv'}", *root) == 0
    assert "stored 600 outcomes" in capsys.readouterr().out
    outcomes.loc[3, "defaulted"] = 5
    outcomes.to_csv(tmp_path / "bad.csv", index=False)
    assert run_cli("feedback", "finance", f"input={tmp_path / 'bad.csv'}", *root) == 2
    assert "item[3].defaulted" in capsys.readouterr().err

    report = tmp_path / "report"
    assert run_cli("monitor", "finance", *watch, f"output={report}") == 0
    figures = json.loads((report / "figures.json").read_text())
    assert figures["requests"] == 600 and figures["feedback"] == 600 and not figures["breaches"]
    assert figures["live"]["roc_auc"] > 0.65  # outcomes drawn from the model's own PDs
    assert abs(figures["live"]["calibration_gap"]) < 0.05
    assert {"income", "pd", "score"} <= set(figures["columns"])
    html = (report / "report.html").read_text()
    assert "data:image/png;base64," in html and "http" not in html.replace("http-equiv", "")
    assert (report / "plots" / "psi.png").is_file() and (report / "summary.md").is_file()

    shifted = frame.copy()
    shifted["income"] *= 3
    shifted.to_csv(tmp_path / "shifted.csv", index=False)
    assert run_cli("predict", "finance", f"input={tmp_path / 'shifted.csv'}",
                f"output={tmp_path / 'out2.csv'}", *root) == 0  # fmt: skip
    capsys.readouterr()
    later = parse_since("1m").isoformat()  # the shifted batch only
    assert run_cli("monitor", "finance", *watch, f"since={later}", f"output={tmp_path / 'r2'}") == 1
    out = capsys.readouterr().out
    assert "BREACH income drifted" in out and "shifted: income" in out
    assert run_cli("monitor", "finance", *watch, "since=next tuesday") == 2

    export = tmp_path / "log.parquet"
    assert run_cli("log", "export", "finance", f"output={export}", root[0]) == 0
    table = pd.read_parquet(export)
    assert len(table) == 1200 and table.outcome.notna().sum() == 600
    assert run_cli("log", "prune", "finance", "older_than=0s", root[0]) == 0
    log = PredictionLog(LogSettings.default(tmp_path / "predlog"))
    assert log.counts("finance") == {"predictions": 0, "outcomes": 0}


def test_feedback_without_a_log_and_bad_windows(finance_bundle: Path) -> None:
    client = TestClient(create_app(finance_bundle))
    assert client.post("/feedback", json=[]).status_code == 503
    assert parse_since("7d") < parse_since("1h") and parse_since(None) is None
    with pytest.raises(UserError, match="since='soon'"):
        parse_since("soon")


def test_monitor_gauges_show_the_latest_run(finance_bundle: Path, tmp_path: Path) -> None:
    settings = LogSettings.default(tmp_path / "predlog")
    log = PredictionLog(settings)
    figures = {"columns": {"income": {"psi": 0.4}}, "live": {"roc_auc": 0.7}, "breaches": [{}]}
    log.save_monitor("finance", "v9", None, 120, False, figures)
    metrics = TestClient(create_app(finance_bundle, prediction_log=settings)).get("/metrics").text
    assert 'verticals_monitor_psi{column="income"} 0.4' in metrics
    assert 'verticals_monitor_live{metric="roc_auc"} 0.7' in metrics
    assert 'verticals_monitor_ok{model_version="v9"} 0.0' in metrics
    assert "verticals_monitor_breaches 1.0" in metrics


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    log = PredictionLog(LogSettings.default(tmp_path / "p"))
    with log.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert os.path.exists(tmp_path / "p" / "predictions.db")


def test_spool_rotation_and_movers_never_move_a_row_twice(tmp_path: Path) -> None:
    """Rows over several rotated spool files, moved by two movers at once and again after
    the files are gone: each row once; a writer's live spool is not taken for a dead one."""
    from verticals.core import spool as spools

    settings = LogSettings.default(tmp_path / "p")
    log = PredictionLog(settings)
    spool = spools.Spool(tmp_path / "sp", settings.embedded_file, rotate_bytes=4096, mover=False)
    for i in range(300):
        spool.append(prediction_row(f"r{i}", "toy", "v1", inputs='[{"x": 1}]', outputs="{}"))
    assert len(list((tmp_path / "sp").glob("*.done"))) > 5  # rotated
    assert not spools._dead(spool.path)  # this process still writes it
    done = list((tmp_path / "sp").glob("*.done"))[0]
    raw = log.engine.raw_connection()
    try:
        with done.open("rb") as early:  # opened before it is moved and deleted
            database = settings.embedded_file

            def mover() -> None:
                spools.move_all(tmp_path / "sp", sqlite3.connect(database, timeout=30))

            threads = [threading.Thread(target=mover) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert spools.move(done, raw.driver_connection, finished=True) == 0  # gone now
            del early
        spool.close(raw.driver_connection)
    finally:
        raw.close()
    ids = [e.request_id for e in log.entries("toy")]
    assert sorted(ids) == sorted(f"r{i}" for i in range(300))
    assert not list((tmp_path / "sp").glob("*.jsonl")) and not list(
        (tmp_path / "sp").glob("*.done")
    )


def test_two_outcomes_at_once_replace_not_fail(finance_bundle: Path, tmp_path: Path) -> None:
    settings = LogSettings.default(tmp_path / "predlog")
    client = TestClient(create_app(finance_bundle, prediction_log=settings))
    for i in range(10):
        client.post("/predict", json={"age": 30 + i}, headers={"X-Request-ID": f"c-{i}"})
    statuses: list[int] = []

    def send(i: int, value: int) -> None:
        reply = client.post("/feedback", json=[{"request_id": f"c-{i}", "defaulted": value}])
        statuses.append(reply.status_code)

    threads = [threading.Thread(target=send, args=(i, v)) for i in range(10) for v in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 20
    with sqlite3.connect(settings.embedded_file) as conn:
        revisions = [r for (r,) in conn.execute("SELECT revision FROM feedback")]
    assert sorted(revisions) == [2] * 10  # each request: one outcome, replaced once


def test_export_types_columns_that_start_empty(tmp_path: Path) -> None:
    """More than one part (50,000 rows) to Parquet, feedback only in the second part."""
    from verticals.core.feedback import Outcome
    from verticals.core.tables import TableWriter

    log = PredictionLog(LogSettings.default(tmp_path / "p"))
    log.write_now([prediction_row(f"r{i}", "toy", "v1", inputs="[]", outputs="{}")
                   for i in range(50_010)])  # fmt: skip
    log.store_feedback("toy", [Outcome("r50005", {"y": 1})])
    writer = TableWriter(tmp_path / "log.parquet")
    for part in log.table("toy"):
        writer.write(part)
    writer.close()
    table = pd.read_parquet(tmp_path / "log.parquet")
    assert len(table) == 50_010 and table.outcome.notna().sum() == 1
