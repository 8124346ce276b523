"""After the API: the speeds the sensors really read over the forecast horizon, the table
the drift monitor watches (speeds per sensor, missing readings, forecasts, alerts) and
the test metrics' masked errors by horizon against those speeds."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from verticals.core.contract import Logged
from verticals.traffic.metrics import masked
from verticals.traffic.model import TrafficModel
from verticals.traffic.predict import _wall_clock


class Observed(BaseModel):
    """One sensor's speed at one time the model forecast."""

    model_config = ConfigDict(extra="forbid")

    sensor: str = Field(min_length=1, description="sensor id, as in the training data")
    timestamp: datetime = Field(description="as the forecast's timestamp (training wall clock)")
    speed: float = Field(ge=0, allow_inf_nan=False, description="0 = missing, not scored")


class Outcome(BaseModel):
    """The speeds measured at (some of) the forecast's sensors and times."""

    model_config = ConfigDict(extra="forbid")

    observed: list[Observed] = Field(min_length=1)

    @field_validator("observed", mode="after")
    @classmethod
    def _one_speed_each(cls, observed: list[Observed]) -> list[Observed]:
        """Two speeds for one sensor and time cannot both be the truth."""
        seen: set[tuple[str, datetime]] = set()
        for obs in observed:
            key = (obs.sensor, obs.timestamp)
            if key in seen:
                raise ValueError(f"two speeds for sensor {obs.sensor} at {obs.timestamp}")
            seen.add(key)
        return observed


def outcome_schema(model: TrafficModel) -> type[BaseModel]:
    return Outcome


def _hashed(entries: list[Logged]) -> bool:
    """Whether logged inputs are hashes (`log.inputs=hashed`): a validated reading's value
    is a number or null, never text. The reference is read as the log is, so one answer
    holds for every entry of a call."""
    return any(
        isinstance(record.get("value"), str)
        for entry in entries
        if isinstance(entry.inputs, list)
        for record in entry.inputs
    )


def _speed(value: Any) -> float:
    """A reading's speed, NaN when missing (null or 0, the METR-LA convention)."""
    if value is None:
        return float("nan")
    speed = float(value)
    return speed if speed > 0 else float("nan")


def monitor_frame(model: TrafficModel, entries: list[Logged]) -> pd.DataFrame:
    """One row per reading (`speed`, NaN when missing; `missing`; `sensor`; and the speed
    again in its sensor's column `speed.<sensor>`, so a drift at one sensor is named by
    its column) and one row per forecast (`forecast_speed`, `alert`). A window's readings
    and its forecasts are not one-to-one, so each row holds one or the other.

    Entries logged without inputs give forecast rows only. Hashed readings keep `sensor`
    (a hash still makes a mix) and `missing` (null stays null; a 0 sent as a missing
    reading is then not recognised), not the speeds."""
    hashed = _hashed(entries)
    sensors: list[Any] = []
    speeds: list[float] = []
    gaps: list[bool] = []
    forecasts: list[float] = []
    alerts: list[Any] = []
    for entry in entries:
        for record in entry.inputs if isinstance(entry.inputs, list) else []:
            sensor, value = record.get("sensor"), record.get("value")
            sensors.append(None if sensor is None else str(sensor))
            if hashed:
                gaps.append(value is None)
            else:
                speeds.append(_speed(value))
                gaps.append(bool(np.isnan(speeds[-1])))
        for row in entry.outputs or []:
            value = row.get("speed")
            forecasts.append(float("nan") if value is None else float(value))
            alerts.append(row.get("alert"))
    n_read, n_out = len(gaps), len(forecasts)
    columns: dict[str, Any] = {}
    if n_read:
        pad = np.full(n_out, np.nan)
        if not hashed:
            columns["speed"] = np.concatenate([np.array(speeds, float), pad])
        columns["missing"] = pd.array(gaps + [None] * n_out, "boolean")
        columns["sensor"] = sensors + [None] * n_out
        if not hashed:
            cols = np.array([model.columns.get(s, -1) for s in sensors], np.intp)
            block = np.full((n_read + n_out, len(model.sensors)), np.nan)
            rows = np.flatnonzero(cols >= 0)
            block[rows, cols[rows]] = columns["speed"][rows]
            columns.update({f"speed.{s}": block[:, j] for j, s in enumerate(model.sensors)})
    columns["forecast_speed"] = np.concatenate([np.full(n_read, np.nan), np.array(forecasts)])
    columns["alert"] = pd.array([None] * n_read + alerts, "boolean")
    return pd.DataFrame(columns)


def live_metrics(model: TrafficModel, entries: list[Logged]) -> dict[str, float]:
    """Masked MAE, RMSE and MAPE by horizon (`mae_60min`, as the test metrics) of every
    forecast whose sensor and time has an observed speed; a zero speed is missing and not
    scored, as in the test metrics. `matched`: the forecasts scored."""
    seconds: dict[Any, int] = {}  # timestamps repeat (a window's forecasts share three)

    def when(value: Any) -> int:
        if value not in seconds:
            seconds[value] = _wall_clock(value, model.tz, "feedback")
        return seconds[value]

    pred: dict[int, list[float]] = defaultdict(list)
    true: dict[int, list[float]] = defaultdict(list)
    for entry in entries:
        if not entry.outcome or not entry.outputs:
            continue
        observed = {
            (str(o["sensor"]), when(o["timestamp"])): float(o["speed"])
            for o in entry.outcome["observed"]
        }
        for row in entry.outputs:
            speed = observed.get((str(row["sensor"]), when(row["timestamp"])))
            if speed is None or speed <= 0 or row.get("speed") is None:
                continue
            pred[int(row["horizon_min"])].append(float(row["speed"]))
            true[int(row["horizon_min"])].append(speed)
    metrics: dict[str, float] = {}
    for minutes in sorted(pred):
        errors = masked(np.array(pred[minutes]), np.array(true[minutes]))
        metrics.update({f"{key}_{minutes}min": value for key, value in errors.items()})
    metrics["matched"] = float(sum(len(v) for v in pred.values()))
    return metrics
