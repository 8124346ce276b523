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

from shared.errors import UserError


def read_h5(path: Path) -> pd.DataFrame:
    """pandas' fixed-format HDF5 frame (`df` key, as METR-LA ships) via h5py."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            key = "df" if "df" in fh else next(iter(fh.keys()))
            group = fh[key]
            sensors = [s.decode() if isinstance(s, bytes) else str(s) for s in group["axis0"][:]]
            stamps = pd.to_datetime(group["axis1"][:])
            values = np.asarray(group["block0_values"][:], dtype=np.float32)
    except (OSError, KeyError, StopIteration) as exc:
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
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path}: column {time_col} does not hold dates ({exc})") from None
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
    steps = np.diff(index.to_numpy().astype("datetime64[s]").astype(np.int64)) // 60
    step = int(pd.Series(steps).mode().iloc[0])
    if step <= 0:
        raise UserError(f"{where}: timestamps closer than a minute apart")
    off = np.flatnonzero(steps % step != 0)
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
    if (frame.to_numpy() < 0).any():
        raise UserError(f"{path}: negative readings; speeds are >= 0 (0 = missing)")
    return regular(frame, path)
