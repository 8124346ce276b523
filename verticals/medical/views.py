"""What a radiologist sees of a segmentation on the console: the scan with the mask over
it, one slice at a time along a chosen axis, each structure in its legend colour; the
volume of each structure in mL; the mask to download."""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure as MplFigure
from matplotlib.patches import Patch

from verticals.core.views import (
    Answer,
    Choice,
    Download,
    Figure,
    Headline,
    Note,
    Slider,
    Table,
    View,
)
from verticals.medical.plots import COLOURS, label_cmap

#: The array axis each viewing plane steps along (NIfTI's RAS-like voxel order).
AXES = {"axial": 2, "coronal": 1, "sagittal": 0}
CONTROLS = (
    Choice("axis", "plane", list(AXES), "axial"),
    Slider("slice", "slice", 0, 1, 0),
)


def view(model: Any, answer: Answer, controls: dict[str, Any]) -> View:
    summary = answer.body.get("prediction") or {}
    labels = {int(k): str(v) for k, v in (summary.get("labels") or {}).items()}
    volumes = summary.get("volumes_ml") or {}
    total = sum(float(v) for v in volumes.values())
    panels: list[Any] = [Headline(f"{total:.2f} mL segmented in {len(volumes)} structures")]
    if answer.output is None:
        return View([*panels, Note("The answer carries no mask to show.")])
    mask = _mask(answer.output)
    image = _image(str(answer.upload)) if answer.upload is not None else None
    if image is None and answer.upload is not None:
        panels.append(Note("A DICOM series: the mask is drawn alone (a NIfTI upload shows the "
                           "scan under it)."))  # fmt: skip
    if image is not None and image.shape != mask.shape:
        panels.append(Note(f"The scan's grid {image.shape} is not the mask's {mask.shape}: "
                           "the mask is shown alone."))  # fmt: skip
        image = None
    plane = controls.get("axis") if controls.get("axis") in AXES else "axial"
    axis = AXES[plane]
    count = mask.shape[axis]
    index = controls.get("slice")
    if index is None or not 0 <= int(index) < count:  # a new answer: the fullest slice
        filled = (mask > 0).sum(axis=tuple(a for a in range(3) if a != axis))
        index = int(np.argmax(filled)) if filled.any() else count // 2
    index = int(index)
    panels.append(Figure(_slice(image, mask, axis, index, labels), f"{plane} slice {index}"))
    panels.append(Table([{"structure": name, "volume (mL)": volumes.get(name)}
                         for name in labels.values() if name in volumes], "volumes"))  # fmt: skip
    panels.append(Download(answer.output_name or "mask.nii.gz", answer.output))
    return View(panels, controls={"slice": {"maximum": count - 1, "value": index}})


def _slice(image: np.ndarray | None, mask: np.ndarray, axis: int, index: int,
           labels: dict[int, str]) -> MplFigure:  # fmt: skip
    figure = MplFigure(figsize=(5.5, 5.5), layout="constrained")
    axes = figure.subplots()
    if image is not None:
        plane = np.take(image, index, axis=axis)
        lo, hi = np.percentile(image, [1, 99])
        axes.imshow(plane.T, cmap="gray", origin="lower", vmin=lo, vmax=hi)
    top = max(labels) if labels else int(mask.max()) or 1
    axes.imshow(np.take(mask, index, axis=axis).T, cmap=label_cmap(top), vmin=0, vmax=top,
                alpha=0.45, origin="lower", interpolation="nearest")  # fmt: skip
    axes.axis("off")
    handles = [Patch(color=COLOURS[(k - 1) % len(COLOURS)], label=name)
               for k, name in labels.items() if k > 0]  # fmt: skip
    if handles:
        figure.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    return figure


@lru_cache(maxsize=4)
def _image(path: str) -> np.ndarray | None:
    """The uploaded scan's voxels (its first channel), kept for the next slice; None for a
    DICOM series (a zip): its mask is shown alone."""
    import nibabel as nib

    if not Path(path).is_file() or not path.lower().endswith((".nii", ".nii.gz")):
        return None
    data = np.asanyarray(nib.load(path).dataobj, dtype=np.float32)
    return data[..., 0] if data.ndim == 4 else data


def _mask(content: bytes) -> np.ndarray:
    return _mask_of(gzip.decompress(content) if content[:2] == b"\x1f\x8b" else content)


@lru_cache(maxsize=4)
def _mask_of(raw: bytes) -> np.ndarray:
    import nibabel as nib

    return np.asanyarray(nib.Nifti1Image.from_bytes(raw).dataobj).astype(np.int16)
