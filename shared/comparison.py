"""Champion against challenger on one holdout: the decision and its reason.

The challenger wins when it beats the champion on the vertical's primary metric by at
least the margin, and, where the vertical can score a resample of the holdout without
predicting again (`Vertical.score_cases`), when the paired bootstrap's interval of that
gain lies above zero: a small holdout must not promote a model on luck. A guard metric
(finance: Brier; manufacturing: the escape rate) may get worse by its tolerance, no more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from verticals.core.contract import CaseScores


@dataclass(frozen=True)
class Guard:
    """A metric the challenger may not be worse on by more than `tolerance`."""

    tolerance: float
    goal: str = "max"  # "max": higher is better; "min": an error or a rate of misses


@dataclass(frozen=True)
class Rules:
    metric: str
    goal: str  # of the primary metric: "max" or "min"
    margin: float = 0.0
    guards: dict[str, Guard] = field(default_factory=dict)
    resamples: int = 1000  # 0: no bootstrap interval
    confidence: float = 0.95
    seed: int = 0

    @classmethod
    def of(cls, cfg: Any, metric: str, goal: str, seed: int = 0) -> Rules:
        """From `retrain.*` (conf/<vertical>/retrain/default.yaml)."""
        guards = {
            str(name): Guard(float(g["tolerance"]), str(g.get("goal", "max")))
            for name, g in (cfg.get("guards") or {}).items()
        }
        return cls(metric, goal, float(cfg.margin), guards, int(cfg.bootstrap),
                   float(cfg.confidence), seed)  # fmt: skip


@dataclass
class Interval:
    """The bootstrap interval of the challenger's gain on the primary metric."""

    low: float
    high: float
    confidence: float
    resamples: int
    cases: int


@dataclass
class Comparison:
    champion: dict[str, float]
    challenger: dict[str, float]
    gain: float  # on the primary metric, positive when the challenger is better
    interval: Interval | None
    promote: bool
    reason: str
    guards: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "champion": self.champion,
            "challenger": self.challenger,
            "gain": self.gain,
            "interval": None if self.interval is None else vars(self.interval),
            "promote": self.promote,
            "reason": self.reason,
            "guards": self.guards,
        }


def better(goal: str, difference: float) -> float:
    """`difference` (challenger - champion) as a gain: positive when the challenger is better."""
    return difference if goal == "max" else -difference


def bootstrap(champion: CaseScores, challenger: CaseScores, rules: Rules) -> Interval | None:
    """The paired bootstrap: the same resampled cases for both models, many times; the
    interval of the gain on the primary metric. None when the scores lack the metric."""
    if rules.resamples <= 0 or champion.n != challenger.n or champion.n < 2:
        return None
    rng = np.random.default_rng(rules.seed)
    gains = []
    for _ in range(rules.resamples):
        positions = rng.integers(0, champion.n, champion.n)
        a = champion.metrics(positions).get(rules.metric)
        b = challenger.metrics(positions).get(rules.metric)
        if a is None or b is None:
            return None
        if math.isfinite(a) and math.isfinite(b):
            gains.append(better(rules.goal, b - a))
    if len(gains) < rules.resamples // 2:
        return None
    tail = (1 - rules.confidence) / 2
    low, high = np.quantile(gains, [tail, 1 - tail])
    return Interval(float(low), float(high), rules.confidence, len(gains), champion.n)


def decide(
    champion: dict[str, float],
    challenger: dict[str, float],
    rules: Rules,
    interval: Interval | None = None,
) -> Comparison:
    """The decision on two metric sets from the same holdout, with the reason in words."""
    name = rules.metric
    for side, found in (("champion", champion), ("challenger", challenger)):
        if not _finite(found.get(name)):
            return Comparison(champion, challenger, float("nan"), interval, False,
                              f"the {side} has no {name} on the holdout")  # fmt: skip
    gain = better(rules.goal, challenger[name] - champion[name])
    guards = [_guard(metric, g, champion, challenger) for metric, g in rules.guards.items()]
    figures = f"{name} {champion[name]:.4f} -> {challenger[name]:.4f}"
    if gain < rules.margin or gain <= 0:  # a tie never replaces the champion
        reason = f"{figures}: a gain of {gain:+.4f} is below the margin {rules.margin:g}"
        if gain <= 0 and rules.margin == 0:
            reason = f"{figures}: no gain"
        return Comparison(champion, challenger, gain, interval, False, reason, guards)
    if interval is not None and interval.low <= 0:
        reason = (
            f"{figures}: the gain {gain:+.4f} clears the margin, but its "
            f"{interval.confidence:.0%} interval [{interval.low:+.4f}, {interval.high:+.4f}] "
            f"over {interval.cases} cases includes no gain"
        )
        return Comparison(champion, challenger, gain, interval, False, reason, guards)
    broken = [g for g in guards if g["broken"]]
    if broken:
        worse = "; ".join(
            f"{g['metric']} {g['champion']:.4f} -> {g['challenger']:.4f} is worse by "
            f"{g['worse_by']:.4f}, more than the tolerance {g['tolerance']:g}"
            for g in broken
        )
        return Comparison(champion, challenger, gain, interval, False,
                          f"{figures} is better, but {worse}", guards)  # fmt: skip
    ci = (
        f", {interval.confidence:.0%} interval [{interval.low:+.4f}, {interval.high:+.4f}]"
        if interval is not None
        else ""
    )
    reason = f"{figures} ({gain:+.4f} >= margin {rules.margin:g}{ci}); guards held"
    return Comparison(champion, challenger, gain, interval, True, reason, guards)


def _guard(
    metric: str, guard: Guard, champion: dict[str, float], challenger: dict[str, float]
) -> dict[str, Any]:
    a, b = champion.get(metric), challenger.get(metric)
    if not (_finite(a) and _finite(b)):  # not measured on this holdout: nothing to hold
        return {"metric": metric, "champion": a, "challenger": b, "tolerance": guard.tolerance,
                "worse_by": None, "broken": False}  # fmt: skip
    assert a is not None and b is not None
    worse_by = -better(guard.goal, b - a)
    return {
        "metric": metric,
        "champion": a,
        "challenger": b,
        "tolerance": guard.tolerance,
        "worse_by": worse_by,
        "broken": worse_by > guard.tolerance,
    }


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
