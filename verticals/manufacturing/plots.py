"""Figures a quality engineer would rather look at than read: boxes on parts, and learning."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def detections_grid(cases: list[dict[str, Any]], columns: int = 4) -> Figure:
    """Test images with true boxes (green, dashed) and detections (red: fails the part,
    amber: reported but under its class threshold); the title gives the decision."""
    rows = max(1, -(-len(cases) // columns))
    fig = Figure(figsize=(3 * columns, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, case in zip(axes, cases, strict=False):
        image = case["image"]
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        h, w = image.shape[:2]
        for _name, cx, cy, bw, bh in case["truth"]:
            ax.add_patch(
                Rectangle(((cx - bw / 2) * w, (cy - bh / 2) * h), bw * w, bh * h,
                          fill=False, edgecolor="#3cb44b", linestyle="--", linewidth=1.2)
            )  # fmt: skip
        for det in case["report"]["detections"]:
            x0, y0, x1, y1 = det["box"]
            colour = "#e6194b" if det["fails"] else "#f5a623"
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour))
            ax.text(x0, y0 - 1, f"{det['defect_class']} {det['confidence']:.2f}",
                    color=colour, fontsize=6, va="bottom")  # fmt: skip
        truth = "defective" if case["truth"] else "good"
        ax.set_title(f"{case['name']}\n{case['report']['decision'].upper()} (truly {truth})",
                     fontsize=8)  # fmt: skip
    return fig


def training_curve(history: pd.DataFrame) -> Figure:
    """ultralytics' results.csv: training losses and validation mAP per epoch."""
    fig = Figure(figsize=(10, 3.5), layout="constrained")
    loss_ax, map_ax = fig.subplots(1, 2)
    for column in ("train/box_loss", "train/cls_loss", "train/dfl_loss"):
        if column in history:
            loss_ax.plot(history["epoch"], history[column], label=column.split("/")[1])
    loss_ax.set(xlabel="epoch", ylabel="loss", title="training loss")
    loss_ax.legend()
    for column, label in (("metrics/mAP50(B)", "mAP50"), ("metrics/mAP50-95(B)", "mAP50-95")):
        if column in history:
            map_ax.plot(history["epoch"], history[column], label=label)
    map_ax.set(xlabel="epoch", ylabel="mAP", title="validation mAP", ylim=(0, 1))
    map_ax.legend()
    return fig


def per_class_bars(metrics: dict[str, float], names: list[str]) -> Figure:
    """AP50, precision and recall per defect class, side by side."""
    keys = ("ap50", "precision", "recall")
    present = [n for n in names if f"ap50/{n}" in metrics]
    fig = Figure(figsize=(max(5, 1.3 * len(present) + 2), 3.5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(present))
    for i, key in enumerate(keys):
        ax.bar(x + (i - 1) * 0.27, [metrics[f"{key}/{n}"] for n in present], 0.27, label=key)
    ax.set_xticks(x, present, rotation=20)
    ax.set(ylim=(0, 1), title="per defect class (test split)")
    ax.legend()
    return fig
