"""After the API: what the customer went on to buy or click, the table the drift monitor
watches (fallbacks, asked categories, how mainstream the answers are) and the test ranking
metrics against those later items."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, field_validator

from verticals.core.contract import Logged
from verticals.retail.data import as_id
from verticals.retail.metrics import at_k
from verticals.retail.model import RetailModel

ANY_CATEGORY = "(any)"
ItemId = Annotated[str, StringConstraints(strict=True, strip_whitespace=True, min_length=1)]


class Outcome(BaseModel):
    """The items the customer bought (or clicked) after the recommendations were shown."""

    model_config = ConfigDict(extra="forbid")

    items: list[ItemId | StrictInt] = Field(
        min_length=1, description="item ids, as in the interaction log (stored as text)"
    )
    event: Literal["purchase", "click"] = "purchase"

    @field_validator("items", mode="after")
    @classmethod
    def _as_text(cls, items: list[str | int]) -> list[str]:
        """Ids as the model keeps them, so 123 and "123" are the same item."""
        return [as_id(item) for item in items]


def outcome_schema(model: RetailModel) -> type[BaseModel]:
    return Outcome


def popularity_percentiles(model: RetailModel) -> np.ndarray:
    """Each item's training popularity (distinct customers, as `model.popularity` ranks
    them) as a percentile: 100 the best seller, 0 the least bought; ties share a value."""
    from scipy.stats import rankdata

    distinct = np.asarray((model.user_items > 0).sum(axis=0)).ravel()
    n = len(distinct)
    return 100.0 * (rankdata(distinct, method="average") - 1.0) / max(n - 1, 1)


def _categories(model: RetailModel) -> dict[str, str] | None:
    catalog = model.catalog
    if catalog is None or "category" not in catalog.columns:
        return None
    known = catalog["category"].dropna()
    return dict(zip(known.index.astype(str), known.astype(str), strict=True))


def monitor_frame(model: RetailModel, entries: list[Logged]) -> pd.DataFrame:
    """One row per answered record (one customer or item asked about): whether an unknown
    user or item fell back to best sellers, the category asked for, the mean popularity
    percentile of the recommended items and the catalog category of the top one.

    The category asked for comes from the inputs: absent when they were not logged (or the
    field was dropped), a hash under `log.inputs=hashed`, which still makes a mix to
    compare. Everything else comes from the answer."""
    percentile = popularity_percentiles(model)
    categories = _categories(model)
    rows: list[dict[str, Any]] = []
    for entry in entries:
        outputs = list(entry.outputs or [])
        records = entry.inputs if isinstance(entry.inputs, list) else None
        if records is not None and len(records) != len(outputs):
            records = None
        for j, out in enumerate(outputs):
            recs = [str(r["item_id"]) for r in out.get("recommendations") or []]
            known = [model.item_index[i] for i in recs if i in model.item_index]
            fallback = bool(out.get("fallback"))
            row: dict[str, Any] = {
                "unknown_user": out.get("user_id") is not None and fallback,
                "unknown_item": out.get("user_id") is None
                and out.get("item_id") is not None
                and fallback,
            }
            if records is not None and "category" in records[j]:
                asked = records[j]["category"]
                row["category"] = ANY_CATEGORY if asked is None else str(asked)
            row["recommended_popularity"] = (
                float(percentile[known].mean()) if known else float("nan")
            )
            if categories is not None:
                row["top_category"] = categories.get(recs[0]) if recs else None
            rows.append(row)
    return pd.DataFrame(rows)


def live_metrics(model: RetailModel, entries: list[Logged]) -> dict[str, float]:
    """Precision, recall, MAP, NDCG and hit rate at the model's k (the test metrics' names:
    `ndcg@10`) of the first answer row's recommendations against the items reported
    afterwards. Later items the model never saw count too: a real miss."""
    k = int(model.params["k"])
    index: dict[str, int] = {}  # every id seen here -> an int, as `at_k` takes them
    recs, truth = [], []
    for entry in entries:
        if not entry.outcome or not entry.outputs:
            continue
        shown = [str(r["item_id"]) for r in entry.outputs[0].get("recommendations") or []][:k]
        row = [index.setdefault(i, len(index)) for i in shown]
        recs.append(row + [-1] * (k - len(row)))
        truth.append({index.setdefault(as_id(i), len(index)) for i in entry.outcome["items"]})
    if not recs:
        return {"feedback_requests": 0.0}
    ranked = np.array(recs, dtype=np.int64).reshape(len(recs), k)
    metrics = at_k(ranked, truth, k, len(model.item_ids))
    metrics.pop(f"coverage@{k}")  # a property of the answers, not of the outcomes
    hits = [any(i in t for i in row) for row, t in zip(ranked.tolist(), truth, strict=True)]
    metrics[f"hit_rate@{k}"] = float(np.mean(hits))
    metrics["feedback_requests"] = float(len(recs))
    return metrics
