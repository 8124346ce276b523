"""Scorecard arithmetic, grades, PSI and KS against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from verticals.finance import scorecard
from verticals.finance.config import ScorecardConfig
from verticals.finance.metrics import ks_statistic, psi, psi_band, score_bins


def test_points_scale() -> None:
    card = ScorecardConfig(base_score=600, base_odds=50, pdo=20)
    pd_at_base = 1 / 51  # good:bad odds of 50:1
    pd_double = 1 / 101  # odds 100:1
    assert scorecard.scores(np.array([pd_at_base, pd_double]), card).tolist() == [600, 620]
    assert scorecard.scores(np.array([0.5]), card)[0] == round(600 - 20 * np.log2(50))


def test_grades_use_lower_bounds() -> None:
    card = ScorecardConfig(grades=[["A", 680], ["B", 640], ["C", 0]])
    points = np.array([700, 680, 679, 640, 100, -50])
    assert scorecard.grades(points, card).tolist() == ["A", "A", "B", "B", "C", "C"]


def test_ks_and_psi_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    assert ks_statistic(y, np.array([0.1, 0.2, 0.8, 0.9])) == pytest.approx(1.0)
    assert ks_statistic(y, np.array([0.1, 0.8, 0.2, 0.9])) == pytest.approx(0.5)
    edges = np.array([0.5])
    expected = np.array([0.5, 0.5])
    # actual 25% / 75%: PSI = (0.25-0.5)ln(0.5) + (0.75-0.5)ln(1.5)
    actual = np.array([0.0, 1.0, 1.0, 1.0])
    by_hand = (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.75 - 0.5) * np.log(0.75 / 0.5)
    assert psi(edges, expected, actual) == pytest.approx(by_hand)
    assert psi(*score_bins(np.arange(1000.0)), np.arange(1000.0)) == pytest.approx(0, abs=1e-9)
    assert [psi_band(v) for v in (0.05, 0.2, 0.3)] == ["stable", "watch", "shifted"]


def test_reasons_pick_largest_effects_with_direction() -> None:
    contrib = np.array([[0.5, -2.0, 0.1, 0.0, -1.0]])  # 4 features + bias
    X = np.array([[1.0, 0.0, np.nan, 3.0]])  # feature "c" is category 0 = "x"
    levels = [None, ["x", "y"], None, None]
    (reasons,) = scorecard.reasons(contrib, ["a_b", "c", "d", "e"], X, levels, n=3)
    assert [r["feature"] for r in reasons] == ["c", "a b", "d"]
    assert [r["direction"] for r in reasons] == ["lowers risk", "raises risk", "raises risk"]
    assert reasons[0]["value"] == "x" and reasons[1]["value"] == 1.0
    assert reasons[2]["value"] is None
