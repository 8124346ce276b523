"""Segmentation metrics per label: Dice and the 95th-percentile Hausdorff distance (mm)."""

from __future__ import annotations

import numpy as np


def dice_per_label(pred: np.ndarray, truth: np.ndarray, labels: dict[int, str]) -> dict[str, float]:
    """Dice for each foreground label; NaN where the label is absent from both (nothing to
    find, nothing found), 0 where only one of them has it."""
    out = {}
    for k, name in labels.items():
        p, t = pred == k, truth == k
        denom = int(p.sum()) + int(t.sum())
        out[name] = float("nan") if denom == 0 else 2.0 * float((p & t).sum()) / denom
    return out


def hd95_per_label(
    pred: np.ndarray, truth: np.ndarray, labels: dict[int, str], spacing: list[float]
) -> dict[str, float]:
    """95% Hausdorff distance in mm per foreground label. NaN where neither has the label;
    where only one has it (a structure missed or invented), the image diagonal in mm: the
    worst possible distance, so a model cannot improve its mean by missing structures."""
    import torch
    from monai.metrics import compute_hausdorff_distance

    diagonal = float(np.linalg.norm(np.array(truth.shape) * np.array(spacing)))
    out = {}
    for k, name in labels.items():
        p, t = pred == k, truth == k
        if not p.any() and not t.any():
            out[name] = float("nan")
            continue
        if not p.any() or not t.any():
            out[name] = diagonal
            continue
        value = compute_hausdorff_distance(
            torch.from_numpy(p)[None, None],
            torch.from_numpy(t)[None, None],
            include_background=True,
            percentile=95,
            spacing=list(spacing),
        )
        out[name] = float(value.item())
    return out
