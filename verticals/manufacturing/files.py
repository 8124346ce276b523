"""What the core's file serving and batch prediction call: one image in, the inspection
report and an annotated JPEG out; and test images copied as a user would have them."""

from __future__ import annotations

import shutil
from pathlib import Path

from verticals.core.contract import FileOutput, Splits
from verticals.manufacturing.model import DefectModel, annotate, read_image


def predict_path(model: DefectModel, path: Path) -> FileOutput:
    """Inspect the part in image `path`: pass/fail and detections, and the image boxed."""
    image = read_image(path)
    report = model.inspect(image)
    return FileOutput(report, annotate(image, report), ".jpg", "image/jpeg")


def example_files(splits: Splits, n: int, directory: Path) -> list[Path]:
    """Copy up to `n` test images into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for image in splits.test.images[:n]:
        target = directory / image.name
        shutil.copy2(image, target)
        out.append(target)
    return out
