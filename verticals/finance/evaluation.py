"""Test-split evaluation of a PD model: metrics, PSI against training, and the plots."""

from __future__ import annotations

from typing import Any

import numpy as np

from verticals.core.contract import RunContext
from verticals.finance import scorecard, shards
from verticals.finance.data import Part, to_matrix
from verticals.finance.metrics import classification_metrics, psi, psi_band
from verticals.finance.model import FinanceModel
from verticals.finance.plots import plot_all
from verticals.finance.shards import ShardPart


def evaluate(
    model: FinanceModel, part: Part | ShardPart, ctx: RunContext | None = None
) -> dict[str, float]:
    """Metrics and PSI on `part`; the plots too when the run's `ctx` is given. A sharded
    table's test split is scored by Ray tasks where its rows are."""
    if isinstance(part, ShardPart):
        y, pd_, planted = shards.score(model, part)
    else:
        y, pd_ = part.y, model.pd(to_matrix(part.X, model.schema))  # the model's columns
        has = "true_pd" in part.extra.columns
        planted = part.extra["true_pd"].to_numpy() if has else None
    points = scorecard.scores(pd_, model.card)
    metrics = classification_metrics(y, pd_)
    metrics["psi"] = psi(model.psi_edges, model.psi_expected, points)
    if planted is not None:  # planted truth: how close to the best possible model
        metrics["oracle_roc_auc"] = classification_metrics(y, planted)["roc_auc"]
    if ctx is not None:
        plot_all(y, pd_, points, ctx.plots_dir)
    return metrics


def describe(model: FinanceModel, metrics: dict[str, float], splits_info: dict[str, Any]) -> str:
    """The model card's model, drivers and limits (the data paragraph is the core's)."""
    gain = model.booster.feature_importance("gain", iteration=model.best_iteration)
    order = np.argsort(-gain)[:8]
    total = gain.sum() or 1.0
    top = "\n".join(
        f"| {model.schema.features[i]} | {gain[i] / total:.1%} |" for i in order if gain[i] > 0
    )
    band = psi_band(metrics["psi"]) if "psi" in metrics else "n/a"
    card = model.card
    return (
        "## Model\n\n"
        f"LightGBM binary classifier, {model.best_iteration} trees (early stopping), trained on "
        f"{model.lightgbm_device}. Scores: {card.base_score:g} points at good:bad odds "
        f"{card.base_odds:g}:1, {card.pdo:g} points to double the odds; grades "
        f"{', '.join(f'{g} >= {v:g}' for g, v in card.grades)}.\n\n"
        f"Score stability (PSI, test vs train): {metrics.get('psi', float('nan')):.3f} "
        f"({band}).\n\n"
        f"### Largest drivers (share of total gain)\n\n| feature | gain |\n| --- | --- |\n{top}\n\n"
        "## Use and limits\n\n"
        "Reason codes are LightGBM's SHAP contributions (log-odds), largest first. Check the "
        "calibration plot before using PDs for provisioning, and re-check PSI on new "
        "populations: above 0.25 the population has shifted and the model needs review.\n"
    )
