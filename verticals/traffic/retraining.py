"""Feedback becomes sensor series: the readings a client sent with each request and the
speeds it observed afterwards are real readings of the network, so retraining puts them
into the series and cuts training windows from them; a champion's holdout is its test
windows written down, so every challenger is scored on the same readings.

Where the readings go (the network is one (T, N) series that windows index into):

- at a time of the training period: fill a missing (0) reading; known ones are kept;
- at a time of the validation or test period: skipped, so neither is learnt from;
- at a time outside the series (live traffic, after it): a block of new rows on the
  series' step grid, put right after the training period (the series' rows are then no
  longer in time order, which nothing needs: each row keeps its own timestamp), so that
  the training windows still end where the training period ends, and the historical
  average and the normalisation are fit on training readings only.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from verticals.core.contract import CaseScores, Logged, Splits
from verticals.core.errors import UserError
from verticals.traffic.data import Network, Windows
from verticals.traffic.model import TrafficModel
from verticals.traffic.predict import _wall_clock

log = logging.getLogger(__name__)

HOLDOUT_ARRAYS = "holdout.npz"
HOLDOUT_META = "holdout.json"


@dataclass
class Gathered:
    """Feedback readings on the series' step grid: (step, column) -> speed (later wins)."""

    speeds: dict[tuple[int, int], float] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)
    entries: int = 0  # entries whose readings could be read (plain inputs)


# -- reading feedback -------------------------------------------------------------------


def _plain_inputs(entry: Logged) -> list[dict[str, Any]] | None:
    """The entry's request records, or None when the log kept none or only hashes."""
    records = entry.inputs
    if not isinstance(records, list) or not records:
        return None
    if any(isinstance(r, dict) and isinstance(r.get("value"), str) for r in records):
        return None
    return [r for r in records if isinstance(r, dict)]


def _readings(entry: Logged, records: list[dict[str, Any]]) -> list[tuple[Any, Any, Any]]:
    """(sensor, timestamp, speed) of the window's inputs, then of the observed outcome."""
    out = [(r.get("sensor"), r.get("timestamp"), r.get("value")) for r in records]
    observed = (entry.outcome or {}).get("observed") or []
    out += [(o.get("sensor"), o.get("timestamp"), o.get("speed")) for o in observed]
    return out


def _speed(value: Any) -> float | None:
    """A usable speed (> 0, finite), 0.0 for a missing one, None for a bad value."""
    if value is None:
        return 0.0
    try:
        speed = float(value)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(speed) or speed < 0:
        return None
    return speed


class Grid:
    """The series' step grid: wall-clock seconds -> step number from its first time."""

    def __init__(self, first: pd.Timestamp, step_min: int, tz: str | None) -> None:
        self.origin = int(pd.Timestamp(first).as_unit("s").asm8.astype(np.int64))
        self.step_s, self.tz = step_min * 60, tz
        self._cache: dict[Any, int | None] = {}

    def step(self, value: Any) -> int | None:
        """The step of a timestamp; None when it is no time or falls between steps."""
        if value not in self._cache:  # a window's readings share a few timestamps
            self._cache[value] = self._step(value)
        return self._cache[value]

    def _step(self, value: Any) -> int | None:
        try:
            seconds = _wall_clock(value, self.tz, "feedback") - self.origin
        except UserError:
            return None
        return seconds // self.step_s if seconds % self.step_s == 0 else None

    def times(self, steps: np.ndarray) -> pd.DatetimeIndex:
        seconds = self.origin + np.asarray(steps, np.int64) * self.step_s
        return pd.DatetimeIndex(seconds.astype("datetime64[s]").astype("datetime64[ns]"))


def gather(feedback: list[Logged], columns: dict[str, int], grid: Grid) -> Gathered:
    """Every reading of `feedback` that fits the network: a known sensor, a time on the
    step grid, a speed >= 0 (0 and null: missing, not a reading). The rest is counted."""
    found = Gathered()
    for entry in feedback:
        records = _plain_inputs(entry)
        if records is None:
            found.skipped["entries without logged readings"] += 1
            continue
        found.entries += 1
        for sensor, stamp, value in _readings(entry, records):
            col = columns.get(str(sensor))
            speed = _speed(value)
            step = grid.step(stamp) if col is not None else None
            if col is None:
                found.skipped["unknown sensor"] += 1
            elif step is None:
                found.skipped["time not on the grid"] += 1
            elif speed is None:
                found.skipped["not a speed"] += 1
            elif speed > 0:
                found.speeds[(step, col)] = speed
    return found


def _no_readings(feedback: list[Logged], action: str) -> UserError:
    return UserError(
        f"traffic {action} from the readings a request sent, and none of the {len(feedback)} "
        "feedback entries has them (log.inputs=none or hashed); log them with log.inputs=full"
    )


# -- new rows from feedback -------------------------------------------------------------


@dataclass
class Blocks:
    """New rows for the series (times outside it) and the windows they give, by row."""

    speeds: np.ndarray  # (R, N) float32, 0 = missing
    times: pd.DatetimeIndex
    starts: np.ndarray  # window starts into these rows
    readings: int  # readings in rows that give windows
    unused: int  # readings too far from others to make a window


def _runs(steps: np.ndarray, span: int) -> list[np.ndarray]:
    """Sorted steps cut where no window could hold readings from both sides."""
    cuts = np.flatnonzero(np.diff(steps) >= span) + 1
    return np.split(steps, cuts)


def blocks(
    new: dict[tuple[int, int], float],
    n_sensors: int,
    grid: Grid,
    shape: tuple[int, int, int],
) -> Blocks:
    """Rows on the grid around the readings at new times, gaps missing (0), and windows
    (`shape`: input steps, output steps, stride) with a reading in both inputs and targets:
    a window with no target scores nothing, one with no input teaches nothing."""
    steps_in, steps_out, stride = shape
    span = steps_in + steps_out
    speeds, times, starts = [], [], []
    rows, readings, unused = 0, 0, 0
    steps = np.array([step for step, _ in new], np.int64)
    cols = np.array([col for _, col in new], np.intp)
    values = np.array(list(new.values()), np.float32)
    for run in _runs(np.unique(steps), span) if new else []:
        first, last = int(run[0]), int(run[-1])
        block = np.zeros((last - first + 1, n_sensors), np.float32)
        inside = (steps >= first) & (steps <= last)
        block[steps[inside] - first, cols[inside]] = values[inside]
        found = [
            s
            for s in range(0, len(block) - span + 1, stride)
            if (block[s : s + steps_in] > 0).any() and (block[s + steps_in : s + span] > 0).any()
        ]
        if not found:
            unused += int((block > 0).sum())
            continue
        speeds.append(block)
        times.append(grid.times(np.arange(first, last + 1)))
        starts.append(np.asarray(found, np.int64) + rows)
        rows += len(block)
        readings += int((block > 0).sum())
    return Blocks(
        np.concatenate(speeds) if speeds else np.zeros((0, n_sensors), np.float32),
        times[0].append(times[1:]) if times else pd.DatetimeIndex([]),
        np.concatenate(starts) if starts else np.zeros(0, np.int64),
        readings,
        unused,
    )


def _split_by_row(
    net: Network, found: Gathered, grid: Grid
) -> tuple[np.ndarray, dict[tuple[int, int], float]]:
    """(row of each gathered reading in the series, -1: not in it) and those not in it."""
    keys = list(found.speeds)
    stamps = grid.times(np.array([step for step, _ in keys], np.int64))
    rows = net.times.get_indexer(stamps) if keys else np.zeros(0, np.intp)
    new = {k: found.speeds[k] for k, row in zip(keys, rows, strict=True) if row < 0}
    return rows, new


# -- learn_from -------------------------------------------------------------------------


def _fill(
    speeds: np.ndarray, found: Gathered, rows: np.ndarray, train_end: int
) -> tuple[int, Counter]:
    """Missing training readings filled in place; readings of val/test times counted."""
    filled, skipped = 0, Counter()
    for (step, col), row in zip(found.speeds, rows, strict=True):
        if row < 0:
            continue
        if row >= train_end:
            skipped["in the validation or test period"] += 1
        elif speeds[row, col] == 0:
            speeds[row, col] = found.speeds[(step, col)]
            filled += 1
        else:
            skipped["already in the training data"] += 1
    return filled, skipped


def _scale(net: Network, end: int) -> None:
    """Mean and std of the readings in the training rows, as `load_splits` computes them."""
    present = net.speeds[:end][net.speeds[:end] > 0]
    net.mean, net.std = float(present.mean()), float(present.std() or 1.0)


def learn_from(cfg: DictConfig, splits: Splits, feedback: list[Logged]) -> Splits:
    """`splits` with feedback readings in the training part: missing training readings
    filled, readings after (or before) the series added as new rows right after the
    training period with training windows cut from them (`data.stride` apart, each with a
    reading among its inputs and its targets). Validation and test windows see the same
    readings as before. `info["feedback"]`: entries, windows added, readings, skipped."""
    train, val, test = splits.train, splits.val, splits.test
    net: Network = train.net
    grid = Grid(net.times[0], net.step_min, net.extra.get("tz"))
    found = gather(feedback, {s: i for i, s in enumerate(net.sensors)}, grid)
    if not found.entries:
        raise _no_readings(feedback, "learns")
    train_end = int(val.starts.min())  # rows before the validation period are training
    rows, new = _split_by_row(net, found, grid)
    speeds = np.array(net.speeds, np.float32)
    filled, skipped = _fill(speeds, found, rows, train_end)
    shape = (train.input_steps, train.output_steps, int(cfg.data.stride))
    added = blocks(new, len(net.sensors), grid, shape)
    skipped.update(found.skipped)
    if added.unused:
        skipped["too far from other readings for a window"] += added.unused
    if not filled and not len(added.starts):
        shown = ", ".join(f"{n} {why}" for why, n in skipped.most_common()) or "none sent"
        raise UserError(f"traffic: no usable readings in {len(feedback)} feedback entries: {shown}")
    grown = replace(
        net,
        speeds=np.concatenate([speeds[:train_end], added.speeds, speeds[train_end:]]),
        times=net.times[:train_end].append(added.times).append(net.times[train_end:]),
        extra=dict(net.extra),
    )
    _scale(grown, train_end + len(added.speeds))
    shift = len(added.speeds)
    parts = [
        Windows(grown, np.concatenate([train.starts, added.starts + train_end]), *shape[:2]),
        Windows(grown, val.starts + shift, val.input_steps, val.output_steps),
        Windows(grown, test.starts + shift, test.input_steps, test.output_steps),
    ]
    summary = {
        "entries": found.entries,
        "windows": len(added.starts),
        "readings": added.readings,
        "filled": filled,
        "skipped": dict(skipped),
    }
    info = {**splits.info, "feedback": summary}
    info["windows"] = f"train {len(parts[0])}, val {len(parts[1])}, test {len(parts[2])}"
    return Splits(*parts, info)


# -- the holdout ------------------------------------------------------------------------


def extend_holdout(model: TrafficModel, holdout: Windows, feedback: list[Logged]) -> Windows:
    """`holdout` with windows over the feedback's readings at times it does not hold:
    new rows appended, windows every step (as test windows) with a reading among their
    inputs and targets. Readings at times the holdout already holds are not used, so
    its existing cases stay as they were; with no window to add it comes back as it was."""
    net = holdout.net
    grid = Grid(net.times[0], net.step_min, model.tz)
    found = gather(feedback, {s: i for i, s in enumerate(net.sensors)}, grid)
    if not found.entries:
        raise _no_readings(feedback, "scores feedback")
    _, new = _split_by_row(net, found, grid)
    shape = (holdout.input_steps, holdout.output_steps, 1)
    added = blocks(new, len(net.sensors), grid, shape)
    if not len(added.starts):
        log.warning("traffic: %d feedback entries give no holdout window", len(feedback))
        return holdout
    grown = replace(
        net,
        speeds=np.concatenate([net.speeds, added.speeds]),
        times=net.times.append(added.times),
        extra={**net.extra, "feedback_windows": len(added.starts)},
    )
    starts = np.concatenate([holdout.starts, added.starts + len(net.speeds)])
    return Windows(grown, starts, holdout.input_steps, holdout.output_steps)


def save_holdout(data: Windows, directory: Path) -> None:
    """The rows the windows read (and nothing else of the series), their times and the
    network's facts: an .npz of arrays and a JSON file, no pickle."""
    span = data.input_steps + data.output_steps
    rows = np.unique(data.starts[:, None] + np.arange(span))
    net = data.net
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(
        directory / HOLDOUT_ARRAYS,
        speeds=np.asarray(net.speeds[rows], np.float32),
        times=net.times[rows].as_unit("ns").to_numpy(),
        starts=np.searchsorted(rows, data.starts),  # a window's rows stay consecutive
        weights=net.weights,
    )
    meta = {
        "sensors": list(net.sensors),
        "step_min": net.step_min,
        "mean": net.mean,
        "std": net.std,
        "input_steps": data.input_steps,
        "output_steps": data.output_steps,
        "extra": net.extra,
    }
    (directory / HOLDOUT_META).write_text(json.dumps(meta, indent=2, default=str) + "\n")


def load_holdout(directory: Path) -> Windows:
    """Inverse of `save_holdout`."""
    for name in (HOLDOUT_ARRAYS, HOLDOUT_META):
        if not (directory / name).is_file():
            raise UserError(f"{directory}: no {name}; not a traffic holdout")
    meta = json.loads((directory / HOLDOUT_META).read_text())
    with np.load(directory / HOLDOUT_ARRAYS, allow_pickle=False) as arrays:
        net = Network(
            speeds=arrays["speeds"],
            times=pd.DatetimeIndex(arrays["times"]),
            sensors=list(meta["sensors"]),
            weights=arrays["weights"],
            step_min=int(meta["step_min"]),
            mean=float(meta["mean"]),
            std=float(meta["std"]),
            extra=dict(meta["extra"]),
        )
        starts = arrays["starts"].astype(np.int64)
    return Windows(net, starts, int(meta["input_steps"]), int(meta["output_steps"]))


# -- per-case scores --------------------------------------------------------------------


def _sums(pred: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    """Per window: scored targets and sums of |error|, error² and |error| / truth, computed
    as `metrics.masked` computes them, so pooled sums give its values."""
    mask = true > 0
    err = np.where(mask, pred - true, 0).astype(np.float64)
    safe = np.where(mask, true, 1).astype(np.float64)
    return {
        "n": mask.sum(axis=1).astype(np.float64),
        "mae": np.abs(err).sum(axis=1),
        "rmse": np.square(err).sum(axis=1),
        "mape": (np.abs(err) / safe).sum(axis=1),
    }


def _pooled(sums: dict[str, np.ndarray], positions: np.ndarray) -> dict[str, float]:
    """`metrics.masked` over the targets of the windows at `positions` (repeats count)."""
    n = float(sums["n"][positions].sum())
    if n == 0:
        return {"mae": float("nan"), "rmse": float("nan"), "mape": float("nan")}
    return {
        "mae": float(sums["mae"][positions].sum() / n),
        "rmse": float(np.sqrt(sums["rmse"][positions].sum() / n)),
        "mape": float(sums["mape"][positions].sum() / n * 100),
    }


def score_cases(model: TrafficModel, data: Windows) -> CaseScores:
    """The served model's masked errors per window and reported horizon. `evaluate`'s
    errors pool every scored target (not a mean of window means: windows differ in missing
    readings), so each window keeps its sums and counts and a resample pools those:
    `mae_60min` etc. on all windows are `evaluate`'s."""
    net = data.net
    inputs = data.inputs(model.features(net.speeds, net.times))
    pred, true = model.forecast(inputs), data.targets()
    horizons = [int(h) for h in model.alerts["horizons"] if int(h) <= pred.shape[1]]
    per_horizon = {h: _sums(pred[:, h - 1], true[:, h - 1]) for h in horizons}

    def metrics(positions: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {}
        for h, sums in per_horizon.items():
            for key, value in _pooled(sums, np.asarray(positions, np.intp)).items():
                out[f"{key}_{h * model.step_min}min"] = value
        return out

    return CaseScores(len(data), metrics)


def case_keys(data: Windows) -> set[str]:
    """The reading times (wall clock, whole seconds) that `data`'s windows read, inputs and
    targets: two windows sharing a time share readings."""
    span = data.input_steps + data.output_steps
    rows = np.unique((data.starts[:, None] + np.arange(span)).ravel())
    seconds = pd.DatetimeIndex(data.net.times[rows]).as_unit("s").asi8
    return {f"@{s}" for s in seconds.tolist()}


def entry_keys(entry: Logged) -> set[str]:
    """The times of an entry's readings and observed speeds, as `case_keys` keys them (an
    aware timestamp keeps its own wall clock)."""
    records = _plain_inputs(entry)
    if records is None:
        return set()
    keys = set()
    for _, stamp, _ in _readings(entry, records):
        try:
            keys.add(f"@{_wall_clock(stamp, None, 'feedback')}")
        except UserError:
            continue
    return keys
