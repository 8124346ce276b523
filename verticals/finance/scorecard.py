"""From PD to what a credit officer reads: points, grades and reason codes."""

from __future__ import annotations

import math

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
    names = [str(name) for name, _ in cfg.grades]
    bounds = np.array([bound for _, bound in cfg.grades], dtype=float)
    order = np.argsort(-bounds)
    names = [names[i] for i in order]
    bounds = bounds[order]
    pos = np.searchsorted(-bounds, -points.astype(float), side="left")
    return np.array(names + [names[-1]], dtype=object)[np.minimum(pos, len(names) - 1)]


def readable(feature: str) -> str:
    return feature.replace("_", " ")


def _ranked(contrib: np.ndarray, n_features: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices of the `n` largest |SHAP| per row, and their log-odds (4 decimals).

    An effect that rounds to zero played no part: callers leave its slot empty.
    """
    values = contrib[:, :n_features]
    top = np.argsort(-np.abs(values), axis=1)[:, :n]
    return top, np.round(np.take_along_axis(values, top, axis=1), 4)


def top_reasons(contrib: np.ndarray, features: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised reasons for files: readable feature names and signed log-odds, largest
    effect first; an empty slot is (None, NaN)."""
    top, effects = _ranked(contrib, len(features), n)
    names = np.array([readable(f) for f in features], dtype=object)[top]
    names[effects == 0.0] = None
    return names, np.where(effects == 0.0, np.nan, effects)


def _cell_values(X: np.ndarray, levels: list[list[str] | None]) -> list[list[object]]:
    """Each feature's values as plain Python (category names, floats; None when missing)."""
    columns = []
    for j, names in enumerate(levels):
        values = X[:, j].tolist()
        if names is None:
            columns.append([None if v != v else v for v in values])
        else:
            columns.append([None if v != v else names[int(v)] for v in values])
    return columns


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
    cells = _cell_values(X, levels)
    out = []
    for row, (cols, row_effects) in enumerate(zip(top.tolist(), effects.tolist(), strict=True)):
        out.append(
            [
                {
                    "feature": names[j],
                    "value": cells[j][row],
                    "direction": "raises risk" if effect > 0 else "lowers risk",
                    "log_odds": effect,
                }
                for j, effect in zip(cols, row_effects, strict=True)
                if effect != 0.0
            ]
        )
    return out
