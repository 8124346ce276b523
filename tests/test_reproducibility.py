"""The same seed twice gives the same model and the same metrics (finance, retail, CPU).

What makes it so: finance's LightGBM runs with `deterministic` and col-wise histograms
(model.deterministic, on by default), seeded by `seed`; retail's implicit models take `seed`
as their random_state, and BPR runs on one thread (its threads update shared factors without
locks, so with more the result changes from run to run: measured here before bpr.yaml set
num_threads=1). A different seed must change the result, or these tests would pass for a
seed that is ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from verticals.configs import compose
from verticals.core import pipeline

FINANCE_SMALL = ["data=synthetic", "data.n_rows=3000", "model.num_boost_round=200"]
RETAIL_SMALL = ["data.n_users=600", "data.n_items=400", "data.n_interactions=15000"]
# Two threads whatever the suite's OpenMP setting (one per xdist worker): determinism across
# threads is the point. BPR keeps its config's one thread.
TWO_THREADS = "model.num_threads=2"


def _train(vertical: str, root: Path, *overrides: str) -> pipeline.TrainResult:
    cfg = compose("train", vertical, [f"paths.root_dir={root}", "trainer.device=cpu",
                                      "tracking=none", *overrides])  # fmt: skip
    return pipeline.train(cfg)


def _same(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    np.testing.assert_equal(a, b)  # exact, NaN equal to NaN


@pytest.mark.parametrize("data", [["data=german"], FINANCE_SMALL], ids=["german", "synthetic"])
def test_finance_same_seed_same_model(tmp_path: Path, data: list[str]) -> None:
    data = [*data, TWO_THREADS]
    first = _train("finance", tmp_path / "a", *data)
    second = _train("finance", tmp_path / "b", *data)
    _same(first.metrics, second.metrics)
    model = "model/lightgbm.txt"
    assert (first.run_dir / model).read_text() == (second.run_dir / model).read_text()
    other = _train("finance", tmp_path / "c", *data, "seed=7")
    assert other.metrics["roc_auc"] != first.metrics["roc_auc"]


@pytest.mark.parametrize("name", ["als", "bpr", "lmf"])
def test_retail_same_seed_same_model(tmp_path: Path, name: str) -> None:
    small = [*RETAIL_SMALL, *([] if name == "bpr" else [TWO_THREADS])]
    runs = [_train("retail", tmp_path / r, f"model={name}", *small) for r in "ab"]
    _same(runs[0].metrics, runs[1].metrics)
    first, second = (r.model.recommender for r in runs)
    np.testing.assert_array_equal(first.user_factors, second.user_factors)
    np.testing.assert_array_equal(first.item_factors, second.item_factors)
    other = _train("retail", tmp_path / "c", f"model={name}", *small, "seed=7")
    assert not np.array_equal(other.model.recommender.item_factors, first.item_factors)
