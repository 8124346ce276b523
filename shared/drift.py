"""How far a live sample has moved from a reference sample, one column at a time.

PSI is the figure the field reads bands from (< 0.10 stable, 0.10-0.25 watch, > 0.25
shifted) and the one the monitor's thresholds apply to; it is defined once here and shared
with finance's score-stability metric. Beside it, the tests scipy keeps: two-sample
Kolmogorov-Smirnov and the Wasserstein distance for numbers, chi-square and the
Jensen-Shannon distance for category mixes. scipy rather than Evidently: Evidently does
not import with pandas 3 here, and these few calls are all the monitor needs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

PSI_BINS = 10
NEW = "(new)"  # categories the reference never had
# a column with at most this many distinct reference values is compared as categories
FEW_VALUES = 10
# a text column with more distinct reference values than this is not compared (ids, hashes)
MANY_CATEGORIES = 50
_FLOOR = 1e-6  # empty bins: PSI takes a log of each share


def score_bins(reference: np.ndarray, bins: int = PSI_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Quantile edges of `reference` (deciles by default), and its share in each bin."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    return edges, counts / counts.sum()


def psi(edges: np.ndarray, expected: np.ndarray, values: np.ndarray) -> float:
    """Population stability index of `values` against the reference's bin shares."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(expected))
    return shares_psi(expected, counts / max(counts.sum(), 1))


def shares_psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of two aligned share vectors: sum of (a - e) * ln(a / e)."""
    e = np.clip(np.asarray(expected, float), _FLOOR, None)
    a = np.clip(np.asarray(actual, float), _FLOOR, None)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_band(value: float, watch: float = 0.10, shifted: float = 0.25) -> str:
    """How the field reads a PSI: below `watch` stable, up to `shifted` watch, above shifted."""
    if value < watch:
        return "stable"
    return "watch" if value <= shifted else "shifted"


def is_numeric(reference: pd.Series) -> bool:
    """Whether a column is compared as a distribution (measurements) rather than as a mix
    of categories (text, booleans, a 0/1 flag, a handful of whole-number codes)."""
    if pd.api.types.is_bool_dtype(reference) or not pd.api.types.is_numeric_dtype(reference):
        return False
    values = reference.dropna()
    if values.nunique() > FEW_VALUES:
        return True
    return not bool((values == values.round()).all())  # 3 volumes' intensities: numbers


def compare_numeric(reference: pd.Series, live: pd.Series) -> dict[str, Any]:
    """PSI on the reference's deciles, KS statistic and p-value, Wasserstein distance in
    reference standard deviations, means and the share of missing values."""
    ref = pd.to_numeric(reference, errors="coerce").to_numpy(float)
    now = pd.to_numeric(live, errors="coerce").to_numpy(float)
    ref_ok, now_ok = ref[~np.isnan(ref)], now[~np.isnan(now)]
    figures: dict[str, Any] = {
        "kind": "numeric",
        "n": int(now_ok.size),
        "missing_reference": _share(ref.size - ref_ok.size, ref.size),
        "missing": _share(now.size - now_ok.size, now.size),
    }
    if ref_ok.size == 0 or now_ok.size == 0:
        return {**figures, "psi": math.nan}
    edges, expected = score_bins(ref_ok)
    ks = stats.ks_2samp(ref_ok, now_ok)
    spread = float(np.std(ref_ok)) or 1.0
    return {
        **figures,
        "psi": psi(edges, expected, now_ok),
        "ks": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "wasserstein_sd": float(stats.wasserstein_distance(ref_ok, now_ok)) / spread,
        "mean_reference": float(np.mean(ref_ok)),
        "mean": float(np.mean(now_ok)),
    }


def compare_categorical(reference: pd.Series, live: pd.Series) -> dict[str, Any]:
    """PSI and Jensen-Shannon distance of the category mixes, a chi-square test of the live
    counts against the reference's shares, and the share of categories never seen. Missing
    values are left out of the mix and reported as a share, as for numbers (a frame whose
    rows describe different things, readings and forecasts, leaves each other's columns
    empty)."""
    ref = _as_text(reference.dropna())
    now = _as_text(live.dropna())
    figures: dict[str, Any] = {
        "kind": "categorical",
        "n": int(now.size),
        "missing_reference": _share(reference.size - ref.size, reference.size),
        "missing": _share(live.size - now.size, live.size),
    }
    levels = ref.value_counts(normalize=True)
    if len(levels) > MANY_CATEGORIES:
        return {**figures, "psi": math.nan, "note": f"{len(levels)} categories: not compared"}
    if now.empty or levels.empty:
        return {**figures, "psi": math.nan}
    counts = now.value_counts()
    names = [*levels.index, NEW]
    expected = np.array([*levels.to_numpy(float), 0.0])
    observed = np.array([*(counts.get(k, 0) for k in levels.index), counts.drop(levels.index,
                         errors="ignore").sum()], float)  # fmt: skip
    actual = observed / observed.sum()
    smoothed = np.clip(expected, _FLOOR, None)
    chi = stats.chisquare(observed, smoothed / smoothed.sum() * observed.sum())
    return {
        **figures,
        "psi": shares_psi(expected, actual),
        "js": float(jensenshannon(expected, actual, base=2)),
        "chi2_pvalue": float(chi.pvalue),
        "new": float(actual[-1]),
        "shares_reference": _top(names, expected),
        "shares": _top(names, actual),
    }


def compare(reference: pd.Series, live: pd.Series) -> dict[str, Any]:
    """`compare_numeric` or `compare_categorical`, as the reference column reads."""
    if is_numeric(reference):
        return compare_numeric(reference, live)
    return compare_categorical(reference, live)


def _as_text(column: pd.Series) -> pd.Series:
    """Categories as strings (True and "True" are one category)."""
    return column.astype(object).map(str)


def _share(part: int, whole: int) -> float:
    return float(part) / whole if whole else 0.0


def _top(names: list[str], shares: np.ndarray, limit: int = 12) -> dict[str, float]:
    """The largest shares by name (a report shows a dozen, not a catalog)."""
    order = np.argsort(-shares)[:limit]
    return {str(names[i]): round(float(shares[i]), 6) for i in order if shares[i] > 0}
