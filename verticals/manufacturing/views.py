"""What a quality engineer sees of an inspection on the console: pass or fail in large
type, the part with its boxes and confidences, and the thresholds each class fails at."""

from __future__ import annotations

from typing import Any

from verticals.core.views import Answer, Headline, Note, Picture, Table, View
from verticals.manufacturing.model import DefectModel


def view(model: DefectModel, answer: Answer, controls: dict[str, Any]) -> View:
    summary = answer.body.get("prediction") or {}
    decision = str(summary.get("decision", "?")).upper()
    failed = summary.get("failed_classes") or []
    text = f"{decision}: {', '.join(failed)}" if failed else decision
    panels: list[Any] = [Headline(text, "bad" if decision == "FAIL" else "good")]
    if answer.output is not None:
        panels.append(Picture(answer.output, f"{summary.get('n_detections', 0)} detections"))
    detections = [
        {"class": d["defect_class"], "confidence": round(d["confidence"], 3),
         "fails": d["fails"], "box (x1, y1, x2, y2)": [round(v) for v in d["box"]]}
        for d in summary.get("detections") or []
    ]  # fmt: skip
    if detections:
        panels.append(Table(detections, "detections"))
    else:
        panels.append(Note("No defect found at the reporting level."))
    thresholds = [{"class": name, "fails at confidence": model.threshold(name)}
                  for name in model.names]  # fmt: skip
    panels.append(Table(thresholds, "per-class fail thresholds"))
    return View(panels)
