"""Where the sensors are, for the console's map: the files traffic teams already have.

DCRNN's `graph_sensor_locations.csv` (METR-LA, PEMS-BAY: `sensor_id, latitude, longitude`),
or any CSV with a sensor id column and `longitude`/`latitude` or `x`/`y` columns (the
synthetic network's `positions.csv` gives miles). Optional: without it, the console lays
the road graph out by itself.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from verticals.core.errors import UserError

_IDS = ("sensor_id", "sensor", "id", "station")
_AXES = (("longitude", "latitude"), ("lon", "lat"), ("x_miles", "y_miles"), ("x", "y"))


def read_positions(path: Path, sensors: list[str]) -> dict[str, list[float]]:
    """Sensor id -> [x, y] for the `sensors` the file names (others are left out)."""
    if not path.is_file():
        raise UserError(f"data.locations={path} does not exist")
    try:
        table = pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise UserError(f"data.locations={path} is not a readable CSV file: {exc}") from None
    columns = {str(c).strip().lower(): c for c in table.columns}
    ident = next((columns[c] for c in _IDS if c in columns), None)
    if ident is None and str(table.columns[0]).startswith("Unnamed"):
        ident = table.columns[0]  # the id as a nameless first column (a written index)
    axes = next(((columns[x], columns[y]) for x, y in _AXES if x in columns and y in columns),
                None)  # fmt: skip
    if ident is None or axes is None:
        raise UserError(
            f"data.locations={path}: expected a sensor id column ({', '.join(_IDS)}) and "
            f"longitude/latitude or x/y columns; it has {', '.join(map(str, table.columns))}"
        )
    table = table.dropna(subset=list(axes))
    ids = table[ident].astype(str).str.removesuffix(".0")  # ids read as floats: 773869.0
    known = set(sensors)
    return {
        sensor: [float(x), float(y)]
        for sensor, x, y in zip(ids, table[axes[0]], table[axes[1]], strict=True)
        if sensor in known
    }
