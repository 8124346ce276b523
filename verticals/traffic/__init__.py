"""Traffic: spatio-temporal speed forecasting on a road-sensor graph (Graph WaveNet, torch).

Importing this module is cheap; torch loads when the vertical runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
from omegaconf import DictConfig
from pydantic import BaseModel

from verticals.core.contract import RunContext, Splits, Vertical


class TrafficVertical(Vertical):
    name = "traffic"
    title = "Traffic forecasting on a road-sensor graph (Graph WaveNet)"
    headline_metric = "mae_60min"
    group_column: ClassVar[str | None] = "window"

    def register_configs(self) -> None:
        from verticals.traffic.config import register

        register()

    def resolve_config(self, cfg: DictConfig) -> DictConfig:
        """`training.resume=<run>` continues that run: its data, split seed and network
        come from its config.yaml; this command's `training.*` (epochs, budget) apply."""
        if not cfg.training.resume:
            return cfg
        from verticals.core.runs import resumed_config

        return resumed_config(cfg, str(cfg.training.resume))

    def load_data(self, cfg: DictConfig) -> Splits:
        from verticals.traffic.data import load_splits

        return load_splits(cfg)

    def fit(self, cfg: DictConfig, splits: Splits, ctx: RunContext) -> Any:
        from verticals.traffic.training import fit

        return fit(cfg, splits, ctx)

    def evaluate(self, model: Any, data: Any, ctx: RunContext | None = None) -> dict[str, float]:
        from verticals.traffic.evaluation import evaluate

        return evaluate(model, data, ctx)

    def save(self, model: Any, directory: Path) -> None:
        from verticals.traffic.model import save

        save(model, directory)

    def load(self, directory: Path) -> Any:
        from verticals.traffic.model import load

        return load(directory)

    def request_schema(self, model: Any) -> type[BaseModel]:
        from verticals.traffic.schema import Reading

        return Reading

    def response_schema(self, model: Any) -> type[BaseModel]:
        from verticals.traffic.schema import Forecast

        return Forecast

    def predict(self, model: Any, frame: pd.DataFrame) -> pd.DataFrame:
        from verticals.traffic.predict import forecast_rows

        return forecast_rows(model, frame)

    def example_inputs(self, splits: Splits, n: int) -> pd.DataFrame:
        """The readings of up to `n` test windows (one every hour), long format."""
        test = splits.test
        net = test.net
        picks = test.starts[:: max(1, 60 // net.step_min)][
            : max(1, n // max(len(net.sensors), 1) or 1)
        ]
        rows = []
        for k, start in enumerate(picks):
            for t in range(start, start + test.input_steps):
                for s, sensor in enumerate(net.sensors):
                    value = float(net.speeds[t, s])
                    rows.append((f"w{k:04d}", sensor, net.times[t], value if value > 0 else None))
        return pd.DataFrame(rows, columns=["window", "sensor", "timestamp", "value"])

    def describe(self, model: Any, metrics: dict[str, float], splits_info: dict[str, Any]) -> str:
        from verticals.traffic.evaluation import describe

        return describe(model, metrics)

    def library_versions(self) -> list[str]:
        return ["torch", "h5py"]
