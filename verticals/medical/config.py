"""Structured configs (Hydra ConfigStore schemas) for the medical imaging vertical.

The defaults live here; the YAML options in conf/medical/ list only what differs. Settings
that take one of a few words are `StrEnum`s (a typo fails while composing), and ranges are
checked in `__post_init__` (see `verticals.core.config.check_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from verticals.core.config import ConfigValueError, check_range, check_ranges, store_schema


class MedicalSource(StrEnum):
    synthetic = "synthetic"  # CT-like phantoms with planted structures
    decathlon = "decathlon"  # a Medical Segmentation Decathlon task folder


class Intensity(StrEnum):
    auto = "auto"  # CT window for CT, z-score otherwise
    window = "window"  # clip to data.window (HU) and scale to [0, 1]
    zscore = "zscore"  # z-score over non-zero voxels


class Cache(StrEnum):
    memory = "memory"  # CacheDataset: preprocessed volumes in RAM
    disk = "disk"  # PersistentDataset under paths.cache_dir
    none = "none"  # preprocess on every epoch


class NetworkName(StrEnum):
    unet = "unet"
    segresnet = "segresnet"
    swinunetr = "swinunetr"


class Norm(StrEnum):
    """MONAI norm layers that need no extra arguments (UNet, SwinUNETR)."""

    instance = "instance"
    batch = "batch"


_AXES = ("LR", "AP", "SI")


def _check_list(name: str, value: list | None, length: int | None, minimum: float) -> None:
    """A list of `length` numbers of at least `minimum` (None passes)."""
    if value is None:
        return
    sized = length is None or len(value) == length
    if not sized or not all(isinstance(v, int | float) and v >= minimum for v in value):
        count = f"{length} numbers" if length else "numbers"
        raise ConfigValueError(name, list(value), f"{count}, each at least {minimum:g}")


@dataclass
class MedicalDataConfig:
    """Where the volumes come from, how they are split, and the preprocessing recipe."""

    source: MedicalSource = MedicalSource.synthetic
    root: str | None = None  # decathlon: the task folder that holds dataset.json
    # synthetic phantoms (CT-like, in HU): count, size in voxels, voxel spacing in mm
    n_cases: int = 24
    shape: list[int] = field(default_factory=lambda: [64, 64, 64])
    voxel_mm: float = 1.5
    max_cases: int | None = None  # use only the first N labelled cases (quick looks)
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    # preprocessing (also applied when predicting, and inverted on the way out)
    orientation: str = "RAS"  # one letter of each pair L/R, A/P, S/I
    spacing: list[float] | None = None  # resample to this voxel size in mm; null keeps native
    intensity: Intensity = Intensity.auto
    window: list[float] = field(default_factory=lambda: [-175.0, 250.0])  # CT window, HU
    crop_foreground: bool = True
    # patches: null plans them from the data (median cropped shape, multiple of 16, capped)
    roi_size: list[int] | None = None
    roi_max: int = 128
    samples_per_volume: int = 2  # random patches drawn per volume and epoch
    pos_fraction: float = 0.67  # of patches centred on a labelled voxel
    augment: bool = True  # flips and intensity jitter
    # with augment: chance of a small rotation + zoom per patch. Off by default: in 8 CPU
    # minutes on Hippocampus, 0.2 gave Dice 0.866/0.850 against 0.870/0.853 without.
    affine_prob: float = 0.0
    cache: Cache = Cache.memory
    # loader threads for the random transforms; above 2, patches are drawn in an order that
    # varies between runs (threads share MONAI's random state), so runs are not repeatable
    num_workers: int = 2

    def __post_init__(self) -> None:
        check_range(self, "n_cases", ge=3)
        check_range(self, "max_cases", ge=3)
        check_range(self, "voxel_mm", gt=0)
        check_ranges(self, "val_fraction test_fraction", gt=0, lt=0.5)
        check_range(self, "roi_max", ge=16)
        check_range(self, "samples_per_volume", ge=1)
        check_ranges(self, "pos_fraction affine_prob", ge=0, le=1)
        check_range(self, "num_workers", ge=0)
        _check_list("shape", self.shape, 3, 16)
        _check_list("spacing", self.spacing, 3, 1e-3)
        _check_list("roi_size", self.roi_size, 3, 16)
        window = list(self.window)
        if len(window) != 2 or not window[0] < window[1]:
            raise ConfigValueError("window", window, "[low, high] with low < high (HU)")
        axes = {next((a for a in _AXES if c in a), c) for c in str(self.orientation).upper()}
        if len(str(self.orientation)) != 3 or axes != set(_AXES):
            raise ConfigValueError(
                "orientation", self.orientation, "three letters, one of each L/R, A/P, S/I"
            )


@dataclass
class NetworkConfig:
    """The segmentation network (one schema for unet, segresnet and swinunetr)."""

    name: NetworkName = NetworkName.unet
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])  # unet
    strides: list[int] = field(default_factory=lambda: [2, 2, 2])  # unet
    num_res_units: int = 2  # unet
    init_filters: int = 16  # segresnet
    feature_size: int = 24  # swinunetr (a multiple of 12)
    norm: Norm = Norm.instance  # unet, swinunetr (segresnet uses group norm)
    dropout: float = 0.0
    weights: str | None = None  # local .pt/.pth state dict to start from (never downloaded)

    def __post_init__(self) -> None:
        _check_list("channels", self.channels, None, 1)
        _check_list("strides", self.strides, None, 1)
        check_range(self, "num_res_units", ge=0)
        check_range(self, "init_filters", ge=1)
        check_range(self, "feature_size", ge=12)
        if self.feature_size % 12:
            raise ConfigValueError("feature_size", self.feature_size, "a multiple of 12")
        check_range(self, "dropout", ge=0, lt=1)


@dataclass
class MedicalTrainingConfig:
    """Optimisation: AdamW with warmup + cosine decay, Dice+CE, sliding-window validation."""

    epochs: int = 60
    # a wall-clock budget for this command's training: the schedule then runs to zero by it
    max_minutes: float | None = None
    # on a CPU, with no max_minutes, training stops after this many minutes (the schedule
    # fits them), so the default recipe finishes on a laptop; null trains all epochs there
    cpu_minutes: float | None = 3.5
    batch_size: int = 8
    lr: float = 1e-2
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    lambda_dice: float = 1.0
    lambda_ce: float = 1.0
    batch_dice: bool = True  # Dice over the whole batch: steadier for small structures
    grad_clip: float = 12.0
    val_every: int = 5  # epochs between validations (the last epoch always validates)
    patience: int | None = None  # validations without a better Dice before stopping
    sw_batch_size: int = 4
    sw_overlap: float = 0.25
    channels_last: bool = True  # 3D channels-last convolutions (faster on CPU)
    resume: str | None = None  # a run folder or checkpoint file to continue from

    def __post_init__(self) -> None:
        check_ranges(self, "epochs batch_size val_every sw_batch_size patience", ge=1)
        check_ranges(self, "max_minutes cpu_minutes lr grad_clip", gt=0)
        check_ranges(self, "weight_decay lambda_dice lambda_ce", ge=0)
        check_ranges(self, "warmup_fraction sw_overlap", ge=0, lt=1)


def register() -> None:
    store_schema("data", MedicalDataConfig, name="medical_schema")
    store_schema("model", NetworkConfig, name="medical_schema")
    store_schema("training", MedicalTrainingConfig, name="medical_schema")
