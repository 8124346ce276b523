"""Medical imaging: 3D segmentation of CT/MRI volumes with MONAI, served volume in, mask out.

Importing this module is cheap; torch and MONAI load when the vertical runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from pydantic import BaseModel

from verticals.core.contract import FileOutput, FileVertical, RunContext, Splits


class MedicalVertical(FileVertical):
    name = "medical"
    title = "3D medical image segmentation (MONAI)"
    headline_metric = "dice_mean"
    input_suffixes = (".nii.gz", ".nii")

    def register_configs(self) -> None:
        from verticals.medical.config import register

        register()

    def resolve_config(self, cfg: DictConfig) -> DictConfig:
        """`training.resume=<run>` continues that run: its data, split seed and network
        come from its config.yaml; this command's `training.*` (epochs, budget) apply."""
        if not cfg.training.resume:
            return cfg
        from verticals.medical.training import resolved_resume

        return resolved_resume(cfg)

    def load_data(self, cfg: DictConfig) -> Splits:
        from verticals.medical.data import load_splits

        return load_splits(cfg, int(cfg.seed))

    def fit(self, cfg: DictConfig, splits: Splits, ctx: RunContext) -> Any:
        from verticals.medical.training import fit

        return fit(cfg, splits, ctx)

    def evaluate(self, model: Any, data: Any, ctx: RunContext | None = None) -> dict[str, float]:
        from verticals.medical.evaluation import evaluate

        return evaluate(model, data, ctx)

    def save(self, model: Any, directory: Path) -> None:
        from verticals.medical.model import save

        save(model, directory)

    def load(self, directory: Path) -> Any:
        from verticals.medical.model import load

        return load(directory)

    def response_schema(self, model: Any) -> type[BaseModel]:
        from verticals.medical.schema import SegmentationSummary

        return SegmentationSummary

    def predict_path(self, model: Any, path: Path) -> FileOutput:
        from verticals.medical.model import segment

        seg = segment(model, path)
        summary = {
            "shape": [int(n) for n in seg.mask.shape],
            "spacing_mm": [round(s, 4) for s in seg.spacing],
            "labels": {str(k): v for k, v in model.labels.items()},
            "volumes_ml": seg.volumes_ml(model.foreground),
        }
        return FileOutput(summary, seg.nifti_gz(), ".nii.gz", "application/gzip")

    def find_inputs(self, folder: Path) -> list[Path]:
        """NIfTI files, and DICOM series (folders holding .dcm files)."""
        files = super().find_inputs(folder)
        series = sorted({p.parent for p in folder.rglob("*.dcm")})
        return files + series

    def matches(self, path: Path) -> bool:
        return super().matches(path) or (path.is_dir() and any(path.glob("*.dcm")))

    def example_files(self, splits: Splits, n: int, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        out = []
        for item in splits.test[:n]:
            target = directory / Path(item["image"]).name
            shutil.copy2(item["image"], target)
            out.append(target)
        return out

    def describe(self, model: Any, metrics: dict[str, float], splits_info: dict[str, Any]) -> str:
        from verticals.medical.evaluation import describe

        return describe(model, metrics)

    def library_versions(self) -> list[str]:
        return ["torch", "monai", "nibabel", "pydicom", "einops"]
