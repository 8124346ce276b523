"""Shared fixtures: a scratch working directory, composed configs, one trained finance run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

from verticals.core import pipeline, registry  # noqa: E402

from verticals.configs import compose  # noqa: E402

from .toy_vertical import ToyVertical  # noqa: E402

SMALL_SYNTHETIC = ["data=synthetic", "data.n_rows=6000", "model.num_boost_round=300"]


@pytest.fixture(scope="session", autouse=True)
def _toy_registered() -> None:
    registry.register(ToyVertical())


def finance_cfg(root: Path, *overrides: str):
    return compose("train", "finance", [f"paths.root_dir={root}", "trainer.device=cpu", *overrides])


@pytest.fixture(scope="session")
def finance_run(tmp_path_factory: pytest.TempPathFactory) -> pipeline.TrainResult:
    """One small synthetic finance run shared by the end-to-end tests."""
    root = tmp_path_factory.mktemp("finance")
    monotone = "++model.monotone={debt_to_income: 1, late_payments_12m: 1, age: -1}"
    return pipeline.train(finance_cfg(root, *SMALL_SYNTHETIC, monotone))
