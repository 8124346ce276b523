"""Structured configs (Hydra ConfigStore schemas) for the retail vertical.

The defaults live here; the YAML options in conf/retail/ list only what differs. Settings
that take one of a few words are enums (a typo fails while composing), and ranges are
checked in `__post_init__` (see `verticals.core.config.check_config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from verticals.core.config import check_range, check_ranges, store_schema


class RetailSource(StrEnum):
    synthetic = "synthetic"  # purchase logs with planted taste segments
    movielens = "movielens"  # u.data (ML-100K) or ratings.csv (ML-latest)
    interactions = "interactions"  # your CSV/Parquet log


class Split(StrEnum):
    """How the test set is held out."""

    user_fraction = "user_fraction"  # the last share of each user's log, by time
    leave_last = "leave_last"  # each user's last k items
    time = "time"  # everything in the last N days (needs data.time_col)


class Recommender(StrEnum):
    """implicit's models."""

    als = "als"  # alternating least squares (Hu, Koren, Volinsky)
    bpr = "bpr"  # Bayesian personalised ranking
    lmf = "lmf"  # logistic matrix factorisation (Johnson 2014)


class Weighting(StrEnum):
    """How the user x item matrix is reweighted before fitting."""

    none = "none"
    bm25 = "bm25"
    tfidf = "tfidf"


@dataclass
class RetailDataConfig:
    """Where the interactions come from and how the test set is held out."""

    source: RetailSource = RetailSource.synthetic
    path: str | None = None  # movielens: u.data / ratings.csv; interactions: CSV/Parquet log
    catalog_path: str | None = None  # optional item table (item id + any attributes)
    user_col: str = "user"
    item_col: str = "item"
    weight_col: str | None = None  # quantity / value; missing = 1 per interaction
    time_col: str | None = None  # unix seconds or dates; needed by split=time
    catalog_item_col: str = "item"
    min_rating: float = 4.0  # movielens: ratings at or above this are positives
    # synthetic log with planted taste segments and long-tailed popularity
    n_users: int = 2000
    n_items: int = 1000
    n_interactions: int = 60_000
    n_segments: int = 8
    split: Split = Split.user_fraction
    test_fraction: float = 0.2  # split=user_fraction
    leave_last: int = 1  # split=leave_last
    holdout_days: float = 14.0  # split=time
    min_user_interactions: int = 5  # users with fewer are trained on but not scored

    def __post_init__(self) -> None:
        check_ranges(self, "n_users n_items n_interactions n_segments leave_last", ge=1)
        check_range(self, "min_user_interactions", ge=0)
        check_range(self, "test_fraction", gt=0, lt=1)
        check_range(self, "holdout_days", gt=0)


@dataclass
class RecommenderConfig:
    """An `implicit` model; names follow implicit's own parameters."""

    name: Recommender = Recommender.als
    factors: int = 64
    regularization: float = 0.01
    alpha: float = 1.0  # ALS confidence: 1 + alpha * weight
    iterations: int = 15
    learning_rate: float = 0.01  # bpr / lmf
    weighting: Weighting = Weighting.none
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    k: int = 10  # the cut-off of the reported metrics (and default recommendations)
    # 0 = all cores. BPR's threads update shared factors without locks (Hogwild), so its
    # result depends on their timing: bpr.yaml sets 1, which repeats exactly.
    num_threads: int = 0

    def __post_init__(self) -> None:
        check_ranges(self, "factors iterations", ge=1)
        check_range(self, "k", ge=1, le=1000)  # the API's limit on k
        check_ranges(self, "regularization bm25_k1", ge=0)
        check_ranges(self, "alpha learning_rate", gt=0)
        check_range(self, "bm25_b", ge=0, le=1)
        check_range(self, "num_threads", ge=0)


def register() -> None:
    store_schema("data", RetailDataConfig, name="retail_schema")
    store_schema("model", RecommenderConfig, name="retail_schema")
