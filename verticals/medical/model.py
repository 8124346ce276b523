"""The trained model (network + the preprocessing recipe it was trained with), its files,
and whole-volume segmentation in the input's own voxel grid."""

from __future__ import annotations

import gzip
import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verticals.core.errors import UserError
from verticals.medical import networks
from verticals.medical.monitoring import volume_statistics
from verticals.medical.transforms import IMAGE, preprocessing

FORMAT = 1


@dataclass
class MedicalModel:
    network: Any  # torch.nn.Module, in eval mode
    net: dict[str, Any]  # the network config it was built from
    prep: dict[str, Any]  # preprocessing recipe (orientation, spacing, intensity, crop)
    labels: dict[int, str]  # 0 = background
    in_channels: int
    roi: list[int]  # patch size: training crops and sliding-window tiles
    sw_batch_size: int = 4
    sw_overlap: float = 0.25
    device: str = "cpu"
    precision: str = "fp32"
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def foreground(self) -> dict[int, str]:
        return {k: v for k, v in self.labels.items() if k != 0}


@dataclass
class Segmentation:
    mask: np.ndarray  # uint8 label map in the input's voxel grid
    affine: np.ndarray  # the input's voxel -> world (RAS, mm) matrix
    image: np.ndarray | None = None  # the input (first channel), for overlays
    statistics: dict[str, float] = field(default_factory=dict)  # the input's, for monitoring

    @property
    def spacing(self) -> list[float]:
        return [float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0)]

    @property
    def voxel_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def volumes_ml(self, labels: dict[int, str]) -> dict[str, float]:
        counts = np.bincount(self.mask.ravel(), minlength=max(labels) + 1)
        return {name: round(float(counts[k]) * self.voxel_ml, 3) for k, name in labels.items()}

    def nifti_gz(self) -> bytes:
        import nibabel as nib

        image = nib.Nifti1Image(self.mask.astype(np.uint8), self.affine)
        image.header.set_xyzt_units("mm")
        return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def autocast(device: str, precision: str) -> Any:
    import torch

    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device, dtype=dtype)
    return nullcontext()


def infer(model: MedicalModel, image: Any, mode: str = "gaussian") -> Any:
    """Sliding-window logits for one preprocessed image (C, X, Y, Z) -> (K, X, Y, Z)."""
    import torch
    from monai.inferers import sliding_window_inference

    x = image.as_tensor() if hasattr(image, "as_tensor") else image
    with torch.inference_mode(), autocast(model.device, model.precision):
        logits = sliding_window_inference(
            x[None].to(model.device),
            roi_size=model.roi,
            sw_batch_size=model.sw_batch_size,
            predictor=model.network,
            overlap=model.sw_overlap,
            mode=mode,
        )
    return logits[0].float()


def _root(exc: BaseException) -> str:
    """The first line of the innermost cause: what the reader itself said."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _load(model: MedicalModel, path: Path) -> tuple[Any, dict[str, Any]]:
    from monai.transforms import Compose

    chain = preprocessing(model.prep, with_label=False)
    try:
        loaded = Compose(chain[:2])({IMAGE: str(path)})
    except Exception as exc:  # readers raise many types, wrapped by Compose
        raise UserError(f"{path.name} cannot be read as a medical image: {_root(exc)}") from None
    image = loaded[IMAGE]
    if image.ndim != 4:
        raise UserError(
            f"{path.name} is a {image.ndim - 1}-D image of shape {tuple(image.shape[1:])}; "
            "expected a 3-D volume (or 4-D with one channel per modality)"
        )
    if image.shape[0] != model.in_channels:
        raise UserError(
            f"{path.name} has {image.shape[0]} channel(s); this model takes {model.in_channels}"
        )
    if min(image.shape[1:]) < 2:
        raise UserError(f"{path.name} has shape {tuple(image.shape[1:])}: not a 3-D volume")
    affine = np.asarray(image.affine, dtype=float)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise UserError(f"{path.name} has a degenerate voxel-to-world affine: fix its header")
    return Compose(chain[2:]), loaded


def segment(model: MedicalModel, path: Path, keep_image: bool = False) -> Segmentation:
    """Preprocess as in training, infer, and map the label map back to the input's grid."""
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    rest, loaded = _load(model, Path(path))
    original = loaded[IMAGE]
    affine = np.asarray(original.meta.get("original_affine", original.affine), dtype=float)
    spacing = [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)]
    statistics = volume_statistics(np.asarray(original), spacing)  # before anything changes it
    try:
        data = rest(loaded)
    except Exception as exc:  # e.g. an image with no foreground at all
        raise UserError(f"{path.name} cannot be preprocessed: {_root(exc)}") from None
    if min(data[IMAGE].shape[1:]) < 1:
        raise UserError(f"{path.name} holds no foreground voxels (an empty or blank scan)")
    data["pred"] = MetaTensor(infer(model, data[IMAGE]).cpu())  # Invertd wants a MetaTensor
    inverted = Invertd("pred", transform=rest, orig_keys=IMAGE, nearest_interp=False)(data)
    mask = inverted["pred"].argmax(0).numpy().astype(np.uint8)
    if mask.shape != tuple(original.shape[1:]):
        raise RuntimeError(f"inverted mask {mask.shape} != input {tuple(original.shape[1:])}")
    image = np.asarray(original[0]) if keep_image else None
    return Segmentation(mask, affine, image, statistics)


def save(model: MedicalModel, directory: Path) -> None:
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.network.state_dict().items()}
    torch.save(state, directory / "weights.pt")
    meta = {
        "format": FORMAT,
        "net": model.net,
        "prep": model.prep,
        "labels": {str(k): v for k, v in model.labels.items()},
        "in_channels": model.in_channels,
        "roi": model.roi,
        "sw_batch_size": model.sw_batch_size,
        "sw_overlap": model.sw_overlap,
    }
    (directory / "medical.json").write_text(json.dumps(meta, indent=2) + "\n")


def load(directory: Path, device: str | None = None) -> MedicalModel:
    """Rebuild the network from `medical.json` and load its weights (on CUDA when present)."""
    import torch

    from verticals.core.device import resolve_device

    meta = json.loads((directory / "medical.json").read_text())
    if meta.get("format") != FORMAT:
        raise UserError(f"{directory} holds medical model format {meta.get('format')}")
    labels = {int(k): v for k, v in meta["labels"].items()}
    network = networks.build(meta["net"], int(meta["in_channels"]), len(labels))
    state = torch.load(directory / "weights.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    run_on = resolve_device(device or "auto")
    network.to(run_on.kind).eval()
    return MedicalModel(
        network=network,
        net=meta["net"],
        prep=meta["prep"],
        labels=labels,
        in_channels=int(meta["in_channels"]),
        roi=[int(r) for r in meta["roi"]],
        sw_batch_size=int(meta["sw_batch_size"]),
        sw_overlap=float(meta["sw_overlap"]),
        device=run_on.kind,
        precision=run_on.precision if run_on.is_cuda else "fp32",
    )
