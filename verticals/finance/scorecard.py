"""From PD to what a credit officer reads: points, grades and reason codes."""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from verticals.finance.config import ScorecardConfig


def scores(pd_: np.ndarray, cfg: ScorecardConfig) -> np.ndarray:
    """Points on the usual scale: `base_score` at good:bad odds `base_odds`, +`pdo` per doubling."""
    p = np.clip(pd_, 1e-9, 1 - 1e-9)
    factor = cfg.pdo / math.log(2)
    offset = cfg.base_score - factor * math.log(cfg.base_odds)
    return np.rint(offset + factor * np.log((1 - p) / p)).astype(int)


def grades(points: np.ndarray, cfg: ScorecardConfig) -> np.ndarray:
    """The first grade (best first) whose lower bound the score reaches; else the last."""
    names, bounds = _grade_table(tuple((str(name), float(bound)) for name, bound in cfg.grades))
    pos = np.searchsorted(bounds, -points.astype(float), side="left")
    return names[np.minimum(pos, len(names) - 2)]


@cache
def _grade_table(grades: tuple[tuple[str, float], ...]) -> tuple[np.ndarray, np.ndarray]:
    """Grade names best first (the last repeated) and their negated lower bounds, sorted:
    built once per scorecard, not per request."""
    ordered = sorted(grades, key=lambda pair: -pair[1])
    names = np.array([n for n, _ in ordered] + [ordered[-1][0]], dtype=object)
    return names, np.array([-b for _, b in ordered])


def readable(feature: str) -> str:
    return feature.replace("_", " ")


def _ranked(contrib: np.ndarray, n_features: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices of the `n` largest |SHAP| per row, and their log-odds (4 decimals).

    An effect that rounds to zero played no part: callers leave its slot empty.
    """
    values = contrib[:, :n_features]
    top = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :n]  # ties: feature order
    return top, np.round(values[np.arange(len(values))[:, None], top], 4)


def top_reasons(contrib: np.ndarray, features: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised reasons for files: readable feature names and signed log-odds, largest
    effect first; an empty slot is (None, NaN)."""
    top, effects = _ranked(contrib, len(features), n)
    names = np.array([readable(f) for f in features], dtype=object)[top]
    names[effects == 0.0] = None
    return names, np.where(effects == 0.0, np.nan, effects)


def reasons(
    contrib: np.ndarray,
    features: list[str],
    X: np.ndarray,
    levels: list[list[str] | None],
    n: int,
) -> list[list[dict[str, object]]]:
    """Up to `n` principal reasons per applicant from LightGBM's SHAP contributions.

    `contrib` is LightGBM's `pred_contrib` output (one column per feature plus the bias), in
    log-odds. Reasons are the largest contributions by size, each with its direction.
    `X` is the feature matrix in model order (`data.to_matrix`); `levels` gives each
    feature's category names, or None for a numeric feature.
    """
    top, effects = _ranked(contrib, len(features), n)
    names = [readable(f) for f in features]
    out = []
    for x, cols, row_effects in zip(X.tolist(), top.tolist(), effects.tolist(), strict=True):
        out.append(
            [
                {
                    "feature": names[j],
                    "value": _cell(x[j], levels[j]),
                    "direction": "raises risk" if effect > 0 else "lowers risk",
                    "log_odds": effect,
                }
                for j, effect in zip(cols, row_effects, strict=True)
                if effect != 0.0
            ]
        )
    return out


def _cell(value: float, names: list[str] | None) -> object:
    """A feature's value as plain Python: its category name, the number, or None (missing)."""
    if value != value:
        return None
    return value if names is None else names[int(value)]
