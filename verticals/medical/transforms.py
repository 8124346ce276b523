"""MONAI transform chains: the deterministic preprocessing (cached once, applied again and
inverted at prediction) and the random patch sampling + light augmentation for training."""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import numpy as np

# MONAI announces, at every read, that an optional GPU DICOM decoder (nvImageCodec) is absent;
# pydicom's own decoders are used instead, so the notice is noise for a user.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
warnings.filterwarnings("ignore", message=".*always_return_as_numpy")  # inside MONAI's HD95

IMAGE, LABEL = "image", "label"
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # NIfTI world axes, said explicitly


def preprocessing(prep: dict[str, Any], with_label: bool = True) -> list[Any]:
    """Load -> channel first -> orientation -> spacing -> intensity -> crop to foreground.

    `prep` is the model's saved recipe, so prediction repeats exactly what training saw.
    """
    from monai.transforms import (
        CropForegroundd,
        EnsureTyped,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )

    keys = [IMAGE, LABEL] if with_label else [IMAGE]
    modes = ["bilinear", "nearest"][: len(keys)]
    chain: list[Any] = [
        LoadImaged(keys, ensure_channel_first=True, image_only=True),
        EnsureTyped(keys, dtype=np.float32, track_meta=True),
        Orientationd(keys, axcodes=prep["orientation"], labels=RAS_LABELS),
    ]
    if prep.get("spacing"):
        chain.append(Spacingd(keys, pixdim=list(prep["spacing"]), mode=modes))
    if prep["intensity"] == "window":
        a_min, a_max = prep["window"]
        chain.append(ScaleIntensityRanged(IMAGE, a_min, a_max, 0.0, 1.0, clip=True))
    if prep["crop_foreground"]:  # after the window (air -> 0), before z-scoring (MRI: 0 = air)
        chain.append(CropForegroundd(keys, source_key=IMAGE, allow_smaller=True, margin=2))
    if prep["intensity"] == "zscore":
        chain.append(NormalizeIntensityd(IMAGE, nonzero=True, channel_wise=True))
    return chain


def indexing(roi: list[int]) -> list[Any]:
    """Cached after preprocessing: pad to the patch size and find fore/background voxels once,
    so each epoch's patch sampling is a lookup rather than a scan of the volume."""
    from monai.transforms import FgBgToIndicesd, SpatialPadd

    return [
        SpatialPadd([IMAGE, LABEL], spatial_size=roi),
        FgBgToIndicesd(LABEL, fg_postfix="_fg", bg_postfix="_bg", image_key=IMAGE),
    ]


def augmentation(
    roi: list[int],
    samples: int,
    pos_fraction: float,
    flip_axes: list[int],
    augment: bool,
    affine_prob: float = 0.0,
) -> list[Any]:
    from monai.transforms import (
        RandAffined,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    chain: list[Any] = [
        RandCropByPosNegLabeld(
            [IMAGE, LABEL],
            label_key=LABEL,
            spatial_size=roi,
            pos=pos_fraction,
            neg=1.0 - pos_fraction,
            num_samples=samples,
            fg_indices_key="label_fg",
            bg_indices_key="label_bg",
        )
    ]
    if augment and affine_prob > 0:  # small rotations and zooms, on the patch only
        chain.append(
            RandAffined(
                [IMAGE, LABEL],
                prob=affine_prob,
                rotate_range=[0.26] * 3,  # +-15 degrees
                scale_range=[0.1] * 3,
                mode=["bilinear", "nearest"],
                padding_mode="zeros",
            )
        )
    if augment:
        chain += [RandFlipd([IMAGE, LABEL], prob=0.5, spatial_axis=a) for a in flip_axes]
        chain += [
            RandScaleIntensityd(IMAGE, factors=0.1, prob=0.5),
            RandShiftIntensityd(IMAGE, offsets=0.1, prob=0.5),
        ]
    return chain


def plan_roi(
    shapes: list[tuple[int, ...]], divisor: int, roi_max: int, minimum: int = 16
) -> list[int]:
    """nnU-Net-style patch planning: the median preprocessed shape, rounded up to a multiple
    of the network's divisor (at least 16), between `minimum` and `roi_max` per axis."""
    step = max(16, divisor)
    low = math.ceil(minimum / step) * step
    median = np.median(np.array([s[-3:] for s in shapes]), axis=0)
    cap = max(low, roi_max // step * step)
    return [int(min(cap, max(low, math.ceil(m / step) * step))) for m in median]
