"""Synthetic loan applicants with planted, monotone effects and a known true PD.

Every effect is known, so a test can compare a model with the oracle that knows `true_pd`.
Rows are generated in chunks, so tens of millions fit in memory as compact dtypes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

HOME = np.array(["own", "mortgage", "rent"])
PURPOSE = np.array(["car", "home_improvement", "debt_consolidation", "education", "business"])
REGION = np.array(["north", "south", "east", "west"])  # pure noise: no effect on PD
# Planted directions: +1 raises the PD, -1 lowers it (the monotone constraints to use).
MONOTONE = {
    "debt_to_income": 1,
    "credit_utilization": 1,
    "late_payments_12m": 1,
    "age": -1,
    "months_employed": -1,
    "income": -1,
}


def _chunk(n: int, rng: np.random.Generator, start: np.datetime64) -> pd.DataFrame:
    age = rng.integers(19, 76, n)
    income = np.exp(rng.normal(10.6, 0.5, n)).round(-2)
    dti = np.clip(rng.beta(2, 5, n) * 1.2, 0, 1.2)
    util = np.clip(rng.beta(1.5, 2.5, n), 0, 1)
    late = rng.poisson(0.4 + 1.2 * util, n)
    employed = np.minimum(rng.exponential(60, n), (age - 18) * 12).astype(int)
    amount = (income * rng.uniform(0.1, 0.8, n)).round(-2)
    term = rng.choice([12, 24, 36, 48, 60], n)
    home = rng.choice(3, n, p=[0.25, 0.4, 0.35])
    purpose = rng.choice(5, n, p=[0.25, 0.2, 0.3, 0.1, 0.15])
    region = rng.choice(4, n)
    logit = (
        -3.2
        + 2.6 * dti
        + 2.2 * np.maximum(util - 0.3, 0)  # a hinge: utilisation matters above 30%
        + 0.45 * np.minimum(late, 4)
        - 0.025 * (age - 40)
        - 0.004 * np.minimum(employed, 120)
        - 0.6 * (np.log(income) - 10.6)
        + 0.012 * (term - 36)
        + np.array([-0.3, 0.0, 0.35])[home]
        + np.array([0.0, -0.2, 0.3, 0.15, 0.5])[purpose]
    )
    true_pd = 1.0 / (1.0 + np.exp(-logit))
    default = rng.random(n) < true_pd
    dates = start + rng.integers(0, 730, n).astype("timedelta64[D]")
    frame = pd.DataFrame(
        {
            "application_date": dates,
            "age": age.astype("int16"),
            "income": income.astype("float32"),
            "debt_to_income": dti.astype("float32"),
            "credit_utilization": util.astype("float32"),
            "late_payments_12m": late.astype("int16"),
            "months_employed": employed.astype("float32"),
            "loan_amount": amount.astype("float32"),
            "loan_term_months": term.astype("int16"),
            "home_ownership": pd.Categorical.from_codes(home, HOME),
            "purpose": pd.Categorical.from_codes(purpose, PURPOSE),
            "region": pd.Categorical.from_codes(region, REGION),
            "true_pd": true_pd.astype("float32"),
            "default": default.astype("int8"),
        }
    )
    # Missing values where real bureaus have them.
    frame.loc[rng.random(n) < 0.03, "months_employed"] = np.nan
    return frame


def generate_applicants(n_rows: int, seed: int = 0, chunk: int = 1_000_000) -> pd.DataFrame:
    """`n_rows` applicants; `true_pd` is the planted probability, `default` its draw."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2023-01-01")
    parts = [_chunk(min(chunk, n_rows - i), rng, start) for i in range(0, n_rows, chunk)]
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return frame
