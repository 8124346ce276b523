"""Has the incoming data moved away from the training data, and is the model still as good
as its test metrics said?

`check` compares a window of the prediction log with the training reference a bundle
carries (`reference`): the vertical's `monitor_frame` of both, column by column
(`drift`), and, where feedback arrived, the vertical's `live_metrics` beside the test
metrics. Thresholds come from `monitor.*` (per vertical, in `conf/<vertical>/monitor/`): a
column whose PSI exceeds its threshold, or a live figure outside its bounds, is a breach.
The result is stored in the log (servers show it as gauges) and written as a report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from verticals.core import drift, reference
from verticals.core.bundle import Bundle
from verticals.core.logs import get_logger
from verticals.core.predlog import PredictionLog, utcnow

log = get_logger("monitor")


@dataclass
class Thresholds:
    """`monitor.*` as plain values (see MonitorConfig)."""

    psi_watch: float = 0.10
    psi_alert: float = 0.25
    psi_alert_by_column: dict[str, float] = field(default_factory=dict)
    ignore: list[str] = field(default_factory=list)
    min_rows: int = 30
    min_reference_rows: int = 10
    live: dict[str, dict[str, float | None]] = field(default_factory=dict)
    rates: dict[str, dict[str, float | None]] = field(default_factory=dict)
    max_rows: int = 200_000

    @classmethod
    def of(cls, node: Any) -> Thresholds:
        from omegaconf import OmegaConf

        given = OmegaConf.to_container(node, resolve=True) if node is not None else {}
        assert isinstance(given, dict)
        known = {k: v for k, v in given.items() if k in cls.__dataclass_fields__}
        return cls(**known)  # type: ignore[arg-type]


@dataclass
class Result:
    """Every figure of one monitor run, its breaches, and the frames the plots need."""

    figures: dict[str, Any]
    reference_frame: pd.DataFrame
    live_frame: pd.DataFrame

    @property
    def breaches(self) -> list[dict[str, Any]]:
        return list(self.figures["breaches"])

    @property
    def ok(self) -> bool:
        return not self.figures["breaches"]


def check(
    bundle: Bundle,
    plog: PredictionLog,
    thresholds: Thresholds,
    since: datetime | None,
    until: datetime | None = None,
) -> Result:
    """Compare the log's window (`since`..`until`, this bundle's version) with the
    bundle's training reference."""
    vertical, model = bundle.vertical, bundle.model
    settings = plog.settings
    ref_entries = reference.read(bundle.path, settings.inputs, settings.drop)
    entries = plog.entries(
        vertical.name, since, until, version=bundle.model_version, limit=thresholds.max_rows
    )
    ref_frame = _frame(vertical.monitor_frame(model, ref_entries))
    live_frame = _frame(vertical.monitor_frame(model, entries)) if entries else pd.DataFrame()
    judged = len(entries) >= thresholds.min_rows
    judged_drift = judged and len(ref_entries) >= thresholds.min_reference_rows
    columns, breaches = {}, []
    for name in ref_frame.columns:
        if name in thresholds.ignore:
            continue
        live = live_frame[name] if name in live_frame.columns else pd.Series([], dtype=object)
        stats = drift.compare(ref_frame[name], live)
        limit = float(thresholds.psi_alert_by_column.get(name, thresholds.psi_alert))
        value = stats.get("psi", math.nan)
        stats["threshold"] = limit
        stats["band"] = (
            drift.psi_band(value, thresholds.psi_watch, limit) if _finite(value) else "n/a"
        )
        columns[name] = stats
        if name in thresholds.rates:
            stats["band"] = "judged by its rate"
            continue
        if judged_drift and _finite(value) and value > limit and stats["n"] > 0:
            breaches.append(_breach(f"psi:{name}", value, f"<= {limit:g}",
                                    f"{name} drifted: PSI {value:.3f} > {limit:g}"))  # fmt: skip
    new_columns = [c for c in live_frame.columns if c not in ref_frame.columns]
    rates = {}
    for name, bounds in thresholds.rates.items():
        if name not in live_frame.columns:
            continue
        value = float(pd.to_numeric(live_frame[name], errors="coerce").astype(float).mean())
        rates[name] = value
        if judged and _finite(value):
            breaches.extend(_outside(f"rate:{name}", f"{name} rate", value, bounds))
    labelled = [e for e in entries if e.outcome is not None]
    live = _plain(vertical.live_metrics(model, labelled)) if labelled else {}
    for name, bounds in thresholds.live.items():
        value = live.get(name)
        if value is None or not _finite(value) or not judged_live(labelled, thresholds):
            continue
        breaches.extend(_outside(name, name, value, bounds))
    test = {k: bundle.metrics[k] for k in live if isinstance(bundle.metrics.get(k), int | float)}
    figures = {
        "vertical": vertical.name,
        "model_version": bundle.model_version,
        "created": utcnow().isoformat(timespec="seconds"),
        "window": {"since": _iso(since), "until": _iso(until)},
        "requests": len(entries),
        "rows": int(len(live_frame)),
        "reference_rows": int(len(ref_frame)),
        "feedback": len(labelled),
        "judged": judged,
        "note": _note(len(entries), len(ref_entries), thresholds),
        "inputs_logged": settings.inputs,
        "columns": columns,
        "new_columns": new_columns,
        "rates": rates,
        "live": live,
        "test": test,
        "thresholds": {
            "psi_watch": thresholds.psi_watch, "psi_alert": thresholds.psi_alert,
            "psi_alert_by_column": thresholds.psi_alert_by_column,
            "min_rows": thresholds.min_rows,
            "min_reference_rows": thresholds.min_reference_rows,
            "live": thresholds.live, "rates": thresholds.rates,
        },
        "breaches": breaches,
    }  # fmt: skip
    return Result(figures, ref_frame, live_frame)


def _note(requests: int, reference_rows: int, thresholds: Thresholds) -> str | None:
    """Why some figures are shown but not judged (None when all are judged)."""
    if requests < thresholds.min_rows:
        return (f"{requests} logged requests, fewer than monitor.min_rows="
                f"{thresholds.min_rows}: figures shown, not judged")  # fmt: skip
    if reference_rows < thresholds.min_reference_rows:
        return (f"the training reference holds {reference_rows} inputs, fewer than "
                f"monitor.min_reference_rows={thresholds.min_reference_rows}: drift shown, "
                "not judged (train with a larger test split)")  # fmt: skip
    return None


def judged_live(labelled: list[Any], thresholds: Thresholds) -> bool:
    """Live metrics are judged once enough outcomes arrived (the same `min_rows`)."""
    return len(labelled) >= thresholds.min_rows


def shifted_columns(result: Result) -> list[str]:
    """The columns whose drift is a breach, most drifted first, then those whose rate is."""
    figures = [b["figure"] for b in result.breaches]
    drifted = [f.removeprefix("psi:") for f in figures if f.startswith("psi:")]
    drifted.sort(key=lambda n: -result.figures["columns"][n]["psi"])
    return drifted + [f.removeprefix("rate:") for f in figures if f.startswith("rate:")]


def _frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A monitor frame with unique string column names (a vertical's bug must not crash it)."""
    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    return frame.loc[:, ~frame.columns.duplicated()]


def _outside(
    figure: str, label: str, value: float, bounds: dict[str, float | None]
) -> list[dict[str, Any]]:
    """The breaches of `value` against `{min, max}` (none, one or, absurdly, both)."""
    low, high = bounds.get("min"), bounds.get("max")
    found = []
    if low is not None and value < low:
        found.append(_breach(figure, value, f">= {low:g}", f"{label} {value:.4g} < {low:g}"))
    if high is not None and value > high:
        found.append(_breach(figure, value, f"<= {high:g}", f"{label} {value:.4g} > {high:g}"))
    return found


def _breach(figure: str, value: float, expected: str, message: str) -> dict[str, Any]:
    return {"figure": figure, "value": float(value), "expected": expected, "message": message}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _plain(values: dict[str, Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in values.items() if isinstance(v, int | float)}


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat(timespec="seconds")


def save(result: Result, plog: PredictionLog, since: datetime | None) -> None:
    """Record the result in the log, where servers read their gauges."""
    f = result.figures
    plog.save_monitor(f["vertical"], f["model_version"], since, f["requests"], result.ok, f)


def report_dir(root: str | Path, vertical: str) -> Path:
    """A new folder for one monitor report: `<root>/<vertical>/<time>/`."""
    from verticals.core.runs import new_run_dir

    return new_run_dir(root, vertical)
