"""Test-set evaluation: ultralytics' detection metrics per class, and the line's view of
the same images (pass/fail through `inspect`, the path `/predict` takes)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from verticals.core.contract import RunContext
from verticals.core.runs import save_figure, write_atomic
from verticals.manufacturing.dataset import ImageSet, label_path, read_boxes
from verticals.manufacturing.model import BOX_TOLERANCE_PX, CONF_TOLERANCE, DefectModel, read_image
from verticals.manufacturing.plots import detections_grid, per_class_bars, training_curve

#: ultralytics' validation figures worth keeping beside the model card.
_FIGURES = ("BoxPR_curve.png", "BoxF1_curve.png", "confusion_matrix_normalized.png",
            "confusion_matrix.png", "val_batch0_pred.jpg")  # fmt: skip
N_SHOWN = 12


def detection_metrics(
    model: DefectModel, data: ImageSet, out: Path, plots: bool
) -> dict[str, float]:
    """mAP50, mAP50-95, precision and recall, overall and per class (ultralytics' val)."""
    net = model.network("torch")
    result = net.val(
        data=str(data.yaml), split=data.split, imgsz=model.imgsz, batch=16,
        device=0 if model.device == "cuda" else "cpu", plots=plots,
        project=str(out.parent), name=out.name, exist_ok=True, verbose=False,
    )  # fmt: skip
    box = result.box
    metrics = {
        "map50": float(box.map50),
        "map50_95": float(box.map),
        "precision": float(box.mp),
        "recall": float(box.mr),
    }
    for i, cls in enumerate(result.ap_class_index):
        name = model.names[int(cls)]
        p, r, ap50, ap = box.class_result(i)
        metrics.update({f"ap50/{name}": float(ap50), f"ap50_95/{name}": float(ap),
                        f"precision/{name}": float(p), f"recall/{name}": float(r)})  # fmt: skip
    return metrics


def inspections(model: DefectModel, data: ImageSet, keep: int = 0) -> tuple[pd.DataFrame, list]:
    """One row per test image: the decision against the truth (any labelled defect)."""
    rows, kept = [], []
    for path in tqdm(data.images, desc="inspect", unit="img", leave=False):
        image = read_image(path)
        report = model.inspect(image)
        truth = [(model.names[c], *box) for c, *box in read_boxes(label_path(path))]
        rows.append({
            "image": path.name,
            "defective": bool(truth),
            "decision": report["decision"],
            "n_true": len(truth),
            "n_detected": report["n_detections"],
            "failed_classes": ";".join(report["failed_classes"]),
        })  # fmt: skip
        if len(kept) < keep:
            kept.append({"name": path.name, "image": image, "truth": truth, "report": report})
    return pd.DataFrame(rows), kept


def decision_metrics(table: pd.DataFrame) -> dict[str, float]:
    """How often the line's decision is right, and the two ways it is wrong."""
    fail = table["decision"] == "fail"
    bad = table["defective"]
    return {
        "decision_accuracy": float((fail == bad).mean()),
        "escape_rate": float((~fail & bad).sum() / max(int(bad.sum()), 1)),  # bad parts passed
        "false_reject_rate": float((fail & ~bad).sum() / max(int((~bad).sum()), 1)),
    }


def evaluate(model: DefectModel, data: ImageSet, ctx: RunContext | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="verticals-val-") as tmp:
        out = Path(tmp) / "val"
        metrics = detection_metrics(model, data, out, plots=ctx is not None)
        if ctx is not None:
            for name in _FIGURES:
                if (out / name).is_file():
                    shutil.copy2(out / name, ctx.plots_dir / name)
    table, kept = inspections(model, data, keep=N_SHOWN if ctx else 0)
    overall = ("map50", "map50_95", "precision", "recall")
    metrics = {
        **{k: metrics[k] for k in overall},
        **decision_metrics(table),
        "n_images": float(len(table)),
        **{k: v for k, v in metrics.items() if k not in overall},
    }
    if ctx is not None:
        write_atomic(ctx.run_dir / "inspections.csv", table.to_csv(index=False))
        save_figure(detections_grid(kept), ctx.plots_dir / "detections.png")
        save_figure(per_class_bars(metrics, model.names), ctx.plots_dir / "per_class.png")
        history = ctx.run_dir / "history.csv"
        if history.is_file():
            frame = pd.read_csv(history)
            frame.columns = [c.strip() for c in frame.columns]
            save_figure(training_curve(frame), ctx.plots_dir / "training_curve.png")
    return metrics


def describe(model: DefectModel, metrics: dict[str, float], splits_info: dict[str, Any]) -> str:
    """Per-class figures, the pass/fail rule and how the bundle serves, for the model card;
    `splits_info["test_split"]` says whether the figures come from a real test split."""
    test_split = str(splits_info.get("test_split", "test"))
    rows = []
    for name in model.names:
        if f"ap50/{name}" in metrics:
            rows.append(
                f"| {name} | {metrics[f'ap50/{name}']:.3f} | {metrics[f'ap50_95/{name}']:.3f} | "
                f"{metrics[f'precision/{name}']:.3f} | {metrics[f'recall/{name}']:.3f} | "
                f"{model.threshold(name):.2f} |"
            )
        else:
            rows.append(f"| {name} | not in the test split | | | | {model.threshold(name):.2f} |")
    table = "\n".join(rows)
    caveat = (
        "\n\nThe data set has no test split: these figures are on the validation split, "
        "which also chose the best epoch, so they are optimistic."
        if test_split != "test"
        else ""
    )
    runtime = model.inspection.get("runtime", "onnxruntime")
    served = "ONNX Runtime" if runtime == "onnxruntime" else "PyTorch"
    return f"""## Defect classes{caveat}

| class | AP50 | AP50-95 | precision | recall | fail threshold |
| --- | --- | --- | --- | --- | --- |
{table}

## Pass/fail

A part fails when any detection reaches its class's threshold (`inspection.thresholds`,
else `inspection.fail_threshold`); detections from confidence {model.inspection["conf"]}
are reported. On the test images the decision was right for
{metrics.get("decision_accuracy", np.nan):.1%} of parts; {metrics.get("escape_rate", np.nan):.1%}
of defective parts passed (escapes) and {metrics.get("false_reject_rate", np.nan):.1%} of good
parts failed (false rejects). Per image: `inspections.csv`.

## Serving

The bundle holds `model.pt` (PyTorch) and `model.onnx` (Nx3x{model.imgsz}x{model.imgsz}: a
batch of images per call, as a server micro-batches uploads);
{served} serves it (`inspection.runtime`). Both give the same detections within
{BOX_TOLERANCE_PX:g} px and {CONF_TOLERANCE:g} confidence. Metrics above come from the PyTorch
weights (ultralytics' val, image size {model.imgsz}).

## Licence

This model is trained and served with ultralytics, which is AGPL-3.0 (the suite itself is
Apache-2.0). Serving it over a network to people outside your organisation conveys the
program under the AGPL: offer those users the complete source of the service, your changes
included, under the AGPL, or hold a commercial licence from Ultralytics. The bundle's
`LICENSES.md` lists the licence of every library it installs.
"""
