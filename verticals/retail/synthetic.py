"""Purchase logs with planted taste: users and items belong to latent segments, users buy
mostly (80%) in their own segment, item popularity is long-tailed within a segment, some
buys repeat, and timestamps run over half a year. A recommender that finds the segments
beats "most popular" clearly; one that does not, cannot. Vectorised: tens of millions of
rows take seconds."""

from __future__ import annotations

import numpy as np
import pandas as pd

DAY = 86_400
START = 1_700_000_000  # 2023-11-14, unix seconds
PRICE_BANDS = np.array(["budget", "mid", "premium"])


def generate(
    n_users: int, n_items: int, n_interactions: int, n_segments: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interactions: user, item, quantity, timestamp; catalog: item, category, price_band)."""
    rng = np.random.default_rng(seed)
    item_segment = rng.integers(0, n_segments, n_items)
    user_segment = rng.integers(0, n_segments, n_users)
    popularity = rng.lognormal(0.0, 1.2, n_items)  # long tail, no single item dominating
    activity = rng.lognormal(0.0, 1.0, n_users)

    users = rng.choice(n_users, n_interactions, p=activity / activity.sum())
    own = rng.random(n_interactions) < 0.8
    segments = np.where(own, user_segment[users], rng.integers(0, n_segments, n_interactions))
    items = np.empty(n_interactions, dtype=np.int64)
    for s in range(n_segments):  # popularity-weighted draw inside each segment
        pool = np.flatnonzero(item_segment == s)
        rows = np.flatnonzero(segments == s)
        if len(pool) == 0:
            pool = np.arange(n_items)
        weights = popularity[pool] / popularity[pool].sum()
        items[rows] = rng.choice(pool, len(rows), p=weights)
    repeat = rng.random(n_interactions) < 0.1  # re-buys: copy an earlier row of the log
    source = rng.integers(0, np.arange(1, n_interactions + 1))
    users[repeat], items[repeat] = users[source[repeat]], items[source[repeat]]
    timestamps = START + np.sort(rng.uniform(0, 180 * DAY, n_interactions)).astype(np.int64)
    log = pd.DataFrame(
        {
            "user": users.astype(np.int64),
            "item": items,
            "quantity": rng.geometric(0.7, n_interactions).astype(np.int64),
            "timestamp": timestamps,
        }
    )
    catalog = pd.DataFrame(
        {
            "item": np.arange(n_items),
            "category": [f"segment_{s}" for s in item_segment],
            "price_band": PRICE_BANDS[rng.integers(0, 3, n_items)],
        }
    )
    return log, catalog
