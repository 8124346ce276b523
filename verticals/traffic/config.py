"""Structured configs (Hydra ConfigStore schemas) for the traffic forecasting vertical.

The defaults live here; the YAML options in conf/traffic/ list only what differs. Settings
that take one of a few words are `StrEnum`s (a typo fails while composing), and ranges are
checked in `__post_init__` (see `verticals.core.config.check_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from verticals.core.config import ConfigValueError, check_range, check_ranges, store_schema


class TrafficSource(StrEnum):
    synthetic = "synthetic"  # a simulated loop-detector network
    sensors = "sensors"  # your readings (METR-LA .h5, long CSV/Parquet) and road graph


class ForecasterName(StrEnum):
    gwnet = "gwnet"  # Graph WaveNet
    gru = "gru"  # the per-sensor GRU alone


@dataclass
class TrafficDataConfig:
    """Where the readings and the road graph come from, and how they are windowed."""

    source: TrafficSource = TrafficSource.synthetic
    path: str | None = None  # sensors: METR-LA style .h5, or a long CSV/Parquet
    adjacency: str | None = None  # sensors: adj_mx.pkl, a .npy/.csv matrix or a distance table
    # sensors: where each sensor is, for the console's map (graph_sensor_locations.csv, or a
    # CSV of sensor id and longitude/latitude or x/y); null: the console lays the graph out
    locations: str | None = None
    time_col: str = "timestamp"  # long tables: column names
    sensor_col: str = "sensor"
    value_col: str = "value"
    kernel_threshold: float = 0.1  # distance tables: Gaussian kernel weights below are dropped
    # synthetic network
    n_sensors: int = 40
    days: int = 28
    incidents_per_day: float = 4.0
    missing: float = 0.005  # share of single missing readings (zeros); outages come on top
    # windows and split (chronological)
    input_steps: int = 12
    output_steps: int = 12
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    stride: int = 1  # step between training windows

    def __post_init__(self) -> None:
        check_range(self, "kernel_threshold", ge=0, lt=1)
        check_range(self, "n_sensors", ge=4)
        check_range(self, "days", ge=3)
        check_range(self, "incidents_per_day", ge=0)
        check_range(self, "missing", ge=0, lt=1)
        check_ranges(self, "input_steps output_steps stride", ge=1)
        check_ranges(self, "val_fraction test_fraction", gt=0, lt=1)
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigValueError(
                "val_fraction", self.val_fraction, f"< {1 - self.test_fraction:g} with "
                f"test_fraction={self.test_fraction:g} (together below 1)"
            )  # fmt: skip


@dataclass
class TrafficModelConfig:
    """The forecaster: Graph WaveNet (default), or the per-sensor GRU alone."""

    name: ForecasterName = ForecasterName.gwnet
    channels: int = 32
    layers: int = 8  # gwnet: dilated temporal layers (dilations 1, 2, 1, 2, ...)
    adaptive: bool = True  # gwnet: learn an adjacency beside the road graph
    embedding: int = 10  # gwnet: size of the node embeddings of the adaptive adjacency
    diffusion_steps: int = 2  # gwnet: hops of the diffusion convolution
    dropout: float = 0.3
    gru_hidden: int = 64  # the per-sensor GRU baseline

    def __post_init__(self) -> None:
        check_ranges(self, "channels layers embedding diffusion_steps gru_hidden", ge=1)
        check_range(self, "dropout", ge=0, lt=1)


@dataclass
class TrafficTrainingConfig:
    """Adam on masked MAE, early stopping on validation MAE, checkpoints to resume from."""

    epochs: int = 30
    # a wall-clock budget for this command's training, both models (the best weights kept)
    max_minutes: float | None = None
    # on a CPU, with no max_minutes, training stops after this many minutes (the best
    # weights kept), so the default recipe finishes on a laptop; null trains all epochs there
    cpu_minutes: float | None = 3.5
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    patience: int = 8  # epochs without a better validation MAE before stopping
    baseline_epochs: int = 10  # the per-sensor GRU baseline's own training
    resume: str | None = None  # a run folder or checkpoint to continue from

    def __post_init__(self) -> None:
        check_ranges(self, "epochs batch_size patience", ge=1)
        check_range(self, "baseline_epochs", ge=0)
        check_ranges(self, "max_minutes cpu_minutes lr grad_clip", gt=0)
        check_range(self, "weight_decay", ge=0)


@dataclass
class AlertsConfig:
    """Congestion alerts from the forecasts."""

    congestion_speed: float = 40.0  # a forecast below this (mph) raises an alert
    # steps ahead reported: 15/30/60 min at 5-minute data (the headline metric, mae_60min,
    # assumes that interval; other intervals name metrics by their own minutes)
    horizons: list[int] = field(default_factory=lambda: [3, 6, 12])

    def __post_init__(self) -> None:
        check_range(self, "congestion_speed", gt=0)
        if not self.horizons or not all(isinstance(h, int) and h >= 1 for h in self.horizons):
            raise ConfigValueError("horizons", list(self.horizons), "steps ahead, each >= 1")


def register() -> None:
    store_schema("data", TrafficDataConfig, name="traffic_schema")
    store_schema("model", TrafficModelConfig, name="traffic_schema")
    store_schema("training", TrafficTrainingConfig, name="traffic_schema")
    store_schema("alerts", AlertsConfig, name="traffic_schema")
