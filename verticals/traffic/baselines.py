"""The forecasts a traffic centre uses today, scored beside the learned models.

- historical average: each sensor's mean speed at that time of the week (train period);
- last value: the latest reading in the window, held for every horizon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from verticals.traffic.data import Network, Windows


def week_slot(times: pd.DatetimeIndex, step_min: int) -> np.ndarray:
    """Index of each timestamp's slot in the week (0 .. 7 * 24 * 60 / step - 1)."""
    minutes = times.dayofweek * 24 * 60 + times.hour * 60 + times.minute
    return (np.asarray(minutes) // step_min).astype(np.int64)


@dataclass
class HistoricalAverage:
    table: np.ndarray  # (slots, N): mean speed per week slot and sensor (NaN: never seen)
    fallback: np.ndarray  # (N,) overall mean per sensor
    step_min: int

    @classmethod
    def fit(cls, net: Network, end: int) -> HistoricalAverage:
        speeds = net.speeds[:end].astype(np.float64)
        slots = week_slot(net.times[:end], net.step_min)
        n_slots = 7 * 24 * 60 // net.step_min
        present = speeds > 0
        sums = np.zeros((n_slots, speeds.shape[1]))
        counts = np.zeros_like(sums)
        slots = slots % n_slots  # a step that does not divide the week wraps around
        np.add.at(sums, slots, np.where(present, speeds, 0.0))
        np.add.at(counts, slots, present)
        with np.errstate(invalid="ignore", divide="ignore"):
            table = sums / counts
            fallback = np.where(present, speeds, 0).sum(0) / np.maximum(present.sum(0), 1)
        return cls(table.astype(np.float32), fallback.astype(np.float32), net.step_min)

    def at(self, times: pd.DatetimeIndex) -> np.ndarray:
        """(len(times), N) forecasts for those timestamps."""
        values = self.table[week_slot(times, self.step_min) % len(self.table)]
        return np.where(np.isnan(values), self.fallback[None, :], values)

    def predict(self, windows: Windows) -> np.ndarray:
        """(W, output_steps, N)."""
        offsets = windows.starts[:, None] + windows.input_steps + np.arange(windows.output_steps)
        times = windows.net.times
        flat = self.at(times[offsets.ravel()])
        return flat.reshape(*offsets.shape, -1)


def last_value(speeds_in: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """(W, N): the last non-missing reading of each sensor in each (W, T, N) window."""
    present = speeds_in > 0
    last = np.where(present.any(1), 0.0, np.nan)
    idx = speeds_in.shape[1] - 1 - np.argmax(present[:, ::-1, :], axis=1)
    values = np.take_along_axis(speeds_in, idx[:, None, :], axis=1)[:, 0, :]
    return np.where(np.isnan(last), fallback, values)
