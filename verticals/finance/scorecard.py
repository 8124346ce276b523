"""From PD to what a credit officer reads: points, grades and reason codes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from verticals.finance.config import ScorecardConfig


def scores(pd_: np.ndarray, cfg: ScorecardConfig) -> np.ndarray:
    """Points on the usual scale: `base_score` at good:bad odds `base_odds`, +`pdo` per doubling."""
    p = np.clip(pd_, 1e-9, 1 - 1e-9)
    factor = cfg.pdo / math.log(2)
    offset = cfg.base_score - factor * math.log(cfg.base_odds)
    return np.rint(offset + factor * np.log((1 - p) / p)).astype(int)


def grades(points: np.ndarray, cfg: ScorecardConfig) -> np.ndarray:
    """The first grade (best first) whose lower bound the score reaches; else the last."""
    names = list(cfg.grades)
    bounds = np.array([cfg.grades[g] for g in names], dtype=float)
    order = np.argsort(-bounds)
    names = [names[i] for i in order]
    bounds = bounds[order]
    pos = np.searchsorted(-bounds, -points.astype(float), side="left")
    return np.array(names + [names[-1]], dtype=object)[np.minimum(pos, len(names) - 1)]


def readable(feature: str) -> str:
    return feature.replace("_", " ")


def reasons(
    contrib: np.ndarray, features: list[str], frame: pd.DataFrame, n: int
) -> list[list[dict[str, object]]]:
    """Up to `n` principal reasons per applicant from LightGBM's SHAP contributions.

    `contrib` is LightGBM's `pred_contrib` output (one column per feature plus the bias), in
    log-odds. Reasons are the largest contributions by size, each with its direction.
    """
    values = contrib[:, : len(features)]
    top = np.argsort(-np.abs(values), axis=1)[:, :n]
    out = []
    for row, cols in enumerate(top):
        items = []
        for j in cols:
            effect = float(values[row, j])
            if effect == 0.0:
                continue
            value = frame.iat[row, j]
            items.append(
                {
                    "feature": readable(features[j]),
                    "value": None
                    if pd.isna(value)
                    else (str(value) if isinstance(value, str) else float(value)),
                    "direction": "raises risk" if effect > 0 else "lowers risk",
                    "log_odds": round(effect, 4),
                }
            )
        out.append(items)
    return out
