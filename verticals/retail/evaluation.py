"""Model against the popularity baseline on the held-out users: metrics@k, lifts, a plot."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from verticals.core.contract import RunContext
from verticals.core.runs import save_figure
from verticals.retail.data import HeldOut
from verticals.retail.metrics import at_k
from verticals.retail.model import RetailModel, popular_for, recommend_many

CURVE_K = 50


def evaluate(model: RetailModel, truth: HeldOut, ctx: RunContext | None = None) -> dict[str, float]:
    """Metrics@k of the model and of popularity; the curves to k=50 when `ctx` is given."""
    k = int(model.params["k"])
    depth = max(k, CURVE_K if ctx else k)
    recs, popular, sets = answers(model, truth, depth)
    n_items = len(model.item_ids)
    mine, base = at_k(recs, sets, k, n_items), at_k(popular, sets, k, n_items)
    metrics = dict(mine)
    for name, value in base.items():
        metrics[f"popularity_{name}"] = value
    for name in (f"precision@{k}", f"ndcg@{k}", f"map@{k}", f"recall@{k}", f"coverage@{k}"):
        metrics[f"lift_{name}"] = mine[name] / base[name] if base[name] > 0 else float("nan")
    metrics["test_users"] = float(len(truth.users))
    if ctx is not None:
        save_figure(
            curve(recs, popular, sets, n_items, model.params["name"]),
            ctx.plots_dir / "metrics_at_k.png",
        )
    return metrics


def answers(
    model: RetailModel, truth: HeldOut, depth: int
) -> tuple[np.ndarray, np.ndarray, list[set[int]]]:
    """(the model's top-`depth`, popularity's, the held-out sets) per test user, as item
    indices. A user the model never saw gets the best sellers, as a server answers them,
    and an item it never saw counts as a miss it could not avoid (an index past its
    catalog): so two models are scored on the same customers and the same purchases."""
    known = np.array([u in model.user_index for u in truth.users], dtype=bool)
    users = np.array([model.user_index[u] for u, k in zip(truth.users, known, strict=True) if k])
    best_sellers = _pad(popular_for(model, None, depth, set(), None), depth)
    recs = np.tile(best_sellers, (len(truth.users), 1))
    if len(users):
        recs[known] = _pad_rows(recommend_many(model, users, depth), depth)
    popular = np.stack(
        [
            _pad(popular_for(model, model.user_index.get(u), depth, set(), None), depth)
            for u in truth.users
        ]
    ).reshape(len(truth.users), depth)
    unseen: dict[str, int] = {}
    n_items = len(model.item_ids)

    def index(item: str) -> int:
        found = model.item_index.get(item)
        return found if found is not None else unseen.setdefault(item, n_items + len(unseen))

    sets = [{index(i) for i in items} for items in truth.items]
    return recs, popular, sets


def _pad_rows(rows: np.ndarray, depth: int) -> np.ndarray:
    return np.pad(rows, ((0, 0), (0, depth - rows.shape[1])), constant_values=-1)


def _pad(items: np.ndarray, depth: int) -> np.ndarray:
    return np.pad(items, (0, depth - len(items)), constant_values=-1)


def curve(
    recs: np.ndarray, popular: np.ndarray, sets: list[set[int]], n_items: int, name: str
) -> Figure:
    """Precision, recall and NDCG at k = 1..50: the model against the popularity baseline."""
    ks = np.arange(1, CURVE_K + 1)
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    for label, ranked, style in ((name, recs, "-"), ("popularity", popular, "--")):
        rows = [at_k(ranked, sets, int(k), n_items) for k in ks]
        for ax, metric in zip(axes, ("precision", "recall", "ndcg"), strict=True):
            ax.plot(
                ks, [r[f"{metric}@{k}"] for r, k in zip(rows, ks, strict=True)], style, label=label
            )
    for ax, metric in zip(axes, ("precision", "recall", "NDCG"), strict=True):
        ax.set(xlabel="k", title=f"{metric}@k")
        ax.legend()
    return fig
