"""`verticals predict ... cluster=ray_local`: the bundle mapped over Ray actors writes
what the single-process run writes (`predict_file`, `predict_folder`). One embedded Ray for
the module, two actors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from omegaconf import DictConfig

from verticals.configs import compose  # noqa: E402
from verticals.core import cluster  # noqa: E402
from verticals.core.batch import TableJob, predict_file, predict_folder  # noqa: E402
from verticals.core.batch_log import BatchLog  # noqa: E402
from verticals.core.bundle import load_bundle  # noqa: E402
from verticals.core.cluster_batch import IN_FLIGHT, predict_on_ray  # noqa: E402
from verticals.core.errors import UserError  # noqa: E402
from verticals.core.predlog import LogSettings, PredictionLog  # noqa: E402


@pytest.fixture(scope="module")
def ray_cfg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DictConfig]:
    """A predict config with `cluster=ray_local` (2 actors on 2 CPUs), its Ray running."""
    root = tmp_path_factory.mktemp("ray-batch")
    cfg = compose("predict", "finance", [
        f"paths.root_dir={root}", "input=unused.csv", "output=unused.csv",
        "cluster=ray_local", "cluster.workers=2", "cluster.num_cpus=2", "cluster.num_gpus=0",
        "cluster.log_to_driver=false",
    ])  # fmt: skip
    with cluster.session(cfg):
        yield cfg


def _journal(cfg: DictConfig, bundle: Any) -> BatchLog:
    settings = LogSettings.of(cfg)
    assert settings is not None
    return BatchLog(PredictionLog(settings), "finance", bundle.model_version)


def _without_batch_id(frame: pd.DataFrame, journal: BatchLog) -> pd.DataFrame:
    out = frame.copy()
    out["request_id"] = out["request_id"].str.removeprefix(journal.batch_id)
    return out


def _count_held(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Counts of batches read and written by `TableJob` (and the most read, not written)."""
    held: dict[str, Any] = {"read": 0, "written": 0, "between": [0]}
    batches, write = TableJob.batches, TableJob.write

    def counted_batches(self, size):  # type: ignore[no-untyped-def]
        for item in batches(self, size):
            held["read"] += 1
            held["between"].append(held["read"] - held["written"])
            yield item

    def counted_write(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        held["written"] += 1
        return write(self, *args, **kwargs)

    monkeypatch.setattr(TableJob, "batches", counted_batches)
    monkeypatch.setattr(TableJob, "write", counted_write)
    return held


def test_records_on_ray_equal_the_single_run(
    tiny, ray_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, bundle_dir = tiny("finance")
    bundle = load_bundle(bundle_dir)
    table = run.splits.test.X.reset_index(drop=True).head(150).copy()
    table.insert(0, "id", [f"c{i:04d}" for i in range(len(table))])
    parts = tmp_path / "parts"
    parts.mkdir()
    table.iloc[:40].to_parquet(parts / "part-0.parquet", index=False)
    table.iloc[40:95].to_csv(parts / "part-1.csv", index=False)
    table.iloc[95:].to_parquet(parts / "part-2.parquet", index=False)

    # a folder of tables in batches of 16 rows, the id kept beside the predictions, and the
    # prediction log: the same output and request ids, bar each run's batch id
    logs = [_journal(ray_cfg, bundle) for _ in range(2)]
    n_local = predict_file(bundle, parts, tmp_path / "local.csv", 16, ["id"], False, logs[0])
    held = _count_held(monkeypatch)
    n_ray = predict_on_ray(ray_cfg, bundle, str(parts), tmp_path / "ray.csv", 16, ["id"], logs[1])
    local, ray_out = (pd.read_csv(tmp_path / f"{name}.csv") for name in ("local", "ray"))
    assert n_local == n_ray == len(table) == len(local) == logs[0].count == logs[1].count
    assert list(local.columns[:2]) == ["id", "request_id"]
    assert local["id"].tolist() == table["id"].tolist()  # in file order
    pd.testing.assert_frame_equal(
        _without_batch_id(ray_out, logs[1]), _without_batch_id(local, logs[0])
    )
    # the driver streams: batches are read as actors free up, not all before the first write
    assert held["read"] == held["written"] == 11, held  # 3 + 4 + 4 batches of 16 rows
    assert max(held["between"]) <= IN_FLIGHT * 2, held

    # bad input names the file and rows, and leaves no output behind
    broken = table.copy()
    number = next(c for c in table.columns[1:] if pd.api.types.is_numeric_dtype(table[c]))
    broken[number] = broken[number].astype(object)
    broken.loc[20, number] = "not a number"
    broken.iloc[:40].to_csv(tmp_path / "broken.csv", index=False)
    with pytest.raises(UserError, match=r"broken\.csv \(rows 17-32\)"):
        predict_file(bundle, tmp_path / "broken.csv", tmp_path / "b1.csv", 16, progress=False)
    with pytest.raises(UserError, match=r"broken\.csv \(rows 17-32\)"):
        predict_on_ray(ray_cfg, bundle, tmp_path / "broken.csv", tmp_path / "b2.csv", 16, [], None)
    assert not (tmp_path / "b2.csv").exists()


def test_files_on_ray_equal_the_single_run(tiny, ray_cfg, tmp_path: Path) -> None:
    pytest.importorskip("ultralytics", reason="ultralytics is not installed")
    run, bundle_dir = tiny("manufacturing")
    bundle = load_bundle(bundle_dir)
    inputs = tmp_path / "parts"
    images = run.vertical.example_files(run.splits, 4, inputs / "line-a")
    assert len(images) >= 3
    (inputs / "line-b").mkdir()
    (inputs / "line-b" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")

    outcomes = {}
    for name, score in (
        ("local", lambda out: predict_folder(bundle, inputs, out, progress=False)),
        ("ray", lambda out: predict_on_ray(ray_cfg, bundle, inputs, out, 1, [], None)),
    ):
        with pytest.raises(UserError, match=rf"1 of {len(images) + 1} inputs failed.*broken\.jpg"):
            score(tmp_path / name)
        table = pd.read_csv(tmp_path / name / "predictions.csv")
        table["output"] = table["output"].str.replace(str(tmp_path / name), "OUT", regex=False)
        files = sorted(p.relative_to(tmp_path / name) for p in (tmp_path / name).rglob("*.jpg"))
        outcomes[name] = (table, files)
    (local, local_files), (ray_table, ray_files) = outcomes["local"], outcomes["ray"]
    pd.testing.assert_frame_equal(ray_table, local)
    assert local["error"].notna().sum() == 1 and len(local) == len(images) + 1
    assert ray_files == local_files and len(local_files) == len(images)
    for name in local_files:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
