"""The trained forecaster as the operations centre uses it: a window of readings in,
speeds per sensor and horizon out, with the baselines it is judged against."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import tzinfo
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from verticals.traffic.baselines import HistoricalAverage, last_value


@dataclass
class TrafficModel:
    name: str  # gwnet | gru: the model that answers /predict
    sensors: list[str]
    weights: np.ndarray
    mean: float
    std: float
    step_min: int
    input_steps: int
    output_steps: int
    model_cfg: dict[str, Any]
    alerts: dict[str, Any]
    historical: HistoricalAverage
    states: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> state_dict
    device: str = "cpu"
    tz: str | None = None  # the training data's time zone (None: naive, taken as local time)
    positions: dict[str, list[float]] | None = None  # sensor -> [x, y]: the console's map
    _nets: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def network(self, name: str | None = None) -> Any:
        """The torch module `name` (default: the served model), built once in eval mode."""
        from verticals.traffic.networks import build

        name = name or self.name
        if name not in self._nets:
            net = build(name, self.model_cfg, self.weights, 3, self.output_steps)
            net.load_state_dict(self.states[name])
            self._nets[name] = net.to(self.device).eval()
        return self._nets[name]

    @cached_property
    def columns(self) -> dict[str, int]:
        """Sensor id -> column of the speed array, built once: serving looks up every reading."""
        return {s: i for i, s in enumerate(self.sensors)}

    @cached_property
    def zone(self) -> tzinfo | None:
        """The training zone as the tzinfo pandas uses for `tz`, so plain `datetime` maths
        converts aware readings as `Timestamp.tz_convert(tz)` does."""
        return pd.Timestamp(0, tz=self.tz).tzinfo if self.tz else None

    def features(self, speeds: np.ndarray, times: pd.DatetimeIndex) -> np.ndarray:
        """(T, N, 3) inputs from raw speeds (0 = missing) at `times`, as in training."""
        return self.features_at(speeds, np.asarray(times.hour * 60 + times.minute))

    def features_at(self, speeds: np.ndarray, minute_of_day: np.ndarray) -> np.ndarray:
        """(..., T, N, 3) inputs from (..., T, N) speeds (0 = missing) and each step's minute
        of the day (..., T): element by element, so a stack of windows at once gives each
        window what it gets alone."""
        present = speeds > 0
        scaled = np.where(present, (speeds - self.mean) / self.std, 0.0)
        tod = np.broadcast_to((np.asarray(minute_of_day) / (24 * 60))[..., None], speeds.shape)
        return np.stack([scaled, tod, (~present).astype(np.float32)], -1).astype(np.float32)

    def batch_gain(self, windows: int = 8, repeats: int = 3) -> tuple[float, float]:
        """Seconds per window of the served network: alone (one call per window) and
        `windows` in one call, best of `repeats` after a warm-up (first calls build kernels)."""
        inputs = np.zeros((windows, self.input_steps, len(self.sensors), 3), np.float32)
        alone, together = float("inf"), float("inf")
        for attempt in range(repeats + 1):
            started = time.perf_counter()
            for i in range(windows):
                self.forecast(inputs[i : i + 1])
            middle = time.perf_counter()
            self.forecast(inputs)
            ended = time.perf_counter()
            if attempt:
                alone = min(alone, (middle - started) / windows)
                together = min(together, (ended - middle) / windows)
        return alone, together

    def forecast(self, inputs: np.ndarray, name: str | None = None, batch: int = 256) -> np.ndarray:
        """(W, output_steps, N) speeds from (W, input_steps, N, 3) inputs."""
        import torch

        net = self.network(name)
        out = []
        with torch.inference_mode():
            for i in range(0, len(inputs), batch):
                x = torch.from_numpy(np.ascontiguousarray(inputs[i : i + batch])).to(self.device)
                out.append(net(x).float().cpu().numpy())
        pred = np.concatenate(out) * self.std + self.mean
        return np.clip(pred, 0.0, None)

    def last_values(self, speeds_in: np.ndarray) -> np.ndarray:
        """(W, output_steps, N) last-value forecasts from (W, input_steps, N) speeds."""
        held = last_value(speeds_in, self.historical.fallback)
        return np.repeat(held[:, None, :], self.output_steps, axis=1)


def save(model: TrafficModel, directory: Path) -> None:
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    for name, state in model.states.items():
        torch.save({k: v.cpu() for k, v in state.items()}, directory / f"{name}.pt")
    np.save(directory / "adjacency.npy", model.weights)
    np.save(directory / "historical_average.npy", model.historical.table)
    np.save(directory / "historical_fallback.npy", model.historical.fallback)
    meta = {
        "name": model.name,
        "sensors": model.sensors,
        "mean": model.mean,
        "std": model.std,
        "step_min": model.step_min,
        "input_steps": model.input_steps,
        "output_steps": model.output_steps,
        "model": model.model_cfg,
        "alerts": model.alerts,
        "networks": sorted(model.states),
        "tz": model.tz,
        "positions": model.positions,
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def load(directory: Path) -> TrafficModel:
    import torch

    meta = json.loads((directory / "meta.json").read_text())
    states = {
        name: torch.load(directory / f"{name}.pt", map_location="cpu", weights_only=True)
        for name in meta["networks"]
    }
    historical = HistoricalAverage(
        np.load(directory / "historical_average.npy"),
        np.load(directory / "historical_fallback.npy"),
        int(meta["step_min"]),
    )
    return TrafficModel(
        name=meta["name"],
        sensors=list(meta["sensors"]),
        weights=np.load(directory / "adjacency.npy"),
        mean=float(meta["mean"]),
        std=float(meta["std"]),
        step_min=int(meta["step_min"]),
        input_steps=int(meta["input_steps"]),
        output_steps=int(meta["output_steps"]),
        model_cfg=dict(meta["model"]),
        alerts=dict(meta["alerts"]),
        historical=historical,
        states=states,
        tz=meta.get("tz"),
        positions=meta.get("positions"),
    )
