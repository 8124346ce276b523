"""Road-sensor graphs: adjacency matrices from the files traffic teams already have.

- DCRNN's `adj_mx.pkl` (METR-LA, PEMS-BAY): a pickle of [sensor_ids, id_to_index, W];
- a square matrix as `.npy` or `.csv` (with sensor ids as header and index);
- a sensor-distance table (`from, to, cost` CSV/Parquet) turned into weights with DCRNN's
  Gaussian kernel, W_ij = exp(-(d_ij / sigma)^2), sigma the std of the distances, and
  weights under `threshold` dropped.

Edges are directed: W[i, j] > 0 means traffic flows from sensor i to sensor j.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from verticals.core.errors import UserError


@dataclass
class SensorGraph:
    sensors: list[str]
    weights: np.ndarray  # (N, N) float32, W[i, j]: i -> j

    def __post_init__(self) -> None:
        n = len(self.sensors)
        if self.weights.shape != (n, n):
            raise UserError(
                f"adjacency is {self.weights.shape}; expected ({n}, {n}) for {n} sensors"
            )

    def reorder(self, sensors: list[str]) -> SensorGraph:
        """The graph with its rows and columns in the order of `sensors` (the data's)."""
        index = {s: i for i, s in enumerate(self.sensors)}
        missing = [s for s in sensors if s not in index]
        if missing:
            shown = ", ".join(missing[:5]) + (
                f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            )
            raise UserError(f"sensors {shown} of the data are not in the adjacency")
        order = [index[s] for s in sensors]
        return SensorGraph(list(sensors), self.weights[np.ix_(order, order)])


def gaussian_kernel(
    distances: np.ndarray, threshold: float = 0.1, sigma: float | None = None
) -> np.ndarray:
    """DCRNN's weights from a distance matrix (inf = no road between the two sensors);
    sigma defaults to the std of the finite distances, as DCRNN's gen_adj_mx."""
    if sigma is None:
        finite = distances[np.isfinite(distances)]
        sigma = float(finite.std()) if finite.size else 1.0
    weights = np.exp(-np.square(distances / max(sigma, 1e-9)))
    weights[~np.isfinite(distances)] = 0.0
    weights[weights < threshold] = 0.0
    return weights.astype(np.float32)


def _square(matrix: np.ndarray, where: Path) -> np.ndarray:
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise UserError(f"{where}: adjacency is {matrix.shape}; it must be a square matrix")
    if not np.isfinite(matrix).all() or (matrix < 0).any():
        raise UserError(f"{where}: adjacency weights must be finite and non-negative")
    return matrix.astype(np.float32)


def read_pickle(path: Path) -> SensorGraph:
    try:
        with path.open("rb") as fh:
            sensor_ids, _, weights = pickle.load(fh, encoding="latin1")
    except (
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        EOFError,
        AttributeError,
        ImportError,
    ) as exc:
        raise UserError(
            f"{path} is not DCRNN's adj_mx.pkl ([sensor_ids, id_to_index, W]): {exc}"
        ) from None
    return SensorGraph([str(s) for s in sensor_ids], _square(np.asarray(weights), path))


def read_distances(path: Path, sensors: list[str] | None, threshold: float) -> SensorGraph:
    """A `from, to, cost` table (DCRNN's distances_la_2012.csv layout) as kernel weights."""
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    return read_distances_frame(table, sensors, threshold, str(path))


def read_distances_frame(
    table: pd.DataFrame, sensors: list[str] | None, threshold: float, where: str = "distances"
) -> SensorGraph:
    columns = [str(c).lower() for c in table.columns]
    if not {"from", "to"} <= set(columns) or not ({"cost", "distance"} & set(columns)):
        raise UserError(f"{where}: a distance table needs columns from, to and cost (or distance)")
    table = table.set_axis(columns, axis=1)
    cost = "cost" if "cost" in columns else "distance"
    origin, target = table["from"].astype(str), table["to"].astype(str)
    ids = list(sensors) if sensors else sorted(set(origin) | set(target))
    index = {s: i for i, s in enumerate(ids)}
    absent = [s for s in ids if s not in set(origin) | set(target)]
    if absent:
        shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
        raise UserError(f"{where}: sensors {shown} of the data appear in no row of the table")
    known = origin.isin(index) & target.isin(index)
    distances = np.full((len(ids), len(ids)), np.inf)
    np.fill_diagonal(distances, 0.0)
    listed = pd.to_numeric(table.loc[known, cost], errors="coerce")
    if listed.empty:
        raise UserError(f"{where}: no distance connects two sensors of the data")
    if listed.isna().any() or (listed < 0).any() or not np.isfinite(listed).all():
        raise UserError(f"{where}: distances in column {cost} must be finite, non-negative numbers")
    distances[origin[known].map(index), target[known].map(index)] = listed
    return SensorGraph(ids, gaussian_kernel(distances, threshold, float(listed.std(ddof=0)) or 1.0))


def read_matrix(path: Path, sensors: list[str] | None = None) -> SensorGraph:
    """A `.npy` matrix (rows in the data's sensor order) or a `.csv` one with sensor ids as
    header and first column."""
    if path.suffix == ".npy":
        try:
            matrix = _square(np.load(path, allow_pickle=False), path)
        except ValueError as exc:
            raise UserError(f"{path} is not a numeric .npy matrix: {exc}") from None
        ids = list(sensors) if sensors and len(sensors) == len(matrix) else None
        if ids is None:
            raise UserError(
                f"{path}: a .npy matrix has no sensor ids, so it must be {len(sensors or [])} x "
                f"{len(sensors or [])} in the data's sensor order; it is {matrix.shape}"
            )
        return SensorGraph(ids, matrix)
    frame = pd.read_csv(path, index_col=0)
    frame.index, frame.columns = frame.index.astype(str), frame.columns.astype(str)
    if list(frame.index) != list(frame.columns):
        raise UserError(
            f"{path}: a matrix CSV needs the sensor ids as its header and first column, in the "
            "same order (a square matrix)"
        )
    try:
        values = frame.to_numpy(dtype=float)
    except ValueError:
        raise UserError(f"{path}: the matrix holds values that are not numbers") from None
    return SensorGraph(list(frame.index), _square(values, path))


def load(path: str | Path, sensors: list[str] | None = None, threshold: float = 0.1) -> SensorGraph:
    """The graph in `path`, its rows and columns in the order of `sensors` when given."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"data.adjacency={path} does not exist")
    if path.suffix in (".pkl", ".pickle"):
        graph = read_pickle(path)
    elif path.suffix == ".npy":
        graph = read_matrix(path)
    else:
        head = pd.read_csv(path, nrows=2) if path.suffix != ".parquet" else pd.read_parquet(path)
        lowered = {str(c).lower() for c in head.columns}
        graph = (
            read_distances(path, sensors, threshold)
            if {"from", "to"} <= lowered
            else read_matrix(path)
        )
    return graph.reorder(sensors) if sensors else graph
