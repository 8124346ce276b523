"""Readings + road graph -> chronological train/val/test windows for forecasting."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from verticals.core.cache import build_once, key
from verticals.core.config import require_int
from verticals.core.contract import Splits
from verticals.core.errors import UserError
from verticals.traffic import graph, sensors, synthetic
from verticals.traffic.locations import read_positions


@dataclass
class Network:
    """Everything about the sensor network a model needs, split-independent."""

    speeds: np.ndarray  # (T, N) float32, 0 = missing
    times: pd.DatetimeIndex
    sensors: list[str]
    weights: np.ndarray  # (N, N) road graph, i -> j
    step_min: int
    mean: float = 0.0  # of non-missing training readings
    std: float = 1.0
    extra: dict = field(default_factory=dict)

    def features(self) -> np.ndarray:
        """(T, N, 3): scaled speed (0 where missing), time of day in [0, 1), missing flag."""
        present = self.speeds > 0
        scaled = np.where(present, (self.speeds - self.mean) / self.std, 0.0)
        minutes = np.asarray(self.times.hour * 60 + self.times.minute) / (24 * 60)
        tod = np.broadcast_to(minutes[:, None], self.speeds.shape)
        return np.stack([scaled, tod, (~present).astype(np.float32)], axis=-1).astype(np.float32)


@dataclass
class Windows:
    """One split: window start indices into the network's series."""

    net: Network
    starts: np.ndarray
    input_steps: int
    output_steps: int

    def __len__(self) -> int:
        return len(self.starts)

    def targets(self) -> np.ndarray:
        """(W, output_steps, N) true speeds (0 = missing)."""
        offsets = self.starts[:, None] + self.input_steps + np.arange(self.output_steps)
        return self.net.speeds[offsets]

    def inputs(self, features: np.ndarray | None = None) -> np.ndarray:
        """(W, input_steps, N, F) model inputs."""
        features = self.net.features() if features is None else features
        offsets = self.starts[:, None] + np.arange(self.input_steps)
        return features[offsets]


def synthetic_files(cfg: DictConfig) -> tuple[Path, Path]:
    """The simulated network written once into the cache as a long table + distance table."""
    data = cfg.data
    n = require_int(data.n_sensors, "data.n_sensors", minimum=4)
    days = require_int(data.days, "data.days", minimum=3)
    seed = int(cfg.seed)
    ident = key(2, n, days, float(data.incidents_per_day), float(data.missing), seed)
    folder = Path(cfg.paths.cache_dir) / "traffic" / f"network-{ident}"

    def build(tmp: Path) -> None:
        rng = np.random.default_rng(seed)
        net = synthetic.network(n, rng)
        frame, incidents = synthetic.speeds(
            net, days, rng, float(data.incidents_per_day), missing=float(data.missing)
        )
        long = frame.stack().rename("value").reset_index()
        long.columns = ["timestamp", "sensor", "value"]
        long.to_parquet(tmp / "speeds.parquet", index=False)
        net.distances().to_csv(tmp / "distances.csv", index=False)
        incidents.to_csv(tmp / "incidents.csv", index=False)
        pd.DataFrame(net.position, index=net.sensors, columns=["x_miles", "y_miles"]).to_csv(
            tmp / "positions.csv"
        )

    folder = build_once(folder, build)
    return folder / "speeds.parquet", folder / "distances.csv"


def load_network(cfg: DictConfig) -> Network:
    data = cfg.data
    if data.source == "synthetic":
        path, adjacency = synthetic_files(cfg)
        columns = ("timestamp", "sensor", "value")
    elif data.source == "sensors":
        if not data.path or not data.adjacency:
            raise UserError("data=sensors needs data.path (readings) and data.adjacency (graph)")
        path, adjacency = Path(data.path), Path(data.adjacency)
        columns = (data.time_col, data.sensor_col, data.value_col)
    else:
        raise UserError(f"data.source={data.source!r} is not one of synthetic, sensors")
    frame, step = sensors.load(path, *columns)
    road = graph.load(adjacency, list(frame.columns), float(data.kernel_threshold))
    extra = {"path": str(path), "adjacency": str(adjacency), "tz": frame.attrs.get("tz")}
    where = path.parent / "positions.csv" if data.source == "synthetic" else data.get("locations")
    if where:
        extra["positions"] = read_positions(Path(where), list(frame.columns))
    return Network(
        frame.to_numpy(np.float32),
        frame.index,
        list(frame.columns),
        road.weights,
        step,
        extra=extra,
    )


def load_splits(cfg: DictConfig) -> Splits:
    data = cfg.data
    net = load_network(cfg)
    # ranges: TrafficDataConfig.__post_init__
    steps_in, steps_out, stride = int(data.input_steps), int(data.output_steps), int(data.stride)
    total = len(net.times)
    val_f, test_f = float(data.val_fraction), float(data.test_fraction)
    n_test, n_val = int(total * test_f), int(total * val_f)
    n_train = total - n_test - n_val
    span = steps_in + steps_out
    if min(n_train, n_val, n_test) < span + 1:
        raise UserError(
            f"{total} time steps are too few for {steps_in} in + {steps_out} out windows in "
            f"each of train/val/test; use more days of data"
        )
    train_speeds = net.speeds[:n_train]
    present = train_speeds[train_speeds > 0]
    if present.size == 0:
        raise UserError("the training period holds no readings (all zeros = missing)")
    net.mean, net.std = float(present.mean()), float(present.std() or 1.0)

    def windows(a: int, b: int, every: int) -> Windows:
        return Windows(net, np.arange(a, b - span + 1, every), steps_in, steps_out)

    train = windows(0, n_train, stride)
    val = windows(n_train, n_train + n_val, 1)
    test = windows(n_train + n_val, total, 1)
    info = {
        "source": data.source,
        "sensors": len(net.sensors),
        "edges": int((net.weights > 0).sum() - np.count_nonzero(np.diag(net.weights))),
        "interval_min": net.step_min,
        "period": f"{net.times[0]} .. {net.times[-1]}",
        "missing_share": round(float((net.speeds == 0).mean()), 4),
        "windows": f"train {len(train)}, val {len(val)}, test {len(test)}",
    }
    return Splits(train, val, test, info)


def example_inputs(splits: Splits, n: int) -> pd.DataFrame:
    """Readings of test windows an hour apart, long format as `/predict` takes them:
    `n // sensors` windows, at least one; a missing reading (0) is None."""
    test = splits.test
    net = test.net
    picks = test.starts[:: max(1, 60 // net.step_min)][: max(1, n // max(len(net.sensors), 1) or 1)]
    rows = []
    for k, start in enumerate(picks):
        for t in range(start, start + test.input_steps):
            for s, sensor in enumerate(net.sensors):
                value = float(net.speeds[t, s])
                rows.append((f"w{k:04d}", sensor, net.times[t], value if value > 0 else None))
    return pd.DataFrame(rows, columns=["window", "sensor", "timestamp", "value"])
