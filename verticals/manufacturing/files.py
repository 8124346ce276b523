"""What the core's file serving and batch prediction call: one image in, the inspection
report and an annotated JPEG out; and test images copied as a user would have them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from verticals.core.contract import FileOutput, Splits
from verticals.manufacturing.model import MAX_BATCH, DefectModel, annotate, read_image
from verticals.manufacturing.monitoring import image_statistics


def predict_path(model: DefectModel, path: Path) -> FileOutput:
    """Inspect the part in image `path`: pass/fail and detections, and the image boxed; the
    image's brightness, contrast and size go along as the statistics the monitor watches."""
    image = read_image(path)
    report = model.inspect(image)
    return _output(image, report)


def _output(image: np.ndarray, report: dict[str, Any]) -> FileOutput:
    stats = image_statistics(image)
    return FileOutput(report, annotate(image, report), ".jpg", "image/jpeg", statistics=stats)


def predict_paths(model: DefectModel, paths: list[Path]) -> list[FileOutput]:
    """`predict_path` of each of `paths`, the images detected together (a server's
    micro-batch): the same reports and JPEG bytes, since each image's detections do not
    depend on the others (`DefectModel.detect_many`). An unreadable file raises before any
    detection, so the server's one-by-one retry pays for no wasted work."""
    out: list[FileOutput] = []
    for start in range(0, len(paths), MAX_BATCH):  # at most MAX_BATCH decoded images held
        images = [read_image(path) for path in paths[start : start + MAX_BATCH]]
        reports = model.inspect_many(images)
        out += [_output(image, report) for image, report in zip(images, reports, strict=True)]
    return out


def example_files(splits: Splits, n: int, directory: Path) -> list[Path]:
    """Copy up to `n` test images into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for image in splits.test.images[:n]:
        target = directory / image.name
        shutil.copy2(image, target)
        out.append(target)
    return out
