"""Retrain on feedback, finance end to end on demo data: a champion served with a prediction
log; applicants from a world that has changed (a region that was pure noise now drives
defaults) with their outcomes; the monitor flags it; `verticals retrain` trains a challenger
that wins on the holdout and is promoted, and the running server answers with it. A
challenger taught shuffled labels is refused with its reason, and a retrain stopped
part-way leaves the registry as it was."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from verticals.core import model_versions, pipeline
from verticals.core.bundle import load_bundle, write_bundle
from verticals.core.predlog import LogSettings
from verticals.core.serving import create_app
from verticals.core.tracking import Store
from verticals.finance.data import to_matrix
from verticals.finance.synthetic import generate_applicants

from .conftest import finance_cfg
from .servers import free_port, http, run_cli, wait_ready

BASE = ["data=synthetic", "data.n_rows=4000", "model.num_boost_round=200"]
NEW_DRIVER = 3.0  # log-odds added for applicants from the west: a risk driver that was noise
APPLICANTS = 2400


def changed_world(n: int, seed: int, shuffle: bool = False) -> tuple[list[dict], np.ndarray]:
    """Applicants as a client sends them, and whether each defaulted in the new world."""
    frame = generate_applicants(n, seed)
    logit = np.log(frame["true_pd"] / (1 - frame["true_pd"])).to_numpy(dtype=float)
    logit += NEW_DRIVER * (frame["region"] == "west").to_numpy()
    defaulted = (np.random.default_rng(seed).random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    if shuffle:
        defaulted = np.random.default_rng(seed + 1).permutation(defaulted)
    inputs = frame.drop(columns=["application_date", "true_pd", "default"])
    inputs = inputs.astype(object).where(inputs.notna(), None)
    records = [{k: (str(v) if isinstance(v, str) else v) for k, v in r.items()}
               for r in inputs.to_dict("records")]  # fmt: skip
    return [_plain(r) for r in records], defaulted


def _plain(record: dict) -> dict:
    """numpy scalars as JSON's numbers."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()}


def _champion(root: Path) -> tuple[Store, Path]:
    result = pipeline.train(finance_cfg(root, *BASE))
    bundle = write_bundle(result.run_dir, root / "bundles")
    store = Store.of(finance_cfg(root))
    number, first = model_versions.register(store, bundle, "finance")
    assert (number, first) == (1, True)
    return store, bundle


def _champion_with_feedback(root: Path, records: list[dict], defaulted: np.ndarray) -> Store:
    """Version 1 champion, served in-process with the log on: one request per applicant,
    then every outcome fed back."""
    store, bundle = _champion(root)
    settings = LogSettings.default(root / "predlog")
    with TestClient(create_app(load_bundle(bundle), prediction_log=settings)) as client:
        ids = [client.post("/predict", json=[r]).json()["request_id"] for r in records]
        reply = client.post("/feedback", json=[
            {"request_id": i, "defaulted": int(d)} for i, d in zip(ids, defaulted, strict=True)
        ])  # fmt: skip
        assert reply.status_code == 200, reply.text
    return store


def _state(store: Store) -> tuple[list[tuple[int, tuple[str, ...]]], dict]:
    """What a failed retrain must not change: the versions, their aliases and tags."""
    versions = model_versions.versions(store, "finance")
    return [(v.version, tuple(v.aliases)) for v in versions], {
        v.version: dict(v.tags) for v in versions
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """Version 1 champion, served by `verticals serve` (following the champion), and
    APPLICANTS changed-world applicants sent one per request, their outcomes fed back."""
    root = tmp_path_factory.mktemp("retrain-finance")
    store, _ = _champion(root)
    port = free_port()
    log_path = root / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "verticals", "serve", "finance", f"serve.port={port}",
             "serve.reload_seconds=0.5"],
            cwd=root, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        records, defaulted = changed_world(APPLICANTS, seed=11)

        def ask(record: dict) -> str:
            status, body = http(f"{base}/predict", json.dumps([record]).encode())
            assert status == 200, body[:300]
            return json.loads(body)["request_id"]

        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(ask, records))
        outcomes = [{"request_id": i, "defaulted": int(d)}
                    for i, d in zip(ids, defaulted, strict=True)]  # fmt: skip
        for start in range(0, len(outcomes), 500):
            status, body = http(
                f"{base}/feedback", json.dumps(outcomes[start : start + 500]).encode()
            )
            assert status == 200, body[:300]
        yield root, store, base, records
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def _serving(base: str, record: dict) -> str:
    status, body = http(f"{base}/predict", json.dumps([record]).encode())
    assert status == 200, body[:300]
    return json.loads(body)["model_version"]


def test_a_retrain_stopped_part_way_changes_nothing(served) -> None:
    """SIGTERM while the challenger trains (a slow one: many small trees): the registry's
    versions, aliases and tags are as they were, no bundle is written, the tracked run
    says FAILED, and the champion keeps answering."""
    root, store, base, records = served
    record = records[0]
    before = _state(store)
    runs = root / "runs" / "finance"
    known = {p.name for p in runs.iterdir()}
    slow = ["model.num_boost_round=200000", "model.learning_rate=0.0005",
            "model.early_stopping_rounds=200000"]  # fmt: skip
    job = subprocess.Popen(
        [sys.executable, "-m", "verticals", "retrain", "finance", *slow],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        new = [p for p in runs.iterdir() if p.name not in known and (p / "train.log").is_file()]
        if new and "features" in (new[0] / "train.log").read_text():  # past loading: fitting
            break
        assert job.poll() is None, job.communicate()[0][-2000:]
        assert time.monotonic() < deadline, "the retrain never started training"
        time.sleep(0.2)
    time.sleep(1.0)
    job.send_signal(signal.SIGTERM)
    out, _ = job.communicate(timeout=60)
    assert job.returncode != 0, out[-2000:]
    assert _state(store) == before
    bundles = [p for p in (root / "bundles" / "finance").iterdir() if p.is_dir()]
    assert len(bundles) == 1, bundles
    challenger_run = (
        json.loads((new[0] / "run.json").read_text()) if (new[0] / "run.json").is_file() else None
    )
    assert challenger_run is None  # it never finished
    runs_table = store.client().search_runs(
        [store.client().get_experiment_by_name("finance").experiment_id],
        order_by=["attributes.start_time DESC"], max_results=1,
    )  # fmt: skip
    assert runs_table[0].info.status == "FAILED"
    assert _serving(base, record) == model_versions.versions(store, "finance")[0].model_version


def test_b_a_changed_world_is_flagged_then_learnt_and_served(served, capsys) -> None:
    root, store, base, records = served
    record = records[0]
    champion = model_versions.champion(store, "finance")
    assert champion is not None and champion.version == 1
    code = run_cli("monitor", "finance", f"paths.root_dir={root}", "since=1h")
    out = capsys.readouterr().out
    assert code == 1, out  # the default rate left the PDs behind
    assert "BREACH" in out and "calibration_gap" in out, out

    code = run_cli("retrain", "finance", f"paths.root_dir={root}", "trainer.device=cpu")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PROMOTED" in out, out
    new = model_versions.champion(store, "finance")
    assert new is not None and new.version == 2
    assert new.tags["verticals.retrain.decision"] == "promoted"
    report_path = Path(out.split("report: ")[-1].strip().splitlines()[0])
    report = report_path.read_text()
    assert "promoted" in report and "roc_auc" in report, report
    figures = json.loads((report_path.parent / "retrain.json").read_text())
    gain = figures["challenger"]["roc_auc"] - figures["champion"]["roc_auc"]
    assert gain >= 0.005 and figures["interval"]["low"] > 0, figures
    assert figures["feedback"]["to_holdout"] == int(APPLICANTS * 0.3)
    # the challenger learnt the new driver: the same applicants score riskier in the west
    frame = pd.DataFrame(records[:300])
    model = load_bundle(new.bundle).model
    west = model.pd(to_matrix(frame.assign(region="west"), model.schema))
    east = model.pd(to_matrix(frame.assign(region="east"), model.schema))
    assert (west - east).mean() > 0.05, (west - east).mean()

    deadline = time.monotonic() + 20  # the server follows the champion by itself
    while _serving(base, record) != new.model_version:
        assert time.monotonic() < deadline, "the server still answers with version 1"
        time.sleep(0.2)
    history = model_versions.history(store, "finance")
    assert history[-1]["version"] == 2 and history[-1]["reason"].startswith("retrain:")


def test_a_challenger_taught_shuffled_labels_is_refused(tmp_path: Path, capsys) -> None:
    store = _champion_with_feedback(tmp_path, *changed_world(1500, seed=5, shuffle=True))
    state = _state(store)
    # a smaller test share moves holdout cases into training: refused
    assert run_cli("retrain", "finance", f"paths.root_dir={tmp_path}", "data.test_size=0.1") == 2
    assert "an override of seed or data.* drew another split" in capsys.readouterr().err
    assert _state(store) == state
    before = model_versions.champion(store, "finance")
    code = run_cli("retrain", "finance", f"paths.root_dir={tmp_path}", "trainer.device=cpu")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "not promoted" in out, out
    after = model_versions.champion(store, "finance")
    assert after is not None and before is not None and after.version == before.version == 1
    refused = model_versions.get_version(store, "finance", 2)
    assert refused.tags["verticals.retrain.decision"] == "refused"
    report = Path(out.split("report: ")[-1].strip().splitlines()[0]).read_text()
    assert "refused" in report and ("below the margin" in report or "interval" in report)


def test_too_little_feedback_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    store = _champion_with_feedback(tmp_path, *changed_world(20, seed=3))
    before = _state(store)
    code = run_cli("retrain", "finance", f"paths.root_dir={tmp_path}")
    err = capsys.readouterr().err
    assert code == 2
    assert "retrain.min_feedback=200" in err and "14 outcomes to learn from" in err, err
    assert _state(store) == before


def test_the_loop_monitors_then_retrains_when_feedback_arrived(tmp_path: Path, capsys) -> None:
    store = _champion_with_feedback(tmp_path, *changed_world(900, seed=8))
    code = run_cli("loop", "finance", f"paths.root_dir={tmp_path}", "every=1s", "cycles=1",
                   "feedback=500", "since=1h")  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "BREACH" in out and "retraining: the monitor reported a breach and 900 new" in out
    assert "challenger registered as version 2" in out, out
    assert [v.version for v in model_versions.versions(store, "finance")] == [2, 1]
    assert run_cli("loop", "finance", f"paths.root_dir={tmp_path}", "every=soon") == 2
    assert "every='soon'; expected a duration" in capsys.readouterr().err


def test_a_failure_after_registering_puts_the_registry_back(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The promotion fails (the store goes away, say) after the challenger was registered:
    the version is removed again, the champion is as it was, and the run says FAILED."""
    store = _champion_with_feedback(tmp_path, *changed_world(1200, seed=4))
    before = _state(store)

    def store_down(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the tracking store went away")

    monkeypatch.setattr(model_versions, "promote", store_down)
    code = run_cli("retrain", "finance", f"paths.root_dir={tmp_path}", "trainer.device=cpu")
    assert code == 1 and "the tracking store went away" in capsys.readouterr().err
    assert _state(store) == before
    client = store.client()
    experiment = client.get_experiment_by_name("finance").experiment_id
    latest = client.search_runs([experiment], order_by=["attributes.start_time DESC"])[0]
    assert latest.info.status == "FAILED"
    assert latest.data.tags["verticals.retrain.decision"] == "failed"


def test_a_retrain_signs_its_challenger_when_given_a_key(tmp_path: Path, capsys) -> None:
    """`sign.key=`: the challenger's bundle is signed as `package` signs, so a server that
    requires signatures takes the promoted version."""
    from verticals.core.signing import keygen, verify_signature

    private, public = keygen(tmp_path / "keys")
    store = _champion_with_feedback(tmp_path, *changed_world(900, seed=9))
    code = run_cli("retrain", "finance", f"paths.root_dir={tmp_path}", f"sign.key={private}")
    assert code == 0, capsys.readouterr().out
    challenger = model_versions.get_version(store, "finance", 2)
    assert verify_signature(challenger.bundle, public)
