"""Readings (long rows) -> windows -> forecasts per sensor and horizon, with alerts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from verticals.core.errors import UserError
from verticals.traffic.model import TrafficModel


def _window(
    model: TrafficModel, rows: pd.DataFrame, name: str
) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """(input_steps, N) speeds (0 = missing) and their timestamps, checked."""
    where = f"window {name}" if name else "the window"
    index = {s: i for i, s in enumerate(model.sensors)}
    sensors = rows["sensor"].astype(str)
    unknown = sorted(set(sensors) - set(index))
    if unknown:
        shown = ", ".join(unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        raise UserError(f"{where}: unknown sensor(s) {shown}; the model knows {len(index)} sensors")
    stamps = pd.Series(
        [_wall_clock(v, model.tz, where) for v in rows["timestamp"]], index=rows.index
    )
    if pd.DataFrame({"t": stamps, "s": sensors}).duplicated().any():
        raise UserError(f"{where}: a sensor has two readings at the same time")
    times = pd.DatetimeIndex(sorted(stamps.unique()))
    expected = model.input_steps
    if len(times) != expected:
        raise UserError(
            f"{where} has {len(times)} timestamps; expected the latest {expected} readings "
            f"({model.step_min}-minute steps)"
        )
    gaps = np.diff(times.to_numpy().astype("datetime64[s]").astype(np.int64)) // 60
    if (gaps != model.step_min).any():
        i = int(np.flatnonzero(gaps != model.step_min)[0])
        raise UserError(
            f"{where}: {times[i]} -> {times[i + 1]} is not one {model.step_min}-minute step"
        )
    raw = pd.to_numeric(rows["value"], errors="coerce")
    if (raw.isna() & rows["value"].notna()).any():
        raise UserError(f"{where}: a value is not a number; send null for a missing reading")
    values = raw.fillna(0.0).to_numpy(np.float32)
    if (values < 0).any() or not np.isfinite(values).all():
        raise UserError(
            f"{where}: negative or infinite speeds; send null or 0 for a missing reading"
        )
    speeds = np.zeros((expected, len(index)), np.float32)
    speeds[times.get_indexer(stamps), sensors.map(index).to_numpy()] = values
    return speeds, times


def _wall_clock(value: object, tz: str | None, where: str) -> pd.Timestamp:
    """A reading's time as the training data's wall-clock time: an aware timestamp is
    converted to the training zone (or, for naive training data, keeps its own wall-clock)."""
    try:
        stamp = pd.Timestamp(value)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise UserError(f"{where}: timestamp {value!r} is not a date and time") from None
    if pd.isna(stamp):
        raise UserError(f"{where}: a reading has no timestamp")
    if stamp.tzinfo is not None:
        stamp = (stamp.tz_convert(tz) if tz else stamp).tz_localize(None)
    return stamp.as_unit("s")


def forecast_rows(model: TrafficModel, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per window, sensor and reported horizon."""
    missing = [c for c in ("sensor", "timestamp") if c not in frame.columns]
    if missing:
        raise UserError(f"input: no column(s) {', '.join(missing)}; need sensor, timestamp, value")
    if "value" not in frame.columns:
        raise UserError("input: no column value (the speed; null or 0 = missing)")
    has_window = "window" in frame.columns and frame["window"].notna().any()
    groups = frame.groupby(frame["window"].astype(str), sort=False) if has_window else [("", frame)]
    names, windows, stamps = [], [], []
    for name, rows in groups:
        speeds, times = _window(model, rows, str(name))
        names.append(str(name) if has_window else None)
        windows.append(model.features(speeds, times))
        stamps.append(times[-1])
    pred = model.forecast(np.stack(windows))  # (W, output_steps, N)
    limit = float(model.alerts["congestion_speed"])
    horizons = [int(h) for h in model.alerts["horizons"] if int(h) <= model.output_steps]
    out = []
    for w, (name, last) in enumerate(zip(names, stamps, strict=True)):
        for h in horizons:
            when = last + pd.Timedelta(minutes=h * model.step_min)
            for s, sensor in enumerate(model.sensors):
                speed = float(pred[w, h - 1, s])
                out.append((name, sensor, h * model.step_min, when, round(speed, 2), speed < limit))
    return pd.DataFrame(
        out, columns=["window", "sensor", "horizon_min", "timestamp", "speed", "alert"]
    )
