"""A tiny vertical for testing the core without any industry library.

The "model" is a threshold on column `x`: y = 1 when x > threshold. Planted data makes the
threshold learnable exactly, so a core round trip can assert identical predictions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from pydantic import BaseModel, ConfigDict

from verticals.core.contract import Logged, RecordVertical, RunContext, Splits


class ToyRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: float


class ToyOutput(BaseModel):
    label: int
    margin: float


class ToyOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")
    y: Literal[0, 1]


class ToyVertical(RecordVertical):
    """Plain methods in one module, as a third party may write one (conftest registers it)."""

    name = "toy"
    title = "Toy threshold"
    headline_metric = "accuracy"

    def load_data(self, cfg: DictConfig) -> Splits:
        rng = np.random.default_rng(int(cfg.get("seed", 0)))
        x = rng.normal(size=600)
        frame = pd.DataFrame({"x": x, "y": (x > 0.25).astype(int)})
        return Splits(frame[:400], frame[400:500], frame[500:], {"rows": 600})

    def fit(self, cfg: DictConfig, splits: Splits, ctx: RunContext) -> Any:
        train = splits.train.sort_values("x")
        ones = train[train.y == 1].x
        zeros = train[train.y == 0].x
        return {"threshold": float((ones.min() + zeros.max()) / 2)}

    def evaluate(self, model: Any, data: Any, ctx: RunContext | None = None) -> dict[str, float]:
        pred = (data.x > model["threshold"]).astype(int)
        return {"accuracy": float((pred == data.y).mean())}

    def save(self, model: Any, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "toy.json").write_text(json.dumps(model))

    def load(self, directory: Path) -> Any:
        return json.loads((directory / "toy.json").read_text())

    def request_schema(self, model: Any) -> type[BaseModel]:
        return ToyRecord

    def response_schema(self, model: Any) -> type[BaseModel]:
        return ToyOutput

    def predict(self, model: Any, frame: pd.DataFrame) -> pd.DataFrame:
        margin = frame["x"].astype(float) - model["threshold"]
        return pd.DataFrame({"label": (margin > 0).astype(int), "margin": margin})

    def example_inputs(self, splits: Splits, n: int) -> pd.DataFrame:
        return splits.test[["x"]].head(n)

    def outcome_schema(self, model: Any) -> type[BaseModel]:
        return ToyOutcome

    def live_metrics(self, model: Any, entries: list[Logged]) -> dict[str, float]:
        """Accuracy of the logged labels against the outcomes."""
        pairs = [(e.outputs[0]["label"], e.outcome["y"]) for e in entries if e.outcome]
        if not pairs:
            return {}
        return {"accuracy": sum(a == b for a, b in pairs) / len(pairs), "labelled": len(pairs)}
