"""Ranking metrics at k over test users: precision, recall, MAP, NDCG, catalog coverage."""

from __future__ import annotations

import numpy as np


def at_k(recs: np.ndarray, truth: list[set[int]], k: int, n_items: int) -> dict[str, float]:
    """`recs`: (users, >=k) item indices, best first (-1 = none); `truth`: held-out sets."""
    top = recs[:, :k]
    hits = np.array(
        [[item in t for item in row] for row, t in zip(top, truth, strict=True)], dtype=float
    ).reshape(len(truth), k)
    sizes = np.array([len(t) for t in truth], dtype=float)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.array([discount[: int(min(s, k))].sum() for s in sizes])
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    ap = (precision_at * hits).sum(axis=1) / np.minimum(sizes, k)
    shown = np.unique(top[top >= 0])
    return {
        f"precision@{k}": float(hits.sum(axis=1).mean() / k),
        f"recall@{k}": float((hits.sum(axis=1) / sizes).mean()),
        f"map@{k}": float(ap.mean()),
        f"ndcg@{k}": float(((hits * discount).sum(axis=1) / ideal).mean()),
        f"coverage@{k}": float(len(shown) / n_items),
    }
