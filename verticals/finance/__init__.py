"""Finance: credit-default (PD) scoring with LightGBM, scorecard points and reason codes.

Importing this module is cheap; LightGBM and scikit-learn load when the vertical runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig
from pydantic import BaseModel

from verticals.core.contract import RunContext, Splits, Vertical


class FinanceVertical(Vertical):
    name = "finance"
    title = "Credit-default risk scoring (LightGBM)"
    headline_metric = "roc_auc"

    def register_configs(self) -> None:
        from verticals.finance.config import register

        register()

    def load_data(self, cfg: DictConfig) -> Splits:
        from verticals.finance.data import load_splits

        return load_splits(cfg, int(cfg.seed))

    def fit(self, cfg: DictConfig, splits: Splits, ctx: RunContext) -> Any:
        from verticals.finance.model import fit

        return fit(cfg, splits, ctx)

    def evaluate(self, model: Any, data: Any, ctx: RunContext | None = None) -> dict[str, float]:
        from verticals.finance.evaluation import evaluate

        return evaluate(model, data, ctx.plots_dir if ctx else None)

    def save(self, model: Any, directory: Path) -> None:
        from verticals.finance.model import save

        save(model, directory)

    def load(self, directory: Path) -> Any:
        from verticals.finance.model import load

        return load(directory)

    def request_schema(self, model: Any) -> type[BaseModel]:
        from verticals.finance.schema import applicant_model

        return applicant_model(model.schema)

    def response_schema(self, model: Any) -> type[BaseModel]:
        from verticals.finance.schema import Prediction

        return Prediction

    def predict(self, model: Any, frame: pd.DataFrame) -> pd.DataFrame:
        from verticals.finance.model import predict

        return predict(model, frame)

    def predict_table(self, model: Any, frame: pd.DataFrame) -> pd.DataFrame:
        from verticals.finance.model import predict_table

        return predict_table(model, frame)

    def example_inputs(self, splits: Splits, n: int) -> pd.DataFrame:
        head = splits.test.X.head(n)
        return head.astype(object).where(head.notna(), None)  # missing as None, as in JSON

    def describe(self, model: Any, metrics: dict[str, float], splits_info: dict[str, Any]) -> str:
        from verticals.finance.evaluation import describe

        return describe(model, metrics)

    def library_versions(self) -> list[str]:
        return ["lightgbm", "scikit-learn"]
