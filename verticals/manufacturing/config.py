"""Structured configs (Hydra ConfigStore schemas) for the manufacturing vertical.

`training.*` keys are ultralytics' own train arguments under their own names, so
`training.mosaic=0 training.close_mosaic=5` means what ultralytics' documentation says it
means; `training.extra` passes any other ultralytics argument through unchanged.

The defaults live here; the YAML options in conf/manufacturing/ list only what differs.
Settings that take one of a few words are enums (a typo fails while composing), and ranges
are checked in `__post_init__` (see `verticals.core.config.check_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from verticals.core.config import ConfigValueError, check_range, check_ranges, store_schema


class ManufacturingSource(StrEnum):
    synthetic = "synthetic"  # textured surfaces with planted defects, exact boxes
    yolo = "yolo"  # your YOLO-format data set (data.yaml)
    voc = "voc"  # images with Pascal VOC .xml boxes (e.g. NEU-DET)


class Scale(StrEnum):
    """ultralytics' model sizes, smallest first."""

    n = "n"
    s = "s"
    m = "m"
    l = "l"  # noqa: E741 - ultralytics' own name for the size
    x = "x"


class Optimizer(StrEnum):
    """ultralytics' optimizers (`auto` picks one and its learning rate itself)."""

    auto = "auto"
    SGD = "SGD"
    MuSGD = "MuSGD"
    Adam = "Adam"
    Adamax = "Adamax"
    AdamW = "AdamW"
    NAdam = "NAdam"
    RAdam = "RAdam"
    RMSprop = "RMSprop"
    RMSProp = "RMSprop"  # the spelling of ultralytics' documentation


class Runtime(StrEnum):
    """What serves the bundle."""

    onnxruntime = "onnxruntime"  # model.onnx, the inference box's usual engine
    torch = "torch"


@dataclass
class ManufacturingDataConfig:
    """Where the labelled images come from and how they are split."""

    source: ManufacturingSource = ManufacturingSource.synthetic
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
    image_size: int = 128  # a multiple of 32, YOLO's stride
    max_defects: int = 3
    defect_free: float = 0.2  # share of images without any defect

    def __post_init__(self) -> None:
        check_ranges(self, "val_fraction test_fraction", ge=0, lt=1)
        check_ranges(self, "max_images n_train n_val n_test max_defects", ge=1)
        check_range(self, "image_size", ge=32)
        check_range(self, "defect_free", ge=0, le=1)


@dataclass
class DetectorConfig:
    """The YOLO network: built from ultralytics' model yaml, trained from scratch by default.
    model.arch=yolo11 model.scale=s is a bigger, newer network; model.weights=<local .pt>
    starts from weights (matching layers)."""

    arch: str = "yolov8"  # yolov8 | yolo11 | yolo26 ... (ultralytics' model yaml family)
    scale: Scale = Scale.n
    cfg: str | None = None  # a model yaml of your own (overrides arch and scale)
    weights: str | None = None  # local .pt to start from; an official name needs download=true
    download: bool = False  # allow fetching official weights by name (off: air-gapped lines)
    # onnxslim on the served ONNX export: about 4 s per package on 2 cores; a one-image call
    # in ONNX Runtime took 2.3 ms against 2.7 unsimplified (a 96-px yolov8n, measured once)
    onnx_simplify: bool = True


@dataclass
class DetectorTrainingConfig:
    """ultralytics train arguments (same names, same meaning), plus `cpu_minutes`."""

    epochs: int = 30
    time: float | None = None  # hours; overrides epochs when set (ultralytics' own budget)
    # On a CPU, with no `time` set, training stops after this many minutes (ultralytics'
    # `time`, which re-plans the epochs and the learning-rate schedule to fit), so the default
    # recipe finishes on a laptop; null trains all `epochs` there too.
    cpu_minutes: float | None = 3.0
    patience: int = 100
    batch: int = 16  # -1: ultralytics' AutoBatch (CUDA only)
    imgsz: int | None = None  # null: the data's image size (synthetic), else 640
    optimizer: Optimizer = Optimizer.auto
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
    # ultralytics' own training figures in the run's train/ folder (labels, batches, results,
    # the last validation's curves); the run's plots/ come from the test split either way
    plots: bool = True
    # any other ultralytics train argument: training.extra={dropout: 0.1, multi_scale: true}
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_range(self, "epochs", ge=1)
        check_ranges(self, "time cpu_minutes", gt=0)
        check_ranges(self, "patience close_mosaic workers warmup_epochs scale", ge=0)
        check_range(self, "imgsz", ge=32)
        check_ranges(self, "lr0 lrf", gt=0, le=1)
        check_ranges(self, "weight_decay hsv_h hsv_s hsv_v translate", ge=0, le=1)
        check_ranges(self, "fliplr flipud mosaic mixup", ge=0, le=1)
        check_range(self, "degrees", ge=-180, le=180)
        if self.batch != -1:
            check_range(self, "batch", ge=1)
        if self.cache not in (False, True, "ram", "disk"):
            raise ConfigValueError("cache", self.cache, "false, ram or disk")


@dataclass
class InspectionConfig:
    """How detections become a pass/fail decision on the line: a part fails when any
    defect reaches its class's threshold."""

    conf: float = 0.25  # detections below this confidence are not reported
    iou: float = 0.7  # non-maximum suppression IoU
    max_det: int = 100
    fail_threshold: float = 0.5  # a detection at or above this confidence fails the part
    # per-class fail thresholds: {crack: 0.3, spot: 0.7} is stricter on cracks, laxer on stains
    thresholds: dict[str, float] = field(default_factory=dict)
    runtime: Runtime = Runtime.onnxruntime

    def __post_init__(self) -> None:
        check_ranges(self, "conf iou fail_threshold", ge=0, le=1)
        check_range(self, "max_det", ge=1)
        for name, value in self.thresholds.items():
            if not 0 <= value <= 1:
                raise ConfigValueError(f"thresholds.{name}", value, "a number >= 0 and <= 1")


def register() -> None:
    store_schema("data", ManufacturingDataConfig, name="manufacturing_schema")
    store_schema("model", DetectorConfig, name="manufacturing_schema")
    store_schema("training", DetectorTrainingConfig, name="manufacturing_schema")
    store_schema("inspection", InspectionConfig, name="manufacturing_schema")
