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

from verticals.core.drift import PSI_BINS, psi, psi_band, score_bins

__all__ = ["PSI_BINS", "classification_metrics", "ks_statistic", "psi", "psi_band", "score_bins"]


def ks_statistic(y: np.ndarray, pd_: np.ndarray) -> float:
    """Kolmogorov-Smirnov: largest gap between the PD distributions of bads and goods."""
    fpr, tpr, _ = roc_curve(y, pd_)
    return float(np.max(tpr - fpr))


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
