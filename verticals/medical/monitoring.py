"""Feedback and monitoring for the medical vertical: what the log keeps of each volume (its
intensity and grid), corrected masks as outcomes, and Dice against them in production.

A radiologist's correction is the mask itself, so the outcome travels as a file (checked
against the logged prediction's grid here) and the JSON part carries at most a note.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from verticals.core.errors import UserError
from verticals.medical.metrics import dice_per_label

if TYPE_CHECKING:
    from verticals.core.contract import Logged
    from verticals.medical.model import MedicalModel

log = logging.getLogger(__name__)

#: Percentiles are taken on at most this many voxels (an even stride through the volume):
#: a 512x512x300 CT holds 79M, and a full partition of them costs about a second.
PERCENTILE_SAMPLE = 1 << 20
#: Relative difference of voxel sizes (mm) up to which a mask counts as in the input's grid:
#: headers written by other tools round spacings.
SPACING_TOLERANCE = 1e-3


class MaskFeedback(BaseModel):
    """The JSON part of a correction: the corrected mask itself is the uploaded file."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, description="the reader's remark on the case")


def volume_statistics(image: np.ndarray, spacing: list[float]) -> dict[str, float]:
    """Intensity and grid figures of a loaded volume (C, X, Y, Z), which drift when the
    scanner, protocol or reconstruction changes. Channel 0 gives `intensity_*`; further
    channels (other MRI sequences) `intensity_*_c<k>`."""
    stats: dict[str, float] = {}
    for channel in range(image.shape[0]):
        values = np.asarray(image[channel]).ravel()
        sample = values[:: max(1, values.size // PERCENTILE_SAMPLE)]
        p1, p99 = np.nanpercentile(sample, [1, 99])
        suffix = f"_c{channel}" if channel else ""
        stats[f"intensity_mean{suffix}"] = round(float(np.nanmean(values, dtype=np.float64)), 4)
        stats[f"intensity_std{suffix}"] = round(float(np.nanstd(values, dtype=np.float64)), 4)
        stats[f"intensity_p1{suffix}"] = round(float(p1), 4)
        stats[f"intensity_p99{suffix}"] = round(float(p99), 4)
    for axis, size in zip("xyz", spacing, strict=False):
        stats[f"spacing_{axis}"] = round(float(size), 4)
    stats["voxels"] = float(np.prod(image.shape[1:]))
    return stats


def read_mask(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI label map (gzipped or not) as (integer array X x Y x Z, affine), read as
    `predict_path` writes masks (nibabel, voxel order as stored). Read by its
    content, not its name: the feedback store may keep uploads under names of its own."""
    try:
        raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        image = _nifti(raw)
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises many types on a file that is not NIfTI
        text = str(exc).strip()
        reason = text.splitlines()[0][:300] if text else type(exc).__name__
        raise UserError(f"{Path(path).name} cannot be read as a NIfTI mask: {reason}") from None
    while data.ndim > 3 and data.shape[-1] == 1:  # (X, Y, Z, 1) from some tools
        data = data[..., 0]
    if data.ndim != 3:
        raise UserError(f"the mask is {data.ndim}-D of shape {list(data.shape)}; expected 3-D")
    if not np.issubdtype(data.dtype, np.integer):  # float masks: whole numbers only
        if not np.array_equal(np.rint(data), data):
            raise UserError("the mask holds non-integer values; expected label numbers")
        data = data.astype(np.int64)
    return data, np.asarray(image.affine, dtype=float)


def _nifti(raw: bytes) -> Any:
    import nibabel as nib

    try:
        return nib.Nifti1Image.from_bytes(raw)
    except Exception:  # a NIfTI-2 header fails NIfTI-1's checks: try it as that
        return nib.Nifti2Image.from_bytes(raw)


def _labels(summary: dict[str, Any]) -> dict[int, str]:
    return {int(k): str(v) for k, v in (summary.get("labels") or {}).items()}


def check_outcome_file(path: Path, entry: Logged) -> None:
    """Refuse a corrected mask that is not a label map of this prediction's volume: another
    grid (shape, voxel size) or label values the model does not know."""
    summary = entry.outputs if isinstance(entry.outputs, dict) else {}
    mask, affine = read_mask(path)
    expected = [int(n) for n in summary.get("shape") or []]
    if expected and list(mask.shape) != expected:
        raise UserError(
            f"the mask has shape {list(mask.shape)}; expected {expected}, the input's grid"
        )
    spacing = [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)]
    logged = [float(v) for v in summary.get("spacing_mm") or []]
    if logged and not np.allclose(spacing, logged, rtol=SPACING_TOLERANCE, atol=1e-4):
        got = [round(v, 4) for v in spacing]
        raise UserError(f"the mask has voxel size {got} mm; expected {logged}, the input's")
    labels = _labels(summary)
    if labels:
        unknown = sorted(set(np.unique(mask).tolist()) - set(labels))
        if unknown:
            known = ", ".join(f"{k} ({name})" for k, name in sorted(labels.items()))
            raise UserError(f"the mask holds label values {unknown}; expected values among {known}")


def volume_columns(model: MedicalModel, entries: list[Logged]) -> dict[str, list[float]]:
    """`volume_ml.<label>` per structure, columns of the monitor frame: a shift in the
    segmented volumes is what a failing model shows first (NaN where a summary lacks one)."""
    columns: dict[str, list[float]] = {f"volume_ml.{n}": [] for n in model.foreground.values()}
    for entry in entries:
        summary = entry.outputs if isinstance(entry.outputs, dict) else {}
        volumes = summary.get("volumes_ml") or {}
        for name in model.foreground.values():
            value = volumes.get(name)
            number = float(value) if isinstance(value, int | float) else float("nan")
            columns[f"volume_ml.{name}"].append(number)
    return columns


def live_metrics(model: MedicalModel, entries: list[Logged]) -> dict[str, float]:
    """Dice per structure and their mean (`dice_<label>`, `dice_mean`, as in the test
    metrics) of the predicted masks against the corrected ones, and `corrected_cases`. A
    structure absent from every prediction and correction has no Dice and is left out."""
    per_label: dict[str, list[float]] = {n: [] for n in model.foreground.values()}
    cases = 0
    for entry in entries:
        predicted, corrected = entry.files.get("output"), entry.files.get("outcome")
        if predicted is None or corrected is None:
            continue
        pred, _ = read_mask(predicted)
        truth, _ = read_mask(corrected)
        if pred.shape != truth.shape:  # `check_outcome_file` refuses these; old logs aside
            log.warning("%s: corrected mask %s != predicted %s", entry.request_id,
                        list(truth.shape), list(pred.shape))  # fmt: skip
            continue
        cases += 1
        for name, value in dice_per_label(pred, truth, model.foreground).items():
            if not np.isnan(value):
                per_label[name].append(value)
    metrics = {f"dice_{n}": float(np.mean(v)) for n, v in per_label.items() if v}
    if metrics:
        metrics["dice_mean"] = float(np.mean(list(metrics.values())))
    metrics["corrected_cases"] = float(cases)
    return metrics
