"""What a traffic operator sees of a forecast on the console: the sensor graph as a
network, each sensor coloured by its forecast speed at a chosen horizon and the alerts
ringed in red; and one sensor's recent readings with its forecast as a line chart."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import numpy as np
from matplotlib.figure import Figure as MplFigure

from verticals.core.views import Answer, Choice, Figure, Headline, Note, Slider, Table, View
from verticals.traffic.model import TrafficModel

CONTROLS = (
    Slider("horizon", "horizon (index of the forecast step)", 0, 1, 0),
    Choice("sensor", "sensor", [], None),
)
_LAYOUTS: dict[int, np.ndarray] = {}  # id(weights) -> positions, computed once per model


def view(model: TrafficModel, answer: Answer, controls: dict[str, Any]) -> View:
    forecasts = answer.body.get("predictions") or []
    if not forecasts:
        return View([Note("The answer holds no forecast.")])
    minutes = sorted({int(f["horizon_min"]) for f in forecasts})
    step = controls.get("horizon")
    step = int(step) if step is not None and 0 <= int(step) < len(minutes) else len(minutes) - 1
    horizon = minutes[step]
    at = {f["sensor"]: f for f in forecasts if int(f["horizon_min"]) == horizon}
    alerts = sorted((f for f in at.values() if f["alert"]), key=lambda f: f["speed"])
    sensors = sorted({f["sensor"] for f in forecasts}, key=model.columns.get)
    sensor = controls.get("sensor")
    if sensor not in at:  # a new answer: the slowest sensor, where congestion is coming
        sensor = min(at.values(), key=lambda f: f["speed"])["sensor"]
    tone = "bad" if alerts else "good"
    panels: list[Any] = [
        Headline(f"{len(alerts)} congestion alerts in {horizon} min ({len(at)} sensors)", tone),
        Figure(_network(model, at), f"forecast speed in {horizon} min (red rings: alerts)"),
        Figure(_series(answer, forecasts, sensor), f"sensor {sensor}: readings and forecast"),
    ]
    if alerts:
        shown = [{"sensor": f["sensor"], "speed": round(f["speed"], 1),
                  "at": f["timestamp"]} for f in alerts]  # fmt: skip
        panels.append(Table(shown, f"alerts in {horizon} min (below {_limit(model)})"))
    updates = {
        "horizon": {"maximum": len(minutes) - 1, "value": step,
                    "label": f"horizon: {horizon} min ahead (steps: {minutes})"},
        "sensor": {"choices": sensors, "value": sensor},
    }  # fmt: skip
    return View(panels, updates)


def _limit(model: TrafficModel) -> str:
    return f"{model.alerts.get('congestion_speed', '?')}"


def layout(model: TrafficModel) -> np.ndarray:
    """2-D positions of the sensors from the graph alone (classical MDS of the shortest
    paths, edges weighted by closeness): neighbours near each other, once per model."""
    key = id(model.weights)
    if key not in _LAYOUTS:
        from scipy.sparse.csgraph import shortest_path

        weights = np.asarray(model.weights, dtype=float)
        linked = np.maximum(weights, weights.T)
        cost = np.where(linked > 0, 1.0 / np.maximum(linked, 1e-6), 0.0)
        distance = shortest_path(cost, directed=False)
        finite = np.isfinite(distance)
        distance[~finite] = distance[finite].max() * 1.5 if finite.any() else 1.0
        n = len(distance)
        centred = np.eye(n) - 1.0 / n
        gram = -0.5 * centred @ (distance**2) @ centred
        values, vectors = np.linalg.eigh(gram)
        top = np.argsort(values)[::-1][:2]
        _LAYOUTS[key] = vectors[:, top] * np.sqrt(np.maximum(values[top], 0))
    return _LAYOUTS[key]


def positions(model: TrafficModel) -> tuple[np.ndarray, str]:
    """(N, 2) positions of the sensors and where they come from: the data's locations when
    they cover every sensor, else a layout of the road graph."""
    given = model.positions or {}
    if given and all(s in given for s in model.sensors):
        return np.array([given[s] for s in model.sensors], dtype=float), "the sensors' locations"
    return layout(model), "a layout of the road graph (data.locations gives real ones)"


def _network(model: TrafficModel, at: dict[str, dict[str, Any]]) -> MplFigure:
    xy, source = positions(model)
    figure = MplFigure(figsize=(7, 5.5), layout="constrained")
    axes = figure.subplots()
    rows, cols = np.nonzero(np.triu(np.maximum(model.weights, model.weights.T), k=1))
    for i, j in zip(rows, cols, strict=True):
        axes.plot(xy[[i, j], 0], xy[[i, j], 1], color="#cccccc", linewidth=0.6, zorder=1)
    index = [model.columns[s] for s in at]
    speeds = np.array([at[s]["speed"] for s in at])
    # a fixed scale, the alert speed in its middle: red is slow, whatever the others do
    top = max(float(speeds.max()), 2 * float(model.alerts.get("congestion_speed", 40.0)))
    dots = axes.scatter(xy[index, 0], xy[index, 1], c=speeds, cmap="RdYlGn", s=40, zorder=2,
                        edgecolors="none", vmin=0, vmax=top)  # fmt: skip
    alert = [model.columns[s] for s, f in at.items() if f["alert"]]
    axes.scatter(xy[alert, 0], xy[alert, 1], s=140, facecolors="none", edgecolors="#d00000",
                 linewidths=1.8, zorder=3)  # fmt: skip
    figure.colorbar(dots, ax=axes, label="forecast speed")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(f"positions: {source}", fontsize=8)
    axes.set_aspect("equal", adjustable="datalim")
    return figure


def _series(answer: Answer, forecasts: list[dict[str, Any]], sensor: str) -> MplFigure:
    readings: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for record in answer.records or []:
        if record.get("value"):
            readings[str(record["sensor"])].append((_time(record["timestamp"]), record["value"]))
    ahead = sorted((_time(f["timestamp"]), f["speed"]) for f in forecasts if f["sensor"] == sensor)
    figure = MplFigure(figsize=(7, 3.2), layout="constrained")
    axes = figure.subplots()
    past = sorted(readings.get(sensor, []))
    if past:
        axes.plot(*zip(*past, strict=True), marker=".", label="readings")
    axes.plot(*zip(*ahead, strict=True), marker="o", linestyle="--", label="forecast")
    axes.set_ylabel("speed")
    axes.legend(loc="lower left")
    figure.autofmt_xdate()
    return figure


def _time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
