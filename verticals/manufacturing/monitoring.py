"""Feedback and monitoring for the manufacturing vertical: what the log keeps of each image
(brightness, contrast, size: lighting and camera changes are what breaks a line's model),
the inspector's verdict as the outcome, and the line's decision quality against it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from verticals.manufacturing.evaluation import decision_metrics

if TYPE_CHECKING:
    from verticals.core.contract import Logged
    from verticals.manufacturing.model import DefectModel


def image_statistics(image: np.ndarray) -> dict[str, float]:
    """Brightness (mean grey, 0-255), contrast (grey standard deviation) and size of a
    decoded H x W x 3 RGB image: one OpenCV pass, a fraction of the detector's time."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    mean, std = cv2.meanStdDev(grey)
    return {
        "brightness": round(float(mean[0, 0]), 3),
        "contrast": round(float(std[0, 0]), 3),
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
    }


def check_label_line(line: str, names: tuple[str, ...]) -> str | None:
    """What is wrong with YOLO label line `line` ("class cx cy w h", normalised), or None."""
    fields = line.split()
    if len(fields) != 5:
        return f"has {len(fields)} fields; expected 5: class cx cy w h"
    if not (fields[0].isascii() and fields[0].isdigit()):
        return f"class {fields[0]!r} is not a class number"
    if int(fields[0]) >= len(names):
        listing = ", ".join(f"{i} {name}" for i, name in enumerate(names))
        return f"class {fields[0]} is not one of the model's classes ({listing})"
    for name, text in zip(("cx", "cy", "w", "h"), fields[1:], strict=True):
        try:
            value = float(text)
        except ValueError:
            return f"{name} {text!r} is not a number"
        if not 0.0 <= value <= 1.0:
            return f"{name}={text} is outside [0, 1] (coordinates are fractions of the image)"
    return None


@lru_cache(maxsize=8)
def verdict_schema(names: tuple[str, ...]) -> type[BaseModel]:
    """The inspector's outcome for a model with classes `names`: the boxes are checked
    against its classes, so the schema is built (once) per class list."""
    listing = ", ".join(f"{i} {name}" for i, name in enumerate(names))

    class InspectorVerdict(BaseModel):
        """What the inspector found on the part: the verdict, and optionally the defects as
        YOLO label lines (the next training's labels)."""

        model_config = ConfigDict(extra="forbid")

        verdict: Literal["pass", "fail"] = Field(description="the inspector's decision")
        boxes: list[str] | None = Field(
            default=None,
            description=f"defects as YOLO label lines 'class cx cy w h' (classes: {listing})",
        )

        @field_validator("boxes")
        @classmethod
        def _lines(cls, boxes: list[str] | None) -> list[str] | None:
            for i, line in enumerate(boxes or []):
                problem = check_label_line(line, names)
                if problem:
                    raise ValueError(f"line {i} {line!r}: {problem}")
            return boxes

    return InspectorVerdict


def outcome_schema(model: DefectModel) -> type[BaseModel]:
    return verdict_schema(tuple(model.names))


def max_confidence(entries: list[Logged]) -> list[float]:
    """Each report's most confident detection (0 with none), a column of the monitor frame:
    a detector growing unsure of what it sees shifts it before its decisions change."""
    out = []
    for entry in entries:
        report = entry.outputs if isinstance(entry.outputs, dict) else {}
        confidences = [float(d.get("confidence", 0.0)) for d in report.get("detections") or []]
        out.append(max(confidences, default=0.0))
    return out


def live_metrics(model: DefectModel, entries: list[Logged]) -> dict[str, float]:
    """The test split's decision metrics against the inspector's verdicts: accuracy, escape
    rate (parts passed that the inspector failed, over those failed; left out with no
    failed part) and false reject rate (over the passed; left out with none), and
    `inspected`, how many verdicts they rest on."""
    import pandas as pd

    rows = [
        {"decision": entry.outputs.get("decision"), "defective": entry.outcome["verdict"] == "fail"}
        for entry in entries
        if entry.outcome
        and entry.outcome.get("verdict") in ("pass", "fail")
        and isinstance(entry.outputs, dict)
    ]
    if not rows:
        return {"inspected": 0.0}
    table = pd.DataFrame(rows)
    metrics = decision_metrics(table)
    if not table["defective"].any():
        metrics.pop("escape_rate")
    if table["defective"].all():
        metrics.pop("false_reject_rate")
    metrics["inspected"] = float(len(table))
    return metrics
