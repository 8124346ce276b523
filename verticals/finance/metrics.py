"""The discrimination, calibration and stability measures a model-risk team asks for."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
    roc_curve,
)

PSI_BINS = 10


def ks_statistic(y: np.ndarray, pd_: np.ndarray) -> float:
    """Kolmogorov-Smirnov: largest gap between the PD distributions of bads and goods."""
    fpr, tpr, _ = roc_curve(y, pd_)
    return float(np.max(tpr - fpr))


def score_bins(train_scores: np.ndarray, bins: int = PSI_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Decile edges of the training scores, and the share of training scores in each."""
    edges = np.unique(np.quantile(train_scores, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(
        np.searchsorted(edges, train_scores, side="right"), minlength=len(edges) + 1
    )
    return edges, counts / counts.sum()


def psi(edges: np.ndarray, expected: np.ndarray, scores: np.ndarray) -> float:
    """Population stability index of `scores` against the training distribution."""
    counts = np.bincount(np.searchsorted(edges, scores, side="right"), minlength=len(expected))
    actual = counts / max(counts.sum(), 1)
    e = np.clip(expected, 1e-6, None)
    a = np.clip(actual, 1e-6, None)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_band(value: float) -> str:
    """How the field reads a PSI: < 0.10 stable, 0.10-0.25 watch, > 0.25 shifted."""
    if value < 0.10:
        return "stable"
    return "watch" if value <= 0.25 else "shifted"


def classification_metrics(y: np.ndarray, pd_: np.ndarray) -> dict[str, float]:
    auc = float(roc_auc_score(y, pd_))
    return {
        "roc_auc": auc,
        "gini": 2 * auc - 1,
        "ks": ks_statistic(y, pd_),
        "brier": float(brier_score_loss(y, pd_)),
        "log_loss": float(log_loss(y, np.clip(pd_, 1e-12, 1 - 1e-12), labels=[0, 1])),
        "pr_auc": float(average_precision_score(y, pd_)),
        "default_rate": float(np.mean(y)),
        "mean_pd": float(np.mean(pd_)),
    }
