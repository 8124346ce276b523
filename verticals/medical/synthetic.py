"""Synthetic CT-like phantoms with planted anatomy, written in the Decathlon layout.

Each volume is a body (soft tissue, 40 HU) in air (-1000 HU) holding an organ (a rotated
ellipsoid, 110 HU), a lesion inside the organ that is as dense as the surrounding body
(40 HU), and a contrast-filled vessel (a tube, 240 HU). Unlabelled distractors share the
intensities: spheres as dense as the organ and as bright as the vessel. So no threshold
separates the labels: a model must use shape and context, as on real scans. Because the
output is a Decathlon task folder, the demo runs through the same loader as user data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from verticals.core.cache import build_once, key

LABELS = {"0": "background", "1": "organ", "2": "lesion", "3": "vessel"}
AIR, TISSUE, ORGAN, VESSEL = -1000.0, 40.0, 110.0, 240.0
_VERSION = 2  # bump when the generator changes, so cached folders are rebuilt


def _ellipsoid(grid: np.ndarray, centre: np.ndarray, radii: np.ndarray, rot: np.ndarray):
    local = np.einsum("ij,j...->i...", rot.T, grid - centre[:, None, None, None])
    return (((local / radii[:, None, None, None]) ** 2).sum(0)) <= 1.0


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def phantom(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (image in HU as int16, label map as uint8) pair."""
    from scipy.ndimage import gaussian_filter

    size = np.array(shape, dtype=float)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"))
    centre = size / 2 + rng.uniform(-0.03, 0.03, 3) * size
    body = _ellipsoid(grid, centre, size * rng.uniform(0.40, 0.47, 3), np.eye(3))
    image = np.where(body, TISSUE, AIR)
    label = np.zeros(shape, dtype=np.uint8)

    organ_c = centre + rng.uniform(-0.1, 0.1, 3) * size
    organ_r = size * rng.uniform(0.15, 0.26, 3)
    organ = _ellipsoid(grid, organ_c, organ_r, _rotation(rng)) & body
    image[organ] = ORGAN
    label[organ] = 1

    # Distractors: organ-dense and vessel-bright spheres outside the organ, unlabelled.
    for density in [ORGAN] * int(rng.integers(2, 4)) + [VESSEL] * int(rng.integers(1, 3)):
        for _ in range(20):  # rejection-sample a spot in the body, away from the organ
            c = centre + rng.uniform(-0.3, 0.3, 3) * size
            r = np.full(3, rng.uniform(0.045, 0.075) * size.min())
            blob = _ellipsoid(grid, c, r, np.eye(3))
            if not (blob & organ).any() and (blob & body).sum() == blob.sum():
                image[blob] = density
                break

    if rng.random() < 0.8:  # most cases have a lesion
        direction = rng.normal(size=3)
        offset = direction / np.linalg.norm(direction) * rng.uniform(0, 0.4) * organ_r.min()
        lesion_r = np.full(3, rng.uniform(0.45, 0.65) * organ_r.min()) * rng.uniform(0.8, 1.2, 3)
        lesion = _ellipsoid(grid, organ_c + offset, lesion_r, _rotation(rng)) & organ
        image[lesion] = TISSUE
        label[lesion] = 2

    axis = int(rng.integers(3))
    start, end = (centre + rng.uniform(-0.25, 0.25, 3) * size for _ in range(2))
    start[axis], end[axis] = 0.0, size[axis] - 1  # the vessel runs through the volume
    seg = end - start
    t = np.clip(
        np.einsum("i...,i->...", grid - start[:, None, None, None], seg) / (seg @ seg), 0, 1
    )
    dist = np.linalg.norm(
        grid - (start[:, None, None, None] + t * seg[:, None, None, None]), axis=0
    )
    vessel = (dist <= max(1.5, rng.uniform(0.05, 0.07) * size.min())) & body
    image[vessel] = VESSEL
    label[vessel] = 3

    image = gaussian_filter(image, 0.6) + rng.normal(0, 20.0, shape)  # partial volume + noise
    return image.astype(np.int16), label


def dataset_key(n_cases: int, shape: list[int], voxel_mm: float, seed: int) -> str:
    return key(_VERSION, n_cases, list(shape), voxel_mm, seed)


def write_dataset(folder: Path, n_cases: int, shape: list[int], voxel_mm: float, seed: int) -> Path:
    """Generate a Decathlon task folder at `folder` (once: an existing complete one is kept)."""

    def build(tmp: Path) -> None:
        import nibabel as nib

        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        rng = np.random.default_rng(seed)
        affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
        training = []
        for i in range(n_cases):
            image, label = phantom(tuple(int(s) for s in shape), rng)  # type: ignore[arg-type]
            name = f"phantom_{i:03d}.nii.gz"
            nib.save(nib.Nifti1Image(image, affine), tmp / "imagesTr" / name)
            nib.save(nib.Nifti1Image(label, affine), tmp / "labelsTr" / name)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        meta = {
            "name": "SyntheticPhantoms",
            "description": "CT-like phantoms with planted organ, lesion and vessel (verticals)",
            "tensorImageSize": "3D",
            "modality": {"0": "CT"},
            "labels": LABELS,
            "numTraining": n_cases,
            "training": training,
        }
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2))

    return build_once(folder, build)
