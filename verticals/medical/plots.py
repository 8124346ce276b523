"""Figures a radiologist would rather look at than read: overlays and the training curve."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6"]


def label_cmap(n: int) -> ListedColormap:
    return ListedColormap([(0, 0, 0, 0)] + [COLOURS[i % len(COLOURS)] for i in range(n)])


def overlays(cases: list[dict[str, Any]], labels: dict[int, str]) -> Figure:
    """One row per case: the slice with most foreground, image / ground truth / prediction."""
    fig = Figure(figsize=(9, 3 * len(cases)), layout="constrained")
    axes = fig.subplots(len(cases), 3, squeeze=False)
    cmap, top = label_cmap(max(labels)), max(labels)
    for row, case in zip(axes, cases, strict=True):
        image, truth, pred = case["image"], case["truth"], case["pred"]
        z = int(np.argmax((truth > 0).sum(axis=(0, 1)))) if truth.any() else image.shape[2] // 2
        lo, hi = np.percentile(image[..., z], [1, 99])
        for ax, mask, title in zip(
            row, (None, truth, pred), ("image", "ground truth", "prediction"), strict=True
        ):
            ax.imshow(image[..., z].T, cmap="gray", origin="lower", vmin=lo, vmax=hi)
            if mask is not None:
                ax.imshow(
                    mask[..., z].T,
                    cmap=cmap,
                    vmin=0,
                    vmax=top,
                    alpha=0.45,
                    origin="lower",
                    interpolation="nearest",
                )
            ax.set_title(f"{case['name']} z={z}: {title}", fontsize=8)
            ax.axis("off")
    handles = [
        Patch(color=COLOURS[(k - 1) % len(COLOURS)], label=name) for k, name in labels.items()
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    return fig


def training_curve(history: list[dict[str, Any]]) -> Figure:
    fig = Figure(figsize=(7, 3.5), layout="constrained")
    ax = fig.subplots()
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["loss"] for h in history], label="train loss (Dice+CE)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    val = [(h["epoch"], h["val_dice"]) for h in history if h["val_dice"] == h["val_dice"]]
    if val:
        twin = ax.twinx()
        twin.plot(*zip(*val, strict=True), "o-", color="tab:green", label="val Dice")
        twin.set_ylabel("validation Dice")
        twin.set_ylim(0, 1)
        twin.legend(loc="center right")
    ax.legend(loc="upper right")
    return fig
