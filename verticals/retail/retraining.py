"""Feedback as training data: what customers bought (or clicked) after their
recommendations becomes interactions, at the time it was observed, so new items and new
tastes reach the model; a holdout of customers and their later purchases scores champion
and challenger alike."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from verticals.core.contract import CaseScores, Logged, Splits
from verticals.core.errors import UserError
from verticals.retail.data import HeldOut, Log, as_id
from verticals.retail.evaluation import answers
from verticals.retail.metrics import at_k

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from verticals.retail.model import RetailModel

#: An interaction's weight by event: a click says less about taste than a purchase.
EVENT_WEIGHT = {"purchase": 1.0, "click": 0.25}
_HOLDOUT = "holdout.json"


def interactions(entries: list[Logged]) -> tuple[pd.DataFrame, int]:
    """(user, item, weight, time) rows of the feedback, oldest first; and how many entries
    had no customer to credit (a similar-items request, or inputs not logged)."""
    rows: list[dict[str, Any]] = []
    skipped = 0
    for entry in entries:
        user = _customer(entry)
        if user is None or not entry.outcome:
            skipped += 1
            continue
        when = entry.observed_at or entry.created
        seconds = when.replace(tzinfo=UTC).timestamp() if when is not None else np.nan
        weight = EVENT_WEIGHT.get(str(entry.outcome.get("event", "purchase")), 1.0)
        rows.extend(
            {"user": user, "item": as_id(item), "weight": weight, "time": seconds}
            for item in entry.outcome.get("items") or []
        )
    frame = pd.DataFrame(rows, columns=["user", "item", "weight", "time"])
    return frame.sort_values("time", kind="stable").reset_index(drop=True), skipped


def _customer(entry: Logged) -> str | None:
    """The customer a request asked for, as the model keeps ids; None for a similar-items
    request or when the log kept no inputs. (A hashed id cannot be told from a real one:
    the core refuses to retrain from a log kept with `log.inputs=hashed`.)"""
    if not isinstance(entry.inputs, list) or not entry.inputs:
        return None
    user = entry.inputs[0].get("user_id")
    return None if user is None else as_id(user)


def learn_from(cfg: DictConfig, splits: Splits, feedback: list[Logged]) -> Splits:
    """The training log with the feedback's interactions appended (they are newer than
    anything in it); the held-out customers stay as they were."""
    found, skipped = interactions(feedback)
    if found.empty:
        raise UserError(
            f"no purchase or click of a known customer in the feedback ({skipped} requests "
            "without a customer id: similar-items requests, or inputs not logged)"
        )
    train: Log = splits.train
    catalog = train.catalog
    info = dict(splits.info)
    info["feedback"] = {
        "interactions": int(len(found)),
        "customers": int(found["user"].nunique()),
        "new_customers": int((~found["user"].isin(set(train.frame["user"]))).sum()),
        "new_items": int(
            found.loc[~found["item"].isin(set(train.frame["item"])), "item"].nunique()
        ),
        **({"skipped_requests": skipped} if skipped else {}),
    }
    frame = pd.concat([train.frame, found], ignore_index=True)
    return Splits(Log(frame, catalog, train.info), splits.val, splits.test, info)


def extend_holdout(model: RetailModel, holdout: HeldOut, feedback: list[Logged]) -> HeldOut:
    """The held-out customers with the items of the feedback added (a customer already in
    the holdout gets the union)."""
    found, _ = interactions(feedback)
    items = {u: set(map(str, i)) for u, i in zip(holdout.users, holdout.items, strict=True)}
    for user, group in found.groupby("user", sort=False):
        had = _had(model, str(user))
        new = set(group["item"].astype(str)) - had  # a re-buy cannot be recommended: no case
        if new:
            items.setdefault(str(user), set()).update(new)
    users = list(items)
    return HeldOut(users, [np.asarray(sorted(items[u]), dtype=object) for u in users])


def _had(model: RetailModel, user: str) -> set[str]:
    """The items `user` had in the model's training data."""
    index = model.user_index.get(user)
    if index is None:
        return set()
    return {str(model.item_ids[i]) for i in model.user_items[index].indices}


def save_holdout(truth: HeldOut, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    cases = [
        {"user": str(u), "items": [str(i) for i in items]}
        for u, items in zip(truth.users, truth.items, strict=True)
    ]
    (directory / _HOLDOUT).write_text(json.dumps(cases))


def load_holdout(directory: Path) -> HeldOut:
    cases = json.loads((directory / _HOLDOUT).read_text())
    return HeldOut(
        [c["user"] for c in cases], [np.asarray(c["items"], dtype=object) for c in cases]
    )


def score_cases(model: RetailModel, truth: HeldOut) -> CaseScores | None:
    """Each customer's NDCG, MAP, precision and recall at k, from one set of answers: the
    test metrics are their means, so a resample's metrics are means over it."""
    k = int(model.params["k"])
    if not truth.users:
        return None
    recs, _, sets = answers(model, truth, k)
    n_items = len(model.item_ids)
    per_user: dict[str, list[float]] = {}
    for row, found in zip(recs, sets, strict=True):
        one = at_k(row[None, :], [found], k, n_items)
        for name in (f"ndcg@{k}", f"map@{k}", f"precision@{k}", f"recall@{k}"):
            per_user.setdefault(name, []).append(one[name])
    return CaseScores.of_means(per_user)


def case_keys(data: HeldOut | Log) -> set[str]:
    """(customer, item) pairs: held-out purchases, or the interactions of a training log."""
    if isinstance(data, Log):
        pairs = zip(data.frame["user"].astype(str), data.frame["item"].astype(str), strict=True)
    else:
        pairs = ((u, str(i)) for u, items in zip(data.users, data.items, strict=True)
                 for i in items)  # fmt: skip
    return {f"{u}\x00{i}" for u, i in pairs}


def entry_keys(entry: Logged) -> set[str]:
    user = _customer(entry)
    if user is None or not entry.outcome:
        return set()
    return {f"{user}\x00{as_id(i)}" for i in entry.outcome.get("items") or []}
