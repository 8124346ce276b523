"""What `/predict` answers for one image (the annotated image travels as a JPEG file)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Detection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defect_class: str = Field(description="the defect's class name")
    confidence: float = Field(ge=0, le=1)
    box: list[float] = Field(
        description="x1, y1, x2, y2 in the image's pixels", min_length=4, max_length=4
    )
    fails: bool = Field(description="whether the confidence reaches the class's fail threshold")


class Inspection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["pass", "fail"]
    failed_classes: list[str] = Field(description="classes with a detection at their threshold")
    n_detections: int
    width: int
    height: int
    detections: list[Detection]
