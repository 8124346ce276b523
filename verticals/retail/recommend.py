"""Recommendations for records: a user_id (what to buy next) or an item_id (similar items),
with k, exclusions and a category filter, from the API or a row of a batch file."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from verticals.core.errors import UserError
from verticals.retail.data import as_id
from verticals.retail.model import RetailModel, recommend_one, similar_items

COLUMNS = ["user_id", "item_id", "fallback", "short", "recommendations"]


def _given(value: Any) -> Any:
    """None for a missing cell (None, NaN) in a batch file or a request."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value


def _k(record: dict[str, Any], model: RetailModel) -> int:
    value = _given(record.get("k"))
    if value is None:
        return int(model.params["k"])
    if isinstance(value, bool | np.bool_):  # Python's int(True) is 1: not a count
        raise UserError(f"k={value!r} is not a whole number")
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise UserError(f"k={value!r} is not a whole number") from None
    if not 1 <= k <= 1000:
        raise UserError(f"k={k} must be between 1 and 1000")
    return k


def _items(record: dict[str, Any]) -> list[str]:
    """exclude_items: a list (API, Parquet) or text "a;b;c" (CSV)."""
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


def _id(record: dict[str, Any], key: str) -> str | None:
    """A user or item id as text; true/false are refused, not read as customer 1 or 0."""
    value = _given(record.get(key))
    if isinstance(value, bool | np.bool_):
        raise UserError(f"{key}={value!r} is not an id")
    return None if value is None else as_id(value)


def answer(model: RetailModel, record: dict[str, Any]) -> dict[str, Any]:
    """One output row, in plain Python, for one record: a validated request's or a table
    row's. Both paths go through here, so the fast path answers exactly as `predict` does
    and a bad record raises the same `UserError` either way."""
    k, exclude, bought = _k(record, model), _items(record), _flag(record)
    category = _given(record.get("category"))
    category = None if category is None else str(category)
    user, item = (_id(record, key) for key in ("user_id", "item_id"))
    if user is None and item is None:
        raise UserError("each row needs a user_id (recommendations) or an item_id (similar items)")
    if user is None:
        recs, fallback = similar_items(model, str(item), k, exclude, category)
    else:
        recs, fallback = recommend_one(model, user, k, bought, exclude, category)
    return {
        "user_id": user,
        "item_id": item,
        "fallback": fallback,
        "short": len(recs) < k,
        "recommendations": [
            {"item_id": i, "score": s, "rank": r + 1} for r, (i, s) in enumerate(recs)
        ],
    }


def predict(model: RetailModel, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per record: the ids asked about, whether popularity stood in, and the
    ranked recommendations as a list of {item_id, score, rank}."""
    return pd.DataFrame([answer(model, r) for r in frame.to_dict("records")], columns=COLUMNS)


def predict_records(
    model: RetailModel, requests: list[list[dict[str, Any]]]
) -> list[list[dict[str, Any]]]:
    """`predict` for a few validated records, without pandas: each record answered in turn.

    Not one many-user `recommender.recommend` call: implicit scores one user with a
    matrix-vector product and many with a matrix product, and OpenBLAS rounds the two
    differently in the last bits, so batched scores (and near-tied ranks) would differ from
    `predict`'s. Records are independent, so a `UserError` in any fails the whole call,
    as a bad row fails a whole `predict` frame."""
    return [[answer(model, record) for record in records] for records in requests]


def predict_table(model: RetailModel, frame: pd.DataFrame) -> pd.DataFrame:
    """Files get flat columns: item_1..item_k (and score_1..k) per customer, blank past
    a short answer's end."""
    nested = predict(model, frame)
    flat = nested[["user_id", "item_id", "fallback", "short"]].copy()
    k = max((len(r) for r in nested["recommendations"]), default=0)
    for j in range(k):
        flat[f"item_{j + 1}"] = [
            r[j]["item_id"] if j < len(r) else None for r in nested["recommendations"]
        ]
        flat[f"score_{j + 1}"] = [
            r[j]["score"] if j < len(r) else None for r in nested["recommendations"]
        ]
    return flat
