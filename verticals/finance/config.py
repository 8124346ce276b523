"""Structured configs (Hydra ConfigStore schemas) for the finance vertical."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from verticals.core.config import store_schema


@dataclass
class FinanceDataConfig:
    """Where the applicants come from and how they are split."""

    source: str = "german"  # german | synthetic | table
    path: str | None = None  # table file, or the UCI `german.data` for source=german
    target: str = "default"  # 1/True = defaulted
    n_rows: int = 20_000  # synthetic only
    categorical: list[str] | None = None  # declared categorical columns (else detected)
    numeric: list[str] | None = None  # declared numeric columns (else detected)
    drop: list[str] = field(default_factory=list)  # ids and leakage columns
    date_column: str | None = None  # set: out-of-time split on this column
    test_size: float = 0.2
    val_size: float = 0.2  # of what remains after the test split


@dataclass
class LightGBMConfig:
    """LightGBM binary classifier; names follow LightGBM's own parameters."""

    num_leaves: int = 4
    learning_rate: float = 0.03
    num_boost_round: int = 2000
    early_stopping_rounds: int = 100
    early_stopping_metric: str = (
        "binary_logloss"  # auc | binary_logloss (the validation metric watched)
    )
    min_data_in_leaf: int = 20
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    max_bin: int = 255
    cat_smooth: float = 10.0
    class_weight: str = "none"  # none | balanced
    monotone: dict[str, int] = field(default_factory=dict)  # feature -> +1 (raises PD) / -1
    num_threads: int = 0  # 0 = LightGBM's default (all cores)
    extra: dict[str, Any] = field(default_factory=dict)  # any other LightGBM parameter


@dataclass
class ScorecardConfig:
    """Points scaling: `base_score` points at good:bad odds `base_odds`; `pdo` doubles them."""

    base_score: float = 600.0
    base_odds: float = 50.0
    pdo: float = 20.0
    # [grade, lowest score] pairs, best first; scores below the last bound get the last grade.
    # A list, so an override replaces the whole scale: scorecard.grades=[[X,700],[Y,0]].
    grades: list[Any] = field(
        default_factory=lambda: [
            ["A", 640],
            ["B", 600],
            ["C", 560],
            ["D", 520],
            ["E", 480],
            ["F", 0],
        ]
    )
    n_reasons: int = 4


def register() -> None:
    store_schema("data", FinanceDataConfig, name="finance_schema")
    store_schema("model", LightGBMConfig, name="lightgbm_schema")
    store_schema("scorecard", ScorecardConfig, name="finance_schema")
