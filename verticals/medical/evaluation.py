"""Test-set evaluation through the serving path: each test volume is segmented exactly as
`/predict` would (in its own voxel grid), then scored against its label file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from verticals.core.contract import RunContext
from verticals.core.runs import save_figure, write_atomic
from verticals.medical.metrics import dice_per_label, hd95_per_label
from verticals.medical.model import MedicalModel, segment
from verticals.medical.plots import overlays, training_curve

N_OVERLAYS = 3


def per_case(
    model: MedicalModel, items: list[dict[str, str]], keep: int = 0
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """One row of Dice/HD95/volumes per case, and the first `keep` cases' arrays to plot."""
    import nibabel as nib

    rows, kept = [], []
    fg = model.foreground
    for item in tqdm(items, desc="evaluate", unit="case", leave=False):
        seg = segment(model, Path(item["image"]), keep_image=len(kept) < keep)
        truth = np.asarray(nib.load(item["label"]).dataobj).astype(np.int64)
        dice = dice_per_label(seg.mask, truth, fg)
        hd95 = hd95_per_label(seg.mask, truth, fg, seg.spacing)
        true_ml = np.bincount(truth.ravel(), minlength=max(fg) + 1) * seg.voxel_ml
        row: dict[str, Any] = {"case": item["name"]}
        row.update({f"dice_{n}": v for n, v in dice.items()})
        row.update({f"hd95_{n}": v for n, v in hd95.items()})
        row.update({f"ml_pred_{n}": v for n, v in seg.volumes_ml(fg).items()})
        row.update({f"ml_true_{n}": round(float(true_ml[k]), 3) for k, n in fg.items()})
        rows.append(row)
        if seg.image is not None:
            kept.append(
                {"name": item["name"], "image": seg.image, "truth": truth, "pred": seg.mask}
            )
    return pd.DataFrame(rows), kept


def summarise(table: pd.DataFrame, labels: dict[int, str]) -> dict[str, float]:
    names = list(labels.values())
    metrics: dict[str, float] = {}
    for n in names:
        metrics[f"dice_{n}"] = float(table[f"dice_{n}"].mean())  # NaN (absent) skipped
    metrics["dice_mean"] = float(np.nanmean([metrics[f"dice_{n}"] for n in names]))
    for n in names:
        metrics[f"hd95_{n}"] = float(table[f"hd95_{n}"].mean())
    metrics["hd95_mean"] = float(np.nanmean([metrics[f"hd95_{n}"] for n in names]))
    metrics["n_cases"] = float(len(table))
    return metrics


def evaluate(
    model: MedicalModel, items: list[dict[str, str]], ctx: RunContext | None = None
) -> dict[str, float]:
    """Dice and HD95 per label on `items`; with the run's `ctx`, per-case table and plots."""
    table, kept = per_case(model, items, keep=N_OVERLAYS if ctx else 0)
    metrics = summarise(table, model.foreground)
    if ctx is not None:
        write_atomic(ctx.run_dir / "cases.csv", table.to_csv(index=False, float_format="%.4f"))
        if kept:
            save_figure(overlays(kept, model.foreground), ctx.plots_dir / "overlays.png")
        if model.history:
            save_figure(training_curve(model.history), ctx.plots_dir / "training_curve.png")
            history = pd.DataFrame(model.history)
            write_atomic(ctx.run_dir / "history.csv", history.to_csv(index=False))
    return metrics


def describe(model: MedicalModel, metrics: dict[str, float], splits_info: dict[str, Any]) -> str:
    """The model card's network, preprocessing and per-label figures."""
    fg = model.foreground
    rows = "\n".join(
        f"| {n} | {metrics.get(f'dice_{n}', float('nan')):.3f} | "
        f"{metrics.get(f'hd95_{n}', float('nan')):.2f} |"
        for n in fg.values()
    )
    p = model.prep
    window = f"CT window {p['window']}" if p["intensity"] == "window" else "z-score (non-zero)"
    return (
        "## Segmentation\n\n"
        f"- network: {model.net['name']}, patch {model.roi}, labels {dict(model.labels)}\n"
        f"- preprocessing: orientation {p['orientation']}, spacing "
        f"{p['spacing'] or 'native'}, {window}, crop to foreground {p['crop_foreground']}\n"
        "- metrics are computed in each input's own voxel grid, as `/predict` returns masks\n\n"
        f"| label | Dice | HD95 (mm) |\n| --- | --- | --- |\n{rows}\n\n"
        "Per-case metrics and volumes: `cases.csv`; overlays: `plots/overlays.png`.\n"
        "A label absent from a case in both truth and prediction is skipped in the means; a\n"
        "structure missed (or invented) scores Dice 0 and HD95 = the image diagonal."
    )
