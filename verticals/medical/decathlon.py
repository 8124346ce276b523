"""Read and check a Medical Segmentation Decathlon task folder.

The layout: `dataset.json` (labels, modality, a `training` list of image/label pairs) beside
`imagesTr/` and `labelsTr/` holding NIfTI files; an image may also be a DICOM series folder.
Every problem a user can fix (a missing file, an image/label shape mismatch, a label value
that `labels` does not declare) is found before training starts and named by case.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from verticals.core.errors import UserError

NIFTI = (".nii.gz", ".nii")


@dataclass
class Case:
    name: str
    image: Path  # a NIfTI file or a DICOM series folder
    label: Path


@dataclass
class Task:
    root: Path
    name: str
    labels: dict[int, str]  # 0 = background
    modality: dict[int, str]  # one entry per image channel
    cases: list[Case]

    @property
    def is_ct(self) -> bool:
        return any(m.upper() == "CT" for m in self.modality.values())


def case_name(path: Path) -> str:
    for suffix in NIFTI:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def _int_keyed(mapping: Any, key: str, where: Path) -> dict[int, str]:
    """Decathlon writes {"0": "background"}; nnU-Net v2 writes {"background": 0}."""
    if not isinstance(mapping, dict) or not mapping:
        raise UserError(f"{where}: `{key}` must be a non-empty mapping of index to name")
    out: dict[int, str] = {}
    for k, v in mapping.items():
        index, name = (k, v) if str(k).lstrip("-").isdigit() else (v, k)
        try:
            out[int(index)] = str(name)
        except (TypeError, ValueError):
            raise UserError(f"{where}: `{key}` entry {k!r}: {v!r} has no integer index") from None
    return dict(sorted(out.items()))


def read_task(root: str | Path | None) -> Task:
    """Parse `<root>/dataset.json` and check that every listed file exists."""
    if not root:
        raise UserError("data.root is not set: give the Decathlon task folder (with dataset.json)")
    root = Path(root).expanduser()
    meta_path = root / "dataset.json"
    if not root.is_dir():
        raise UserError(f"data.root={root} is not a folder")
    if not meta_path.is_file():
        raise UserError(f"{meta_path} is missing: data.root must be a Decathlon task folder")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{meta_path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise UserError(f"{meta_path} must hold a JSON object")
    labels = _int_keyed(meta.get("labels"), "labels", meta_path)
    if sorted(labels) != list(range(len(labels))):  # mask values are the network's channels
        raise UserError(
            f"{meta_path}: `labels` must be numbered 0 (background) to {len(labels) - 1} "
            f"without gaps; got {sorted(labels)}"
        )
    modality = _int_keyed(
        meta.get("modality") or meta.get("channel_names") or {"0": "image"}, "modality", meta_path
    )
    items = meta.get("training")
    if not isinstance(items, list) or not items:
        raise UserError(f"{meta_path}: `training` must be a non-empty list of image/label pairs")
    cases, missing = [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not {"image", "label"} <= item.keys():
            raise UserError(f"{meta_path}: training[{i}] needs `image` and `label` keys")
        image, label = root / item["image"], root / item["label"]
        name = case_name(image)
        for what, path in (("image", image), ("label", label)):
            if not path.exists():
                missing.append(f"{name} ({what} {path})")
        cases.append(Case(name, image, label))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UserError(f"{meta_path}: missing files for case {'; '.join(missing[:3])}{more}")
    return Task(root, str(meta.get("name") or root.name), labels, modality, cases)


def _header(path: Path) -> Any:
    import nibabel as nib

    try:
        return nib.load(path)  # the header only, until the data is asked for
    except Exception as exc:  # nibabel raises several types for damaged files
        raise UserError(f"{path} cannot be read as NIfTI: {exc}") from None


def check_cases(task: Task, progress: bool = True) -> None:
    """Shapes and voxel grids agree, channel counts match `modality`, label values are
    declared. DICOM images are checked when loaded; their NIfTI labels are checked here."""
    declared = set(task.labels)
    channels = len(task.modality)
    for case in tqdm(task.cases, desc="check cases", unit="case", disable=not progress):
        if not case.label.name.endswith(NIFTI):
            continue  # a DICOM label series: checked when loaded
        label = _header(case.label)
        if len(label.shape) != 3:
            raise UserError(f"case {case.name}: label {case.label} is {len(label.shape)}-D")
        if case.image.name.endswith(NIFTI):
            image = _header(case.image)
            shape = tuple(int(n) for n in image.shape)
            image_channels = shape[3] if len(shape) == 4 else 1
            if len(shape) not in (3, 4):
                raise UserError(
                    f"case {case.name}: image is {len(shape)}-D; expected a 3-D volume "
                    "(or 4-D with one channel per modality)"
                )
            if shape[:3] != tuple(label.shape):
                raise UserError(
                    f"case {case.name}: image shape {shape[:3]} differs from label shape "
                    f"{tuple(label.shape)} ({case.image.name} vs {case.label})"
                )
            if not np.allclose(image.affine, label.affine, atol=1e-3):
                raise UserError(
                    f"case {case.name}: image and label lie in different voxel grids "
                    "(their NIfTI affines differ): the label would not overlay the image"
                )
            if image_channels != channels:
                raise UserError(
                    f"case {case.name}: image has {image_channels} channel(s) but "
                    f"dataset.json declares {channels} modalities"
                )
        try:
            values = np.unique(np.asarray(label.dataobj))
        except Exception as exc:
            raise UserError(f"{case.label} cannot be read as NIfTI: {exc}") from None
        bad = sorted(set(values.tolist()) - declared)
        if bad:
            shown = ", ".join(f"{v:g}" for v in bad[:5])
            raise UserError(
                f"case {case.name}: label {case.label} holds value(s) {shown} that "
                f"dataset.json does not declare (labels: {sorted(declared)})"
            )
