"""Structured configs (Hydra ConfigStore schemas) for the manufacturing vertical.

`training.*` keys are ultralytics' own train arguments under their own names, so
`training.mosaic=0 training.close_mosaic=5` means what ultralytics' documentation says it
means; `training.extra` passes any other ultralytics argument through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from verticals.core.config import store_schema


@dataclass
class ManufacturingDataConfig:
    """Where the labelled images come from and how they are split."""

    source: str = "synthetic"  # synthetic | yolo | voc
    yaml: str | None = None  # yolo: the data.yaml (train/val[/test] image folders, names)
    root: str | None = None  # voc: the folder holding images and Pascal VOC .xml files
    images_dir: str | None = None  # voc: image folder under root (null: JPEGImages|IMAGES|images)
    annotations_dir: str | None = None  # voc: xml folder (null: Annotations|ANNOTATIONS|...)
    classes: list[str] | None = None  # voc: class order (null: the names found, sorted)
    val_fraction: float = 0.15  # voc: share of images held out for validation
    test_fraction: float = 0.15  # voc: share held out for the final test
    max_images: int | None = None  # voc: use only N images (quick looks)
    # synthetic surfaces with planted defects
    n_train: int = 192
    n_val: int = 48
    n_test: int = 48
    image_size: int = 128
    max_defects: int = 3
    defect_free: float = 0.2  # share of images without any defect


@dataclass
class DetectorConfig:
    """The YOLO network: built from ultralytics' model yaml, trained from scratch by default."""

    arch: str = "yolov8"  # yolov8 | yolo11 | yolo26 ... (ultralytics' model yaml family)
    scale: str = "n"  # n | s | m | l | x
    cfg: str | None = None  # a model yaml of your own (overrides arch and scale)
    weights: str | None = None  # local .pt to start from; an official name needs download=true
    download: bool = False  # allow fetching official weights by name (off: air-gapped lines)


@dataclass
class DetectorTrainingConfig:
    """ultralytics train arguments (same names, same meaning)."""

    epochs: int = 30
    time: float | None = None  # hours; overrides epochs when set (ultralytics' own budget)
    patience: int = 100
    batch: int = 16
    imgsz: int | None = None  # null: the data's image size (synthetic), else 640
    optimizer: str = "auto"
    lr0: float = 0.01
    lrf: float = 0.01
    weight_decay: float = 0.0005
    warmup_epochs: float = 3.0
    cos_lr: bool = False
    close_mosaic: int = 10
    cache: Any = False  # false | ram | disk
    workers: int = 2
    # augmentation
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    degrees: float = 0.0
    translate: float = 0.1
    scale: float = 0.5
    fliplr: float = 0.5
    flipud: float = 0.0
    mosaic: float = 1.0
    mixup: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # any other ultralytics train argument


@dataclass
class InspectionConfig:
    """How detections become a pass/fail decision on the line."""

    conf: float = 0.25  # detections below this confidence are not reported
    iou: float = 0.7  # non-maximum suppression IoU
    max_det: int = 100
    fail_threshold: float = 0.5  # a detection at or above this confidence fails the part
    thresholds: dict[str, float] = field(default_factory=dict)  # per-class fail thresholds
    runtime: str = "onnxruntime"  # what serves the bundle: onnxruntime (model.onnx) | torch


def register() -> None:
    store_schema("data", ManufacturingDataConfig, name="manufacturing_schema")
    store_schema("model", DetectorConfig, name="manufacturing_schema")
    store_schema("training", DetectorTrainingConfig, name="manufacturing_schema")
    store_schema("inspection", InspectionConfig, name="manufacturing_schema")
