"""What `/predict` answers for one volume (the mask itself travels as a NIfTI file)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SegmentationSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shape: list[int] = Field(description="voxels per axis of the input (and of the mask)")
    spacing_mm: list[float] = Field(description="voxel size of the input in mm")
    labels: dict[str, str] = Field(description="mask value -> structure name")
    volumes_ml: dict[str, float] = Field(description="segmented volume per structure, in mL")
