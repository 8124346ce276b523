"""Structured configs (Hydra ConfigStore schemas) for the retail vertical."""

from __future__ import annotations

from dataclasses import dataclass

from verticals.core.config import store_schema


@dataclass
class RetailDataConfig:
    """Where the interactions come from and how the test set is held out."""

    source: str = "synthetic"  # synthetic | movielens | interactions
    path: str | None = None  # movielens: u.data / ratings.csv; interactions: CSV/Parquet log
    catalog_path: str | None = None  # optional item table (item id + any attributes)
    user_col: str = "user"
    item_col: str = "item"
    weight_col: str | None = None  # quantity / value; missing = 1 per interaction
    time_col: str | None = None  # unix seconds or dates; needed by time-based splits
    catalog_item_col: str = "item"
    min_rating: float = 4.0  # movielens: ratings at or above this are positives
    # synthetic log with planted taste segments and long-tailed popularity
    n_users: int = 2000
    n_items: int = 1000
    n_interactions: int = 60_000
    n_segments: int = 8
    # held-out test set: user_fraction (last share of each user's log, by time),
    # leave_last (each user's last k items) or time (everything in the last N days)
    split: str = "user_fraction"
    test_fraction: float = 0.2
    leave_last: int = 1
    holdout_days: float = 14.0
    min_user_interactions: int = 5  # users with fewer are trained on but not scored


@dataclass
class RecommenderConfig:
    """An `implicit` model; names follow implicit's own parameters."""

    name: str = "als"  # als | bpr | lmf
    factors: int = 64
    regularization: float = 0.01
    alpha: float = 1.0  # ALS confidence: 1 + alpha * weight
    iterations: int = 15
    learning_rate: float = 0.01  # bpr / lmf
    weighting: str = "none"  # none | bm25 | tfidf: reweight the user x item matrix first
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    k: int = 10  # the cut-off of the reported metrics (and default recommendations)
    num_threads: int = 0  # 0 = all cores


def register() -> None:
    store_schema("data", RetailDataConfig, name="retail_schema")
    store_schema("model", RecommenderConfig, name="retail_schema")
