"""What the core's file serving and batch prediction call: a volume in, the label mask (as
NIfTI) and its volumes per label out; and test volumes copied as a user would have them."""

from __future__ import annotations

import shutil
from pathlib import Path

from verticals.core.contract import FileOutput, Splits
from verticals.medical.model import MedicalModel, segment


def predict_path(model: MedicalModel, path: Path) -> FileOutput:
    """Segment the volume (NIfTI file or DICOM series folder) at `path`; the volume's
    intensity and grid figures go along as the statistics the monitor watches."""
    seg = segment(model, path)
    summary = {
        "shape": [int(n) for n in seg.mask.shape],
        "spacing_mm": [round(s, 4) for s in seg.spacing],
        "labels": {str(k): v for k, v in model.labels.items()},
        "volumes_ml": seg.volumes_ml(model.foreground),
    }
    return FileOutput(
        summary, seg.nifti_gz(), ".nii.gz", "application/gzip", statistics=seg.statistics
    )


def example_files(splits: Splits, n: int, directory: Path) -> list[Path]:
    """Copy up to `n` test images (without their labels) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for item in splits.test[:n]:
        target = directory / Path(item["image"]).name
        shutil.copy2(item["image"], target)
        out.append(target)
    return out
