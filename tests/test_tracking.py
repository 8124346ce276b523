"""Runs and model versions in a real MLflow store (SQLite file, and a PostgreSQL server the
tests start), read back with MLflow's own client."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from verticals.core import model_versions, pipeline, run_tracking
from verticals.core.bundle import write_bundle
from verticals.core.errors import UserError
from verticals.core.fingerprint import fingerprint
from verticals.core.model_versions import Champion
from verticals.core.run_tracking import metric_key
from verticals.core.tracking import CHAMPION, Store, model_name

from .conftest import finance_cfg
from .postgres import postgres_db, postgres_url  # noqa: F401 - fixtures
from .servers import cli_session

SMALL = ["data=synthetic", "data.n_rows=1500", "model.num_boost_round=40"]


def _client(store: Store):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)


def _train(root: Path, *overrides: str) -> pipeline.TrainResult:
    return pipeline.train(finance_cfg(root, *SMALL, *overrides))


def _check_run_in_store(store: Store, result: pipeline.TrainResult) -> None:
    """What the issue asks a tracked run to hold, read back with MLflow's client."""
    client = _client(store)
    run_id = json.loads((result.run_dir / "run.json").read_text())["tracking"]["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == result.run_dir.name
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["model.num_leaves"] == "4"  # the default model
    assert params["data.source"] == "synthetic" and params["data.n_rows"] == "1500"
    assert params["seed"] == "42" and "trainer.device" in params
    assert metrics["roc_auc"] == pytest.approx(result.metrics["roc_auc"])
    assert tags["verticals.vertical"] == "finance" and tags["device"] == "cpu"
    assert tags["verticals.run_dir"] == str(result.run_dir.resolve())
    [used] = run.inputs.dataset_inputs
    assert used.dataset.digest == fingerprint(
        result.splits.train, result.splits.val, result.splits.test
    )
    assert json.loads(used.dataset.source)["source"] == "synthetic"
    columns = {c["name"]: c["type"] for c in json.loads(used.dataset.schema)["mlflow_colspec"]}
    assert columns["debt_to_income"] == "double" and len(columns) >= 5
    assert [t.value for t in used.tags if t.key == "mlflow.data.context"] == ["train"]
    artifacts = {f.path for f in client.list_artifacts(run_id)}
    assert {"model_card.md", "config.yaml", "metrics.json", "plots"} <= artifacts
    plots = {f.path for f in client.list_artifacts(run_id, "plots")}
    assert "plots/roc.png" in plots
    card = client.download_artifacts(run_id, "model_card.md", str(result.run_dir / "dl"))
    assert Path(card).read_text() == (result.run_dir / "model_card.md").read_text()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[pipeline.TrainResult]]:
    root = tmp_path_factory.mktemp("tracked")
    return root, [_train(root), _train(root, "seed=7")]


def test_a_training_run_is_recorded_in_the_embedded_store(two_runs) -> None:
    root, (first, _) = two_runs
    store = Store(f"sqlite:///{root / 'runs' / 'mlflow' / 'mlflow.db'}", None)
    assert store.embedded_file.is_file() and (root / "runs" / "mlflow" / "artifacts").is_dir()
    assert not (Path.cwd() / "mlruns").exists()  # nothing lands in the working directory
    _check_run_in_store(store, first)


def test_tracking_none_records_nothing(tmp_path: Path) -> None:
    result = _train(tmp_path, "tracking=none")
    assert not (tmp_path / "runs" / "mlflow").exists()
    assert "tracking" not in json.loads((result.run_dir / "run.json").read_text())


def test_an_unreachable_store_stops_training_before_the_fit(tmp_path: Path) -> None:
    bad = "tracking.uri=postgresql+psycopg://nobody@127.0.0.1:1/none"
    with pytest.raises(UserError, match=r"cannot open the tracking store postgresql"):
        _train(tmp_path, bad)
    [run] = (tmp_path / "runs" / "finance").iterdir()
    assert not (run / "model").exists()  # stopped before anything was fitted


def test_fingerprint_follows_content_not_location(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, None], "b": ["x", "y", "z"]})
    assert fingerprint(frame) == fingerprint(frame.copy())
    changed = frame.copy()
    changed.loc[1, "a"] = 2.5
    assert fingerprint(frame) != fingerprint(changed)
    one, two = tmp_path / "one.bin", tmp_path / "sub" / "two.bin"
    two.parent.mkdir()
    one.write_bytes(b"volume")
    two.write_bytes(b"volume")
    assert fingerprint([{"image": str(one)}]) == fingerprint([{"image": str(two)}])
    two.write_bytes(b"volume2")
    assert fingerprint([{"image": str(one)}]) != fingerprint([{"image": str(two)}])
    assert fingerprint(np.arange(4)) != fingerprint(np.arange(4).astype(float))


def test_metric_keys_mlflow_accepts() -> None:
    assert metric_key("ndcg@10") == "ndcg_at_10" and metric_key("mae_60min") == "mae_60min"


def test_package_registers_versions_and_promote_moves_the_champion(two_runs) -> None:
    root, (first, second) = two_runs
    cfg = finance_cfg(root)
    store = Store.of(cfg)
    bundles = root / "bundles"
    v1 = write_bundle(first.run_dir, bundles)
    assert model_versions.register(store, v1, "finance") == (1, True)  # first: champion
    v2 = write_bundle(second.run_dir, bundles)
    assert model_versions.register(store, v2, "finance") == (2, False)
    assert Champion.of(store, "finance")() == v1.resolve()

    listed = {v.version: v for v in model_versions.versions(store, "finance")}
    assert listed[1].aliases == [CHAMPION] and listed[2].aliases == []
    assert listed[2].metrics["roc_auc"] == pytest.approx(second.metrics["roc_auc"])
    assert listed[2].run_id == json.loads((v2 / "run.json").read_text())["tracking"]["run_id"]
    assert listed[2].model_version == v2.name

    assert model_versions.promote(store, "finance", 2, reason="seed 7 wins") == 1
    client = _client(store)
    found = client.get_model_version_by_alias(model_name("finance"), CHAMPION)
    assert str(found.version) == "2" and found.tags["verticals.champion_reason"] == "seed 7 wins"
    assert Champion.of(store, "finance")() == v2.resolve()
    assert model_versions.rollback(store, "finance", reason="alerts") == (2, 1)
    assert Champion.of(store, "finance")() == v1.resolve()
    events = model_versions.history(store, "finance")
    assert [(e["version"], e["action"]) for e in events] == [
        (1, "promote"),
        (2, "promote"),
        (1, "rollback"),
    ]
    with pytest.raises(UserError, match="only champion there has been"):
        model_versions.rollback(store, "finance")

    # a damaged bundle cannot be promoted: one line naming the file, champion unchanged
    model_file = next((v2 / "model").iterdir())
    model_file.write_bytes(model_file.read_bytes() + b"\n")
    with pytest.raises(UserError, match=rf"version 2 cannot be promoted: .*{model_file.name}"):
        model_versions.promote(store, "finance", 2)
    assert Champion.of(store, "finance")() == v1.resolve()
    with pytest.raises(UserError, match="has no version 9"):
        model_versions.promote(store, "finance", 9)


def test_a_repackaged_bundle_is_not_the_version_registered(tmp_path: Path) -> None:
    result = _train(tmp_path)
    store = Store.of(finance_cfg(tmp_path))
    bundle = write_bundle(result.run_dir, tmp_path / "bundles")
    model_versions.register(store, bundle, "finance")
    with (result.run_dir / "model_card.md").open("a") as card:
        card.write("\nedited after registration\n")
    write_bundle(result.run_dir, tmp_path / "bundles")  # same folder, new manifest
    with pytest.raises(UserError, match="manifest.json changed since it was registered"):
        model_versions.promote(store, "finance", 1)


def test_the_same_on_postgresql(tmp_path: Path, postgres_db: str) -> None:  # noqa: F811
    uri = f"tracking.uri={postgres_db}"
    result = _train(tmp_path, uri)
    cfg = finance_cfg(tmp_path, uri)
    store = Store.of(cfg)
    assert store.uri == postgres_db and store.artifacts.startswith("file://")
    _check_run_in_store(store, result)
    bundle = write_bundle(result.run_dir, tmp_path / "bundles")
    assert model_versions.register(store, bundle, "finance") == (1, True)
    assert Champion.of(store, "finance")() == bundle.resolve()
    assert not (tmp_path / "runs" / "mlflow" / "mlflow.db").exists()  # nothing embedded


_CI_NAMES = ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI",
             "JENKINS_URL", "TRAVIS", "TF_BUILD", "BUILDKITE", "MLFLOW_TRACKING_URI",
             "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")  # fmt: skip


def _cli(cwd: Path, home: Path, *commands: list[str]) -> list[str]:
    """`verticals ...` commands as a user runs them (in one process, one after another):
    none of the variables by which MLflow turns its telemetry off on its own (CI, pytest),
    HOME in a scratch folder. Each command's output."""
    env = {k: v for k, v in os.environ.items() if k not in _CI_NAMES}
    done = cli_session(cwd, *commands, env={**env, "HOME": str(home)}, timeout=300)
    for result in done:
        assert result.returncode == 0, f"{result.args}: {result.stderr[-2000:]}"
    assert len(done) == len(commands)
    return [result.stdout for result in done]


def test_a_multirun_is_a_parent_run_with_its_jobs_as_children(tmp_path: Path) -> None:
    """Through the CLI. MLflow's telemetry is on by default and would keep its state under
    ~/.config/mlflow (and send usage events): train, package, promote and models must leave
    no trace of it."""
    home = tmp_path / "home"
    home.mkdir()
    _cli(tmp_path, home, ["train", "finance", "-m", "seed=1,2", "debug=fast", "trainer.device=cpu"])
    sweep = next((tmp_path / "runs" / "finance").glob("multirun_*"))
    *_, again, _, _, models = _cli(
        tmp_path, home,
        ["package", "finance", f"run={sweep / '0'}"],
        ["package", "finance", f"run={sweep / '1'}"],
        ["package", "finance", f"run={sweep / '0'}"],  # packaged twice
        ["promote", "finance", "version=1", "reason=still verifies"],
        ["promote", "finance", "version=2", "reason=telemetry check"],
        ["models", "finance"],
    )  # fmt: skip
    assert f"{sweep.name}_0-2" in again and "version 3" in again  # version 1 keeps its folder
    assert "champion" in models
    assert not (home / ".config" / "mlflow").exists()
    store = Store(f"sqlite:///{tmp_path / 'runs' / 'mlflow' / 'mlflow.db'}")
    client = _client(store)
    runs = client.search_runs([client.get_experiment_by_name("finance").experiment_id])
    parents = [r for r in runs if r.data.tags.get("verticals.sweep_parent") == "yes"]
    children = [r for r in runs if r not in parents]
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(r.data.params["seed"] for r in children) == ["1", "2"]
    table = run_tracking.runs_table(store, "finance", "roc_auc")
    assert sorted(table["sweep"]) == ["child", "child", "parent"]
    assert table["roc_auc"].notna().sum() == 2


def test_a_store_password_stays_out_of_runs(tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    uri = postgres_url.replace("postgres@", "postgres:s3cret@")  # trust auth ignores it
    result = _train(tmp_path, f"tracking.uri={uri}")
    assert "s3cret" not in (result.run_dir / "config.yaml").read_text()
    store = Store.of(finance_cfg(tmp_path, f"tracking.uri={uri}"))
    run_id = json.loads((result.run_dir / "run.json").read_text())["tracking"]["run_id"]
    params = _client(store).get_run(run_id).data.params
    assert "s3cret" not in json.dumps(params) and params["tracking.uri"].count("***") == 1


def test_history_survives_many_promotions_on_postgresql(
    tmp_path: Path,
    postgres_db: str,  # noqa: F811
) -> None:
    """PostgreSQL keeps a tag in 5,000 characters: 60 moves with long reasons must fit."""
    result = _train(tmp_path, "tracking=none")
    cfg = finance_cfg(tmp_path, f"tracking.uri={postgres_db}")
    store = Store.of(cfg)
    bundle = write_bundle(result.run_dir, tmp_path / "bundles")
    model_versions.register(store, bundle, "finance")
    model_versions.register(store, bundle, "finance")
    for i in range(30):
        model_versions.promote(store, "finance", 2, reason="r" * 2000)
        model_versions.promote(store, "finance", 1, reason=f"back {i}")
    events = model_versions.history(store, "finance")
    assert len(events) == 61 and events[-1]["reason"] == "back 29"
    assert model_versions.rollback(store, "finance") == (1, 2)


def _open_when_told(uri: str, start, results) -> None:  # noqa: ANN001 - multiprocessing's
    start.wait()
    try:
        Store(uri).client().search_experiments()
        results.put("ok")
    except UserError as exc:
        results.put(str(exc))


def test_sweep_jobs_that_start_together_all_open_a_new_store(tmp_path: Path) -> None:
    """The jobs of a sweep open a store nobody has made yet at the same moment: one creates
    its tables and the others wait for it (all four failed to open one before the fix)."""
    import multiprocessing

    import mlflow  # noqa: F401 - imported once here, so the children race on the opening only

    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(4), context.Queue()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    jobs = [context.Process(target=_open_when_told, args=(uri, start, results)) for _ in range(4)]
    for job in jobs:
        job.start()
    answers = [results.get(timeout=120) for _ in jobs]
    for job in jobs:
        job.join(timeout=30)
    assert answers == ["ok"] * 4, answers
