"""Loop-detector readings from the files traffic teams have, checked, as a time x sensor table.

- METR-LA / PEMS-BAY `.h5`: pandas' HDF5 table of speeds (rows: 5-minute timestamps,
  columns: sensor ids), read with h5py (no PyTables needed);
- a long CSV/Parquet table: one row per (timestamp, sensor, value).

Zeros are missing readings (the METR-LA convention); so are gaps in a long table.
Timestamps must be regular: one interval throughout, no duplicates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from verticals.core.errors import UserError


def read_h5(path: Path) -> pd.DataFrame:
    """pandas' fixed-format HDF5 frame (`df` key, as METR-LA ships) via h5py."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            key = "df" if "df" in fh else next(iter(fh.keys()))
            group = fh[key]
            sensors = [s.decode() if isinstance(s, bytes) else str(s) for s in group["axis0"][:]]
            axis = group["axis1"]
            kind = axis.attrs.get("kind", b"datetime64")
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            raw = axis[:]
            # pandas writes the index in its own unit (ns, or us with pandas 3): attrs say which
            unit = kind if kind.startswith("datetime64[") else "datetime64[ns]"
            stamps = pd.DatetimeIndex(
                raw.view(unit) if raw.dtype.kind in "iu" else pd.to_datetime(raw)
            )
            tz = axis.attrs.get("tz")
            if tz is not None:
                tz = tz.decode() if isinstance(tz, bytes) else str(tz)
                stamps = stamps.tz_localize("UTC").tz_convert(tz)
            if int(group.attrs.get("nblocks", 1)) != 1:
                raise KeyError("more than one value block: store the speeds as one float table")
            values = np.asarray(group["block0_values"][:], dtype=np.float32)
            if values.shape != (len(stamps), len(sensors)):
                raise KeyError(f"values {values.shape} do not match {len(stamps)} x {len(sensors)}")
    except (OSError, KeyError, StopIteration, ValueError, TypeError) as exc:
        raise UserError(
            f"{path} is not a METR-LA style HDF5 table (df/axis0, axis1, block0_values): {exc}"
        ) from None
    return pd.DataFrame(values, index=pd.DatetimeIndex(stamps, name="timestamp"), columns=sensors)


def read_long(path: Path, time_col: str, sensor_col: str, value_col: str) -> pd.DataFrame:
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    missing = [c for c in (time_col, sensor_col, value_col) if c not in table.columns]
    if missing:
        raise UserError(
            f"{path} has no column(s) {', '.join(missing)} "
            f"(columns: {', '.join(map(str, table.columns[:10]))}); "
            "set data.time_col / data.sensor_col / data.value_col"
        )
    try:
        stamps = pd.to_datetime(table[time_col])
    except ValueError as exc:
        if "utc=True" not in str(exc):  # offsets that change (daylight saving): go by UTC
            raise UserError(f"{path}: column {time_col} does not hold dates ({exc})") from None
        stamps = pd.to_datetime(table[time_col], utc=True)
    except TypeError as exc:
        raise UserError(f"{path}: column {time_col} does not hold dates ({exc})") from None
    if stamps.isna().any():
        row = int(np.flatnonzero(stamps.isna().to_numpy())[0])
        raise UserError(f"{path} row {row + 2}: {time_col} is empty")
    values = pd.to_numeric(table[value_col], errors="coerce")
    bad = values.isna() & table[value_col].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(
            f"{path} row {row + 2}: {value_col}={table[value_col].iloc[row]!r} is not a number"
        )
    long = pd.DataFrame({"t": stamps, "s": table[sensor_col].astype(str), "v": values})
    dup = long.duplicated(["t", "s"])
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise UserError(
            f"{path} row {row + 2}: sensor {long['s'].iloc[row]} has two readings at "
            f"{long['t'].iloc[row]}"
        )
    wide = long.pivot(index="t", columns="s", values="v")
    wide.index.name = "timestamp"
    return wide


def regular(frame: pd.DataFrame, where: Path) -> tuple[pd.DataFrame, int]:
    """`frame` on a regular time grid (gaps filled with 0 = missing) and its step in minutes."""
    index = frame.index
    if index.has_duplicates:
        raise UserError(f"{where}: timestamp {index[index.duplicated()][0]} appears twice")
    if not index.is_monotonic_increasing:
        frame = frame.sort_index()
        index = frame.index
    if len(index) < 3:
        raise UserError(f"{where}: {len(index)} timestamps; need a series, not a snapshot")
    seconds = np.diff(index.to_numpy().astype("datetime64[s]").astype(np.int64))
    step_s = int(pd.Series(seconds).mode().iloc[0])
    if step_s < 60 or step_s % 60:
        raise UserError(f"{where}: readings every {step_s} s; expected whole minutes apart")
    step = step_s // 60
    off = np.flatnonzero(seconds % step_s != 0)
    if off.size:
        i = int(off[0])
        raise UserError(
            f"{where}: irregular timestamps: {index[i]} -> {index[i + 1]} is not a multiple of "
            f"the {step}-minute interval"
        )
    grid = pd.date_range(index[0], index[-1], freq=f"{step}min", name="timestamp")
    return frame.reindex(grid).fillna(0.0).astype(np.float32), step


def load(
    path: str | Path,
    time_col: str = "timestamp",
    sensor_col: str = "sensor",
    value_col: str = "value",
) -> tuple[pd.DataFrame, int]:
    """(time x sensor speeds with 0 = missing, interval in minutes)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"data.path={path} does not exist")
    frame = (
        read_h5(path)
        if path.suffix in (".h5", ".hdf5")
        else read_long(path, time_col, sensor_col, value_col)
    )
    frame.columns = [str(c) for c in frame.columns]
    values = frame.to_numpy()
    if (values < 0).any() or np.isinf(values).any():
        raise UserError(f"{path}: negative or infinite readings; speeds are >= 0 (0 = missing)")
    tz = None
    if isinstance(frame.index, pd.DatetimeIndex) and frame.index.tz is not None:
        tz = str(frame.index.tz)
        frame.index = frame.index.tz_localize(None)
    frame, step = regular(frame, path)
    frame.attrs["tz"] = tz
    return frame, step
