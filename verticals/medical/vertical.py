"""The medical vertical as the core drives it: a CT/MRI volume in, a label mask and organ
volumes out. The entry point names this module, so it is imported only when medical runs;
torch and MONAI still load on first use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from verticals.core.contract import FileVertical
from verticals.core.runs import resume_training
from verticals.medical import config, data, evaluation, files, model, schema, training


class MedicalVertical(FileVertical):
    name = "medical"
    title = "3D medical image segmentation (MONAI)"
    headline_metric = "dice_mean"
    input_suffixes = (".nii.gz", ".nii")

    register_configs = staticmethod(config.register)
    resolve_config = staticmethod(resume_training)
    load_data = staticmethod(data.load_splits)
    fit = staticmethod(training.fit)
    evaluate = staticmethod(evaluation.evaluate)
    save = staticmethod(model.save)
    load = staticmethod(model.load)
    predict_path = staticmethod(files.predict_path)
    example_files = staticmethod(files.example_files)
    describe = staticmethod(evaluation.describe)

    def response_schema(self, model: Any) -> type[BaseModel]:
        return schema.SegmentationSummary

    def find_inputs(self, folder: Path) -> list[Path]:
        """NIfTI files, and DICOM series (folders holding .dcm files)."""
        volumes = super().find_inputs(folder)
        series = sorted({p.parent for p in folder.rglob("*.dcm")})
        return volumes + series

    def matches(self, path: Path) -> bool:
        return super().matches(path) or (path.is_dir() and any(path.glob("*.dcm")))

    def library_versions(self) -> list[str]:
        return ["torch", "monai", "nibabel", "pydicom", "einops"]
