"""The manufacturing vertical as the core drives it: a part's image in, pass/fail, the
detections and an annotated image out. The entry point names this module, so it is
imported only when manufacturing runs; torch and ultralytics still load on first use, with
the offline settings of `verticals.manufacturing.offline`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from verticals.core.contract import FileVertical, Logged
from verticals.core.holdout import input_key
from verticals.manufacturing import (
    config,
    data,
    evaluation,
    files,
    model,
    monitoring,
    retraining,
    schema,
    training,
    views,
)
from verticals.manufacturing.dataset import IMAGE_SUFFIXES

if TYPE_CHECKING:
    import pandas as pd


class ManufacturingVertical(FileVertical):
    name = "manufacturing"
    title = "Visual defect detection (ultralytics YOLO)"
    headline_metric = "map50"
    scale_out = "node"  # cluster=: ultralytics' own multi-GPU DDP inside one Ray task
    input_suffixes = IMAGE_SUFFIXES

    register_configs = staticmethod(config.register)
    load_data = staticmethod(data.load_splits)
    fit = staticmethod(training.fit)
    evaluate = staticmethod(evaluation.evaluate)
    save = staticmethod(model.save)
    load = staticmethod(model.load)
    predict_path = staticmethod(files.predict_path)
    predict_paths = staticmethod(files.predict_paths)
    example_files = staticmethod(files.example_files)
    describe = staticmethod(evaluation.describe)
    outcome_schema = staticmethod(monitoring.outcome_schema)
    live_metrics = staticmethod(monitoring.live_metrics)
    learn_from = staticmethod(retraining.learn_from)
    extend_holdout = staticmethod(retraining.extend_holdout)
    save_holdout = staticmethod(retraining.save_holdout)
    load_holdout = staticmethod(retraining.load_holdout)
    score_cases = staticmethod(retraining.score_cases)
    case_keys = staticmethod(retraining.case_keys)
    entry_keys = staticmethod(input_key)
    view = staticmethod(views.view)

    def response_schema(self, model: Any) -> type[BaseModel]:
        return schema.Inspection

    def monitor_frame(self, model: Any, entries: list[Logged]) -> pd.DataFrame:
        """The default (image statistics, decision, n_detections, width, height) plus
        `max_confidence`. No 0/1 `fails`: `decision` already is that, as a category mix."""
        frame = super().monitor_frame(model, entries)
        frame["max_confidence"] = monitoring.max_confidence(entries)
        return frame

    def batches_well(self, model: Any) -> bool:
        return model.batches_well()

    def library_versions(self) -> list[str]:
        return [
            "torch",
            "torchvision",
            "ultralytics",
            "onnx",
            "onnxruntime",
            "pillow",
            "opencv-python",
        ]
