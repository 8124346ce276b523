"""Structured configs (Hydra ConfigStore schemas) for the traffic forecasting vertical."""

from __future__ import annotations

from dataclasses import dataclass, field

from verticals.core.config import store_schema


@dataclass
class TrafficDataConfig:
    """Where the readings and the road graph come from, and how they are windowed."""

    source: str = "synthetic"  # synthetic | sensors
    path: str | None = None  # sensors: METR-LA style .h5, or a long CSV/Parquet
    adjacency: str | None = None  # sensors: adj_mx.pkl, a .npy/.csv matrix or a distance table
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


@dataclass
class TrafficModelConfig:
    """The forecaster: Graph WaveNet (default), or the per-sensor GRU alone."""

    name: str = "gwnet"  # gwnet | gru
    channels: int = 32
    layers: int = 8  # gwnet: dilated temporal layers (dilations 1, 2, 1, 2, ...)
    adaptive: bool = True  # gwnet: learn an adjacency beside the road graph
    embedding: int = 10  # gwnet: size of the node embeddings of the adaptive adjacency
    diffusion_steps: int = 2  # gwnet: hops of the diffusion convolution
    dropout: float = 0.3
    gru_hidden: int = 64  # the per-sensor GRU baseline


@dataclass
class TrafficTrainingConfig:
    """Adam on masked MAE, early stopping on validation MAE, checkpoints to resume from."""

    epochs: int = 30
    max_minutes: float | None = None  # stop by this wall time (the best checkpoint is kept)
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    patience: int = 8  # epochs without a better validation MAE before stopping
    baseline_epochs: int = 10  # the per-sensor GRU baseline's own training
    resume: str | None = None  # a run folder or checkpoint to continue from


@dataclass
class AlertsConfig:
    """Congestion alerts from the forecasts."""

    congestion_speed: float = 40.0  # a forecast below this (mph) raises an alert
    # steps ahead reported: 15/30/60 min at 5-minute data (the headline metric, mae_60min,
    # assumes that interval; other intervals name metrics by their own minutes)
    horizons: list[int] = field(default_factory=lambda: [3, 6, 12])


def register() -> None:
    store_schema("data", TrafficDataConfig, name="traffic_schema")
    store_schema("model", TrafficModelConfig, name="traffic_schema")
    store_schema("training", TrafficTrainingConfig, name="traffic_schema")
    store_schema("alerts", AlertsConfig, name="traffic_schema")
