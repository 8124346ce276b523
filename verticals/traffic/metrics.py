"""Masked errors: a zero reading is missing (METR-LA convention) and is not scored."""

from __future__ import annotations

import numpy as np


def masked(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """MAE, RMSE (same units as the data) and MAPE (%) over the non-missing targets."""
    mask = true > 0
    if not mask.any():
        return {"mae": float("nan"), "rmse": float("nan"), "mape": float("nan")}
    err = (pred - true)[mask].astype(np.float64)
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt(np.square(err).mean())),
        "mape": float((np.abs(err) / true[mask]).mean() * 100),
    }


def by_horizon(
    pred: np.ndarray, true: np.ndarray, horizons: list[int]
) -> dict[int, dict[str, float]]:
    """Errors at each horizon (1-based steps ahead) of (W, steps, N) forecasts."""
    return {h: masked(pred[:, h - 1], true[:, h - 1]) for h in horizons if h <= pred.shape[1]}
