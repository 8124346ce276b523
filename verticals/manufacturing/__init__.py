"""Manufacturing: visual defect detection with ultralytics YOLO, image in, pass/fail out.

Importing this module is cheap; torch and ultralytics load when the vertical runs, with
the offline settings of `verticals.manufacturing.offline`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from pydantic import BaseModel

from verticals.core.contract import FileOutput, FileVertical, RunContext, Splits
from verticals.manufacturing.dataset import IMAGE_SUFFIXES


class ManufacturingVertical(FileVertical):
    name = "manufacturing"
    title = "Visual defect detection (ultralytics YOLO)"
    headline_metric = "map50"
    input_suffixes = IMAGE_SUFFIXES

    def register_configs(self) -> None:
        from verticals.manufacturing.config import register

        register()

    def load_data(self, cfg: DictConfig) -> Splits:
        from verticals.manufacturing.data import load_splits

        return load_splits(cfg)

    def fit(self, cfg: DictConfig, splits: Splits, ctx: RunContext) -> Any:
        from verticals.manufacturing.training import fit

        return fit(cfg, splits, ctx)

    def evaluate(self, model: Any, data: Any, ctx: RunContext | None = None) -> dict[str, float]:
        from verticals.manufacturing.evaluation import evaluate

        return evaluate(model, data, ctx)

    def save(self, model: Any, directory: Path) -> None:
        from verticals.manufacturing.model import save

        save(model, directory)

    def load(self, directory: Path) -> Any:
        from verticals.manufacturing.model import load

        return load(directory)

    def response_schema(self, model: Any) -> type[BaseModel]:
        from verticals.manufacturing.schema import Inspection

        return Inspection

    def predict_path(self, model: Any, path: Path) -> FileOutput:
        from verticals.manufacturing.model import annotate, read_image

        image = read_image(path)
        report = model.inspect(image)
        return FileOutput(report, annotate(image, report), ".jpg", "image/jpeg")

    def example_files(self, splits: Splits, n: int, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        out = []
        for image in splits.test.images[:n]:
            target = directory / image.name
            shutil.copy2(image, target)
            out.append(target)
        return out

    def describe(self, model: Any, metrics: dict[str, float], splits_info: dict[str, Any]) -> str:
        from verticals.manufacturing.evaluation import describe

        return describe(model, metrics, str(splits_info.get("test_split", "test")))

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
