"""Readings (long rows) -> windows -> forecasts per sensor and horizon, with alerts.

Two ways in, one set of checks and one way out: `forecast_rows` takes a table (batch files,
big requests), `forecast_records` takes a server's validated records (small requests,
several at once) straight to the speed arrays without building pandas objects, which cost
more than the network does on one window. Both turn each window's readings into arrays
(sensor columns, wall-clock seconds, speeds), check them in `_checked` and score every
window of the call in one `_score` (one network call), so they answer alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

import numpy as np
import pandas as pd

from verticals.core.errors import UserError
from verticals.traffic.model import TrafficModel
from verticals.traffic.schema import FIRST_YEAR, LAST_YEAR

COLUMNS = ["window", "sensor", "horizon_min", "timestamp", "speed", "alert"]
_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)
_NEEDED = {"sensor", "timestamp", "value"}
#: Wall-clock seconds of the first and past the last plausible moment (`schema.FIRST_YEAR`).
_FIRST = (datetime(FIRST_YEAR, 1, 1) - _EPOCH) // _SECOND
_PAST = (datetime(LAST_YEAR + 1, 1, 1) - _EPOCH) // _SECOND


@dataclass
class Window:
    """One window's checked readings, ready for the network."""

    name: str | None  # the `window` value; None when the input has no windows
    speeds: np.ndarray  # (input_steps, N) float32, 0 = missing
    times: np.ndarray  # (input_steps,) int64 wall-clock seconds since 1970, one step apart


def _where(name: str) -> str:
    return f"window {name}" if name else "the window"


def _require_columns(columns: Iterable[str]) -> None:
    present = set(columns)
    missing = [c for c in ("sensor", "timestamp") if c not in present]
    if missing:
        raise UserError(f"input: no column(s) {', '.join(missing)}; need sensor, timestamp, value")
    if "value" not in present:
        raise UserError("input: no column value (the speed; null or 0 = missing)")


def _mixed_windows(unnamed: int) -> UserError:
    """Readings without a window next to readings with one: refused, not dropped or merged."""
    return UserError(
        f"input: {unnamed} reading(s) have no window while others have one; "
        "give every reading a window, or none"
    )


def _columns_of(model: TrafficModel, sensors: list[Any], where: str) -> np.ndarray:
    """Each reading's column in the speed array; unknown sensors are named."""
    known = model.columns
    cols = np.fromiter((known.get(s, -1) for s in sensors), np.intp, len(sensors))
    if (cols < 0).any():
        unknown = sorted({str(s) for s, c in zip(sensors, cols.tolist(), strict=True) if c < 0})
        shown = ", ".join(unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        raise UserError(f"{where}: unknown sensor(s) {shown}; the model knows {len(known)} sensors")
    return cols


def _wall_clock(value: object, tz: str | None, where: str) -> int:
    """A reading's time as the training data's wall-clock time, in whole seconds since 1970
    (floored): an aware timestamp is converted to the training zone (or, for naive training
    data, keeps its own wall-clock). The one place a timestamp's value is judged."""
    try:
        stamp = pd.Timestamp(value)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise UserError(f"{where}: timestamp {value!r} is not a date and time") from None
    if pd.isna(stamp):
        raise UserError(f"{where}: a reading has no timestamp")
    if stamp.tzinfo is not None:
        stamp = (stamp.tz_convert(tz) if tz else stamp).tz_localize(None)
    return int(stamp.as_unit("s").asm8.astype(np.int64))


def _seconds(value: object, zone: tzinfo | None, tz: str | None, where: str) -> int:
    """`_wall_clock` of a validated record's timestamp (a `datetime`) in plain Python;
    anything else goes through `_wall_clock` itself."""
    if type(value) is datetime:
        if value.tzinfo is not None:
            value = (value.astimezone(zone) if zone is not None else value).replace(tzinfo=None)
        return (value - _EPOCH) // _SECOND
    return _wall_clock(value, tz, where)


def _table_seconds(column: pd.Series, tz: str | None, where: str) -> np.ndarray:
    """`_wall_clock` of a whole column at once where pandas parses it alike (datetimes, ISO
    8601 text in one offset); anything else (gaps, other formats, mixed offsets) value by
    value, so the first bad reading is named as before."""
    parsed: pd.Series | None = None
    if isinstance(column.dtype, pd.DatetimeTZDtype) or column.dtype.kind == "M":
        parsed = column
    elif column.dtype == object or isinstance(column.dtype, pd.StringDtype):
        try:
            parsed = pd.to_datetime(column, format="ISO8601")
        except (ValueError, TypeError, OverflowError):
            parsed = None
    if parsed is None or parsed.isna().any():
        return np.array([_wall_clock(v, tz, where) for v in column], np.int64)
    if parsed.dt.tz is not None:
        parsed = (parsed.dt.tz_convert(tz) if tz else parsed).dt.tz_localize(None)
    return parsed.to_numpy().astype("datetime64[s]").astype(np.int64)


def _checked(
    model: TrafficModel,
    name: str | None,
    cols: np.ndarray,
    secs: np.ndarray,
    values: np.ndarray,
    bad_value: bool,
) -> Window:
    """The window's checks after sensors and timestamps are read (same order, same words
    for both ways in): one reading per sensor and step, `input_steps` steps one step apart,
    speeds numbers >= 0 and finite (NaN = missing)."""
    where = _where(name or "")
    times, step_of = np.unique(secs, return_inverse=True)
    n = len(model.sensors)
    if len(np.unique(step_of * n + cols)) < len(cols):
        raise UserError(f"{where}: a sensor has two readings at the same time")
    expected = model.input_steps
    if len(times) != expected:
        raise UserError(
            f"{where} has {len(times)} timestamps; expected the latest {expected} readings "
            f"({model.step_min}-minute steps)"
        )
    _check_years(model, times, where)
    gaps = np.diff(times) // 60
    if (gaps != model.step_min).any():
        i = int(np.flatnonzero(gaps != model.step_min)[0])
        first, then = (pd.Timestamp(np.datetime64(int(t), "s")) for t in times[i : i + 2])
        raise UserError(f"{where}: {first} -> {then} is not one {model.step_min}-minute step")
    if bad_value:
        raise UserError(f"{where}: a value is not a number; send null for a missing reading")
    with np.errstate(over="ignore"):  # beyond float32: infinite, refused just below
        speeds32 = np.where(np.isnan(values), 0.0, values).astype(np.float32)
    if (speeds32 < 0).any() or not np.isfinite(speeds32).all():
        raise UserError(
            f"{where}: negative or infinite speeds; send null or 0 for a missing reading"
        )
    speeds = np.zeros((expected, n), np.float32)
    speeds[step_of, cols] = speeds32
    return Window(name, speeds, times.astype(np.int64))


def _check_years(model: TrafficModel, times: np.ndarray, where: str) -> None:
    """Readings, and the forecasts after them, within `schema`'s years: never a date that
    overflows the calendar and wraps around."""
    ahead = model.output_steps * model.step_min * 60
    if times[0] < _FIRST or times[-1] + ahead >= _PAST:
        raise UserError(
            f"{where}: timestamps and their forecasts must lie between the years "
            f"{FIRST_YEAR} and {LAST_YEAR}"
        )


def _table_window(model: TrafficModel, rows: pd.DataFrame, name: str | None) -> Window:
    where = _where(name or "")
    cols = _columns_of(model, rows["sensor"].astype(str).tolist(), where)
    secs = _table_seconds(rows["timestamp"], model.tz, where)
    raw = pd.to_numeric(rows["value"], errors="coerce")
    bad = bool((raw.isna() & rows["value"].notna()).any())
    values = raw.to_numpy(np.float64, na_value=np.nan)
    return _checked(model, name, cols, secs, values, bad)


def _record_window(model: TrafficModel, records: list[dict[str, Any]], name: str | None) -> Window:
    where = _where(name or "")
    sensors = [s if type(s) is str else str(s) for s in (r.get("sensor") for r in records)]
    cols = _columns_of(model, sensors, where)
    zone, tz = model.zone, model.tz
    secs = np.array([_seconds(r.get("timestamp"), zone, tz, where) for r in records], np.int64)
    raw = [r.get("value") for r in records]
    try:
        values, bad = np.array(raw, np.float64), False
    except (TypeError, ValueError):  # text that is not a number: named after the time checks
        values, bad = np.array([_number(v) for v in raw], np.float64), True
    return _checked(model, name, cols, secs, values, bad)


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def _score(model: TrafficModel, windows: list[Window]) -> list[list[tuple[Any, ...]]]:
    """Output rows (in `COLUMNS` order) per window, from one network call for them all."""
    if not windows:
        return []
    speeds = np.stack([w.speeds for w in windows])
    minute_of_day = (np.stack([w.times for w in windows]) // 60) % (24 * 60)
    pred = model.forecast(model.features_at(speeds, minute_of_day))  # (W, output_steps, N)
    limit = float(model.alerts["congestion_speed"])
    horizons = [int(h) for h in model.alerts["horizons"] if int(h) <= model.output_steps]
    out = []
    for w, window in enumerate(windows):
        last, rows = pd.Timestamp(np.datetime64(int(window.times[-1]), "s")), []
        for h in horizons:
            ahead = h * model.step_min
            when = last + pd.Timedelta(minutes=ahead)  # the unit pandas gives, as before
            for sensor, speed in zip(model.sensors, pred[w, h - 1].tolist(), strict=True):
                rows.append((window.name, sensor, ahead, when, round(speed, 2), speed < limit))
        out.append(rows)
    return out


def forecast_rows(model: TrafficModel, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per window, sensor and reported horizon."""
    _require_columns(frame.columns)
    windows = []
    named = "window" in frame.columns and frame["window"].notna().any()
    if named:
        unnamed = int(frame["window"].isna().sum())
        if unnamed:
            raise _mixed_windows(unnamed)
        for name, rows in frame.groupby(frame["window"].astype(str), sort=False):
            windows.append(_table_window(model, rows, str(name)))
    else:
        windows.append(_table_window(model, frame, None))
    rows = [row for block in _score(model, windows) for row in block]
    return pd.DataFrame(rows, columns=COLUMNS)


def forecast_records(
    model: TrafficModel, requests: list[list[dict[str, Any]]]
) -> list[list[dict[str, Any]]]:
    """Each request's answer as `records_of(forecast_rows(...))` gives it, with every window
    of every request scored in one network call (a server's micro-batch)."""
    windows: list[Window] = []
    counts = []
    for records in requests:
        found = _record_windows(model, records)
        windows.extend(found)
        counts.append(len(found))
    blocks = iter(_score(model, windows))
    answers = []
    for count in counts:
        rows = [row for _ in range(count) for row in next(blocks)]
        answers.append([dict(zip(COLUMNS, row, strict=True)) for row in rows])
    return answers


def _record_windows(model: TrafficModel, records: list[dict[str, Any]]) -> list[Window]:
    """A request's windows in order of first reading, as `forecast_rows` groups them."""
    if not records or not records[0].keys() >= _NEEDED:
        _require_columns(set().union(*records))
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for r in records:
        name = r.get("window")
        groups.setdefault(None if name is None else str(name), []).append(r)
    if None in groups and len(groups) > 1:
        raise _mixed_windows(len(groups[None]))
    return [_record_window(model, rows, name) for name, rows in groups.items()]
