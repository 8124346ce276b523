"""Retail: implicit-feedback product recommendation with `implicit` (ALS, BPR, LMF).

Importing this module is cheap; implicit and scipy load when the vertical runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig
from pydantic import BaseModel

from verticals.core.contract import RunContext, Splits, Vertical
from verticals.core.errors import UserError


def _given(value: Any) -> Any:
    """None for a missing cell (None, NaN) in a batch file or a request."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value


def _k(record: dict[str, Any], model: Any) -> int:
    value = _given(record.get("k"))
    if value is None:
        return int(model.params["k"])
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise UserError(f"k={value!r} is not a whole number") from None
    if not 1 <= k <= 1000:
        raise UserError(f"k={k} must be between 1 and 1000")
    return k


def _items(record: dict[str, Any]) -> list[str]:
    """exclude_items: a list (API, Parquet) or text "a;b;c" (CSV)."""
    from verticals.retail.data import as_id

    value = _given(record.get("exclude_items"))
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(";") if v.strip()]
    if hasattr(value, "tolist"):
        value = value.tolist()
    return [as_id(v) for v in value]


def _flag(record: dict[str, Any]) -> bool:
    value = _given(record.get("exclude_bought"))
    if value is None:
        return True
    if isinstance(value, str):
        text = value.strip().lower()
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise UserError(f"exclude_bought={value!r}: expected true or false")
        return text in ("true", "1", "yes")
    return bool(value)


class RetailVertical(Vertical):
    name = "retail"
    title = "Product recommendation (implicit)"
    headline_metric = "ndcg@10"

    def register_configs(self) -> None:
        from verticals.retail.config import register

        register()

    def load_data(self, cfg: DictConfig) -> Splits:
        from verticals.retail.data import load_splits

        return load_splits(cfg)

    def fit(self, cfg: DictConfig, splits: Splits, ctx: RunContext) -> Any:
        from verticals.retail.model import fit

        return fit(cfg, splits.train, ctx)

    def evaluate(self, model: Any, data: Any, ctx: RunContext | None = None) -> dict[str, float]:
        from verticals.retail.evaluation import evaluate

        return evaluate(model, data, ctx.plots_dir if ctx else None)

    def save(self, model: Any, directory: Path) -> None:
        from verticals.retail.model import save

        save(model, directory)

    def load(self, directory: Path) -> Any:
        from verticals.retail.model import load

        return load(directory)

    def request_schema(self, model: Any) -> type[BaseModel]:
        from verticals.retail.schema import RecommendRequest

        return RecommendRequest

    def response_schema(self, model: Any) -> type[BaseModel]:
        from verticals.retail.schema import RecommendResponse

        return RecommendResponse

    def predict(self, model: Any, frame: pd.DataFrame) -> pd.DataFrame:
        from verticals.retail.data import as_id
        from verticals.retail.model import recommend_one, similar_items

        rows = []
        for record in frame.to_dict("records"):
            k, exclude, bought = _k(record, model), _items(record), _flag(record)
            category = _given(record.get("category"))
            category = None if category is None else str(category)
            user, item = _given(record.get("user_id")), _given(record.get("item_id"))
            user, item = (None if v is None else as_id(v) for v in (user, item))
            if user is None and item is None:
                raise UserError(
                    "each row needs a user_id (recommendations) or an item_id (similar items)"
                )
            if user is None:
                recs, fallback = similar_items(model, str(item), k, exclude, category)
            else:
                recs, fallback = recommend_one(model, user, k, bought, exclude, category)
            rows.append(
                {
                    "user_id": user,
                    "item_id": item,
                    "fallback": fallback,
                    "recommendations": [
                        {"item_id": i, "score": s, "rank": r + 1} for r, (i, s) in enumerate(recs)
                    ],
                }
            )
        return pd.DataFrame(rows, columns=["user_id", "item_id", "fallback", "recommendations"])

    def predict_table(self, model: Any, frame: pd.DataFrame) -> pd.DataFrame:
        """Files get flat columns: item_1..item_k (and score_1..k) per customer."""
        nested = self.predict(model, frame)
        flat = nested[["user_id", "item_id", "fallback"]].copy()
        k = max((len(r) for r in nested["recommendations"]), default=0)
        for j in range(k):
            flat[f"item_{j + 1}"] = [
                r[j]["item_id"] if j < len(r) else None for r in nested["recommendations"]
            ]
            flat[f"score_{j + 1}"] = [
                r[j]["score"] if j < len(r) else None for r in nested["recommendations"]
            ]
        return flat

    def example_inputs(self, splits: Splits, n: int) -> pd.DataFrame:
        return pd.DataFrame({"user_id": splits.test.users[:n]})

    def library_versions(self) -> list[str]:
        return ["implicit", "scipy"]
