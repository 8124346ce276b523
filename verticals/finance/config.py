"""Structured configs (Hydra ConfigStore schemas) for the finance vertical.

The defaults live here; the YAML options in conf/finance/ list only what differs. Settings
that take one of a few words are enums (a typo fails while composing), and ranges are
checked in `__post_init__` (see `verticals.core.config.check_config`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from verticals.core.config import ConfigValueError, check_range, check_ranges, store_schema


class FinanceSource(StrEnum):
    german = "german"  # UCI Statlog German Credit (shipped, or data.path to UCI's file)
    synthetic = "synthetic"  # applicants with planted monotone effects and a known PD
    table = "table"  # your CSV/Parquet table


class StoppingMetric(StrEnum):
    """The validation metric early stopping watches (LightGBM's names)."""

    binary_logloss = "binary_logloss"  # a proper score: PDs stay calibrated
    auc = "auc"


class ClassWeight(StrEnum):
    none = "none"
    balanced = "balanced"  # reweights to balance the classes: PDs shift away from rates


@dataclass
class FinanceDataConfig:
    """Where the applicants come from and how they are split."""

    source: FinanceSource = FinanceSource.german
    path: str | None = None  # table file, or the UCI `german.data` for source=german
    target: str = "default"  # 1/True = defaulted
    n_rows: int = 20_000  # synthetic only
    categorical: list[str] | None = None  # declared categorical columns (else: text columns)
    numeric: list[str] | None = None  # declared numeric columns (else: number columns)
    drop: list[str] = field(default_factory=list)  # ids and anything known only after
    date_column: str | None = None  # set: out-of-time split (latest applications are test)
    test_size: float = 0.2
    val_size: float = 0.2  # of what remains after the test split
    # cluster= with a Parquet table (file, folder or glob): the table is read by Ray tasks,
    # never whole by one process; every LightGBM worker validates on the same sample of at
    # most this many validation rows (early stopping must agree across workers)
    max_val_rows: int = 200_000
    # Plausible [low, high] of numeric columns (null: open on that side); a request outside
    # is refused (422). Unnamed columns: never negative if no training value was, and at
    # most 10 training-range widths past the range. Inside the bounds but outside the
    # training range: scored and flagged. '++data.bounds={age: [18, 120]}'
    bounds: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_range(self, "n_rows", ge=100)
        check_range(self, "max_val_rows", ge=100)
        check_ranges(self, "test_size val_size", gt=0, lt=1)
        for name, pair in self.bounds.items():
            if not _bound_pair(pair):
                expected = "[low, high]: numbers or null, low <= high"
                raise ConfigValueError(f"bounds.{name}", pair, expected)


def _bound_pair(pair: Any) -> bool:
    """Whether `pair` is [low, high] with finite numbers or None, low <= high."""
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        return False
    numbers = [v for v in pair if v is not None]
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in numbers):
        return False
    if not all(math.isfinite(v) for v in numbers):
        return False
    return None in pair or pair[0] <= pair[1]


@dataclass
class LightGBMConfig:
    """LightGBM binary classifier; names follow LightGBM's own parameters."""

    num_leaves: int = 4
    learning_rate: float = 0.03
    num_boost_round: int = 2000
    early_stopping_rounds: int = 100
    early_stopping_metric: StoppingMetric = StoppingMetric.binary_logloss
    min_data_in_leaf: int = 20
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    max_bin: int = 255
    cat_smooth: float = 10.0
    class_weight: ClassWeight = ClassWeight.none
    # +1: PD may only rise with the feature, -1: only fall. On the command line:
    #   '++model.monotone={debt_to_income: 1, age: -1}' or +model.monotone.age=-1
    monotone: dict[str, int] = field(default_factory=dict)
    # 0 = all cores; set it on shared machines (LightGBM slows badly when oversubscribed)
    num_threads: int = 0
    # The same seed and threads give the same model: LightGBM's `deterministic`, and
    # col-wise histograms (else LightGBM times row- and col-wise and keeps the faster, and
    # the two sum in different orders).
    deterministic: bool = True
    # any other LightGBM parameter: +model.extra.min_gain_to_split=0.01
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_range(self, "num_leaves", ge=2)
        check_range(self, "max_bin", ge=2)
        check_ranges(self, "num_boost_round early_stopping_rounds", ge=1)
        check_ranges(self, "min_data_in_leaf bagging_freq num_threads", ge=0)
        check_ranges(self, "lambda_l2 cat_smooth", ge=0)
        check_range(self, "learning_rate", gt=0)
        check_ranges(self, "feature_fraction bagging_fraction", gt=0, le=1)
        for name, sign in self.monotone.items():
            if sign not in (-1, 0, 1) or isinstance(sign, bool):
                raise ConfigValueError(f"monotone.{name}", sign, "-1, 0 or 1")


@dataclass
class ScorecardConfig:
    """Points scaling: `base_score` points at good:bad odds `base_odds`; `pdo` doubles them.
    The defaults: 600 at 50:1, 20 points to double the odds."""

    base_score: float = 600.0
    base_odds: float = 50.0
    pdo: float = 20.0
    # [grade, lowest score] pairs, best first; scores below the last bound get the last grade.
    # A list, so an override replaces the whole scale: scorecard.grades=[[X,700],[Y,0]].
    # These: PD < 0.5% (A), < 2% (B), < 7.4% (C), < 24% (D), < 56% (E), else F.
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

    def __post_init__(self) -> None:
        check_ranges(self, "base_odds pdo", gt=0)
        check_range(self, "n_reasons", ge=0)
        pairs = bool(self.grades) and all(
            isinstance(pair, list | tuple) and len(pair) == 2 and isinstance(pair[1], int | float)
            for pair in self.grades
        )
        if not pairs:
            expected = "[grade, lowest score] pairs, e.g. [[A,640],[B,600],[C,0]]"
            raise ConfigValueError("grades", self.grades, expected)


def register() -> None:
    store_schema("data", FinanceDataConfig, name="finance_schema")
    store_schema("model", LightGBMConfig, name="lightgbm_schema")
    store_schema("scorecard", ScorecardConfig, name="finance_schema")
