"""Every model on the same test windows: masked MAE/RMSE/MAPE at 15/30/60 minutes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from verticals.core.contract import RunContext
from verticals.core.runs import save_figure, write_atomic
from verticals.traffic.data import Windows
from verticals.traffic.metrics import by_horizon
from verticals.traffic.model import TrafficModel

LABELS = {"gwnet": "Graph WaveNet", "gru": "per-sensor GRU", "historical": "historical average",
          "last": "last value"}  # fmt: skip


def forecasts(model: TrafficModel, windows: Windows) -> dict[str, np.ndarray]:
    """(W, output_steps, N) forecasts of every model the bundle holds, and the baselines."""
    speeds_in = windows.net.speeds[windows.starts[:, None] + np.arange(windows.input_steps)]
    inputs = windows.inputs(model.features(windows.net.speeds, windows.net.times))
    out = {name: model.forecast(inputs, name) for name in model.states}
    out["historical"] = model.historical.predict(windows)
    out["last"] = model.last_values(speeds_in)
    return out


def table(model: TrafficModel, windows: Windows) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    truth = windows.targets()
    preds = forecasts(model, windows)
    horizons = [int(h) for h in model.alerts["horizons"]]
    rows = []
    for name, pred in preds.items():
        for h, errors in by_horizon(pred, truth, horizons).items():
            rows.append({"model": name, "horizon_min": h * model.step_min, **errors})
    return pd.DataFrame(rows), preds


def _metrics(frame: pd.DataFrame, served: str) -> dict[str, float]:
    """`mae_60min` etc. for the served model first, then `<model>_mae_60min` for the rest."""
    ours: dict[str, float] = {}
    others: dict[str, float] = {}
    for row in frame.itertuples():
        target, prefix = (ours, "") if row.model == served else (others, f"{row.model}_")
        for key in ("mae", "rmse", "mape"):
            target[f"{prefix}{key}_{row.horizon_min}min"] = float(getattr(row, key))
    return {**ours, **others}


def error_by_horizon(frame: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    for name, part in frame.groupby("model", sort=False):
        ax.plot(part["horizon_min"], part["mae"], marker="o", label=LABELS.get(str(name), name))
    ax.set(xlabel="minutes ahead", ylabel="masked MAE (mph)", title="error by horizon (test)")
    ax.legend()
    return fig


def forecast_vs_actual(model: TrafficModel, windows: Windows, preds: dict[str, np.ndarray],
                       horizon: int, n_sensors: int = 3) -> Figure:  # fmt: skip
    """A day of the test period for the sensors with the most congestion: actual speed and
    each model's forecast made `horizon` steps earlier."""
    truth = windows.targets()[:, horizon - 1]  # (W, N)
    day = min(len(truth), 24 * 60 // model.step_min)
    present = np.where(truth[:day] > 0, truth[:day], np.nan)
    worst = np.argsort(np.nanmin(present, axis=0))[:n_sensors]
    times = windows.net.times[windows.starts[:day] + windows.input_steps + horizon - 1]
    fig = Figure(figsize=(10, 2.6 * n_sensors), layout="constrained")
    axes = fig.subplots(n_sensors, 1, squeeze=False)[:, 0]
    for ax, s in zip(axes, worst, strict=True):
        ax.plot(times, present[:, s], color="black", lw=1.2, label="actual")
        for name, pred in preds.items():
            ax.plot(times, pred[:day, horizon - 1, s], lw=0.9, label=LABELS.get(name, name))
        ax.axhline(float(model.alerts["congestion_speed"]), color="red", ls=":", lw=0.8)
        ax.set(
            ylabel="mph", title=f"sensor {model.sensors[s]}: {horizon * model.step_min} min ahead"
        )
    axes[0].legend(ncols=5, fontsize=7)
    return fig


def evaluate(
    model: TrafficModel, windows: Windows, ctx: RunContext | None = None
) -> dict[str, float]:
    frame, preds = table(model, windows)
    metrics = _metrics(frame, model.name)
    if ctx is not None:
        write_atomic(ctx.run_dir / "horizons.csv", frame.round(4).to_csv(index=False))
        save_figure(error_by_horizon(frame), ctx.plots_dir / "error_by_horizon.png")
        longest = max(int(h) for h in model.alerts["horizons"])
        save_figure(forecast_vs_actual(model, windows, preds, min(longest, model.output_steps)),
                    ctx.plots_dir / "forecast_vs_actual.png")  # fmt: skip
    return metrics


def describe(model: TrafficModel, metrics: dict[str, float], splits_info: dict[str, Any]) -> str:
    """The model card's comparison of the network with the baselines, by horizon."""
    names = [model.name, *[n for n in model.states if n != model.name], "historical", "last"]
    minutes = [int(h) * model.step_min for h in model.alerts["horizons"]]
    head = "| model | " + " | ".join(f"MAE {m} min" for m in minutes) + " |"
    rows = [head, "| --- |" + " --- |" * len(minutes)]
    for name in names:
        prefix = "" if name == model.name else f"{name}_"
        values = [metrics.get(f"{prefix}mae_{m}min", float("nan")) for m in minutes]
        rows.append(
            f"| {LABELS.get(name, name)} | " + " | ".join(f"{v:.3f}" for v in values) + " |"
        )
    return (
        "## Forecast error by horizon (masked MAE, mph; zeros are missing and not scored)\n\n"
        + "\n".join(rows)
        + f"\n\nAlerts: a forecast below {model.alerts['congestion_speed']} mph. "
        "Per horizon and metric: `horizons.csv`.\n"
    )
