"""The four pictures a credit-risk validator looks at: ROC, KS, calibration, score split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score, roc_curve

from verticals.core.runs import save_figure


def _figure(figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """A figure outside pyplot: no global backend switch, nothing left open."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def plot_all(y: np.ndarray, pd_: np.ndarray, points: np.ndarray, out: Path) -> list[Path]:
    return [
        _roc(y, pd_, out / "roc.png"),
        _ks(y, points, out / "ks.png"),
        _calibration(y, pd_, out / "calibration.png"),
        _score_distribution(y, points, out / "score_distribution.png"),
    ]


def _roc(y: np.ndarray, pd_: np.ndarray, path: Path) -> Path:
    fpr, tpr, _ = roc_curve(y, pd_)
    auc = roc_auc_score(y, pd_)
    fig, ax = _figure((4.5, 4.5))
    ax.plot(fpr, tpr, label=f"model (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="random")
    ax.set(xlabel="false positive rate (goods flagged)", ylabel="true positive rate (bads caught)")
    ax.set_title("ROC")
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def _ks(y: np.ndarray, points: np.ndarray, path: Path) -> Path:
    grid = np.sort(np.unique(points))
    bad = np.searchsorted(np.sort(points[y == 1]), grid, side="right") / max((y == 1).sum(), 1)
    good = np.searchsorted(np.sort(points[y == 0]), grid, side="right") / max((y == 0).sum(), 1)
    k = int(np.argmax(np.abs(bad - good)))
    fig, ax = _figure((5.5, 4))
    ax.plot(grid, bad, label="defaulted")
    ax.plot(grid, good, label="repaid")
    ax.vlines(grid[k], good[k], bad[k], colors="red", label=f"KS {abs(bad[k] - good[k]):.3f}")
    ax.set(xlabel="score", ylabel="cumulative share", title="KS: score separation")
    ax.legend()
    return save_figure(fig, path)


def _calibration(y: np.ndarray, pd_: np.ndarray, path: Path) -> Path:
    observed, predicted = calibration_curve(y, pd_, n_bins=10, strategy="quantile")
    fig, ax = _figure((4.5, 4.5))
    ax.plot(predicted, observed, "o-", label="model")
    top = max(predicted.max(), observed.max()) * 1.05
    ax.plot([0, top], [0, top], "--", color="grey", label="perfect")
    ax.set(
        xlabel="mean predicted PD", ylabel="observed default rate", title="Calibration (deciles)"
    )
    ax.legend()
    return save_figure(fig, path)


def _score_distribution(y: np.ndarray, points: np.ndarray, path: Path) -> Path:
    fig, ax = _figure((5.5, 4))
    bins = np.histogram_bin_edges(points, bins=30)
    ax.hist(points[y == 0], bins=bins, alpha=0.6, density=True, label="repaid")
    ax.hist(points[y == 1], bins=bins, alpha=0.6, density=True, label="defaulted")
    ax.set(xlabel="score", ylabel="density", title="Score distribution by outcome")
    ax.legend()
    return save_figure(fig, path)
