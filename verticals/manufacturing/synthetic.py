"""Product-surface images with planted defects and exact YOLO labels.

Surfaces are crops of the CC0 textures scikit-image ships (brick, gravel, grass), rescaled,
flattened to a low-contrast grey and lit unevenly, as a line camera sees them. Defects of
four classes are painted on with varied size, contrast, angle and position:

- scratch: a thin straight stroke, darker or brighter than the surface;
- spot: a soft-edged stain (ellipse), darker or brighter;
- crack: a dark, thin, jagged path that wanders;
- hole: a small very dark disc with a bright rim.

Each box is the bounding box of the pixels the defect changed, so labels are exact. A share
of images has no defect. The output is a YOLO data set folder with an absolute data.yaml,
so the demo trains through the same loader as a user's data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from verticals.core.cache import build_once, key
from verticals.manufacturing.dataset import write_data_yaml

CLASSES = ("scratch", "spot", "crack", "hole")
TEXTURES = ("brick", "gravel", "grass")
_VERSION = 2  # bump when the generator changes, so cached folders are rebuilt


def _texture(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)().astype(np.float32) / 255.0


def surface(size: int, rng: np.random.Generator, textures: dict[str, np.ndarray]) -> np.ndarray:
    """A grey product surface in [0, 1], `size` x `size`."""
    from skimage.transform import resize

    texture = textures[TEXTURES[rng.integers(len(TEXTURES))]]
    crop = int(rng.integers(min(size, 128), texture.shape[0] + 1))
    y, x = rng.integers(0, texture.shape[0] - crop + 1, size=2)
    patch = resize(texture[y : y + crop, x : x + crop], (size, size), anti_aliasing=True)
    if rng.random() < 0.5:
        patch = patch.T
    patch = (patch - patch.mean()) / (patch.std() + 1e-6)
    grid = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    light = rng.uniform(-0.06, 0.06) * grid[None, :] + rng.uniform(-0.06, 0.06) * grid[:, None]
    base = rng.uniform(0.4, 0.6)
    return np.clip(base + rng.uniform(0.04, 0.08) * patch + light, 0.0, 1.0).astype(np.float32)


def _stroke(size: int, points: np.ndarray, width: int) -> np.ndarray:
    """An anti-aliased polyline through `points` (row, col), `width` pixels wide, in [0, 1]."""
    from scipy.ndimage import grey_dilation
    from skimage.draw import line_aa

    alpha = np.zeros((size, size), np.float32)
    for (r0, c0), (r1, c1) in zip(points[:-1], points[1:], strict=True):
        rr, cc, val = line_aa(int(r0), int(c0), int(r1), int(c1))
        keep = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
        np.maximum.at(alpha, (rr[keep], cc[keep]), val[keep])
    if width > 1:
        alpha = grey_dilation(alpha, size=(width, width))
    return alpha


def defect(kind: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(alpha in [0, 1], intensity it blends towards) for one defect of class `kind`."""
    from scipy.ndimage import gaussian_filter
    from skimage.draw import disk, ellipse

    centre = rng.uniform(0.12, 0.88, size=2) * size
    value = np.zeros((size, size), np.float32)
    if kind == "scratch":
        length = rng.uniform(0.25, 0.6) * size
        angle = rng.uniform(0, np.pi)
        half = 0.5 * length * np.array([np.sin(angle), np.cos(angle)])
        alpha = _stroke(size, np.stack([centre - half, centre + half]), int(rng.integers(2, 4)))
        value[:] = rng.choice([rng.uniform(0.0, 0.1), rng.uniform(0.9, 1.0)])
        alpha *= rng.uniform(0.85, 1.0)
    elif kind == "spot":
        radii = rng.uniform(0.04, 0.12, size=2) * size
        alpha = np.zeros((size, size), np.float32)
        rr, cc = ellipse(*centre, *radii, shape=alpha.shape, rotation=rng.uniform(0, np.pi))
        alpha[rr, cc] = 1.0
        alpha = gaussian_filter(alpha, sigma=max(1.0, radii.min() / 6))
        value[:] = rng.choice([rng.uniform(0.0, 0.2), rng.uniform(0.8, 1.0)])
        alpha *= rng.uniform(0.75, 0.95)
    elif kind == "crack":
        steps = int(rng.integers(8, 16))
        heading = rng.uniform(0, 2 * np.pi)
        points = [centre]
        for _ in range(steps):
            heading += rng.normal(0, 0.6)
            step = rng.uniform(0.02, 0.04) * size
            points.append(points[-1] + step * np.array([np.sin(heading), np.cos(heading)]))
        alpha = _stroke(size, np.clip(np.array(points), 0, size - 1), int(rng.integers(1, 3)))
        value[:] = rng.uniform(0.0, 0.1)
    elif kind == "hole":
        radius = rng.uniform(0.02, 0.05) * size
        alpha = np.zeros((size, size), np.float32)
        rim = disk(tuple(centre), radius + max(1.5, radius * 0.35), shape=alpha.shape)
        alpha[rim] = 1.0
        value[rim] = rng.uniform(0.85, 1.0)
        inner = disk(tuple(centre), radius, shape=alpha.shape)
        value[inner] = rng.uniform(0.0, 0.06)
    else:
        raise ValueError(f"unknown defect class {kind!r}")
    return alpha, value


def _box(alpha: np.ndarray) -> tuple[float, float, float, float] | None:
    """YOLO box (cx, cy, w, h, normalised) of the pixels `alpha` visibly changes (by more
    than 5% of the way to the defect's intensity: a 3-grey-level halo is not the defect)."""
    rows, cols = np.nonzero(alpha > 0.05)
    if len(rows) < 4:
        return None
    size = alpha.shape[0]
    x0, x1, y0, y1 = cols.min(), cols.max() + 1, rows.min(), rows.max() + 1
    if min(x1 - x0, y1 - y0) < 2:
        return None
    return ((x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size)


def _overlaps(box: tuple[float, ...], boxes: list[tuple[float, ...]]) -> bool:
    cx, cy, w, h = box
    for ox, oy, ow, oh in boxes:
        ix = max(0.0, min(cx + w / 2, ox + ow / 2) - max(cx - w / 2, ox - ow / 2))
        iy = max(0.0, min(cy + h / 2, oy + oh / 2) - max(cy - h / 2, oy - oh / 2))
        if ix * iy > 0.2 * min(w * h, ow * oh):
            return True
    return False


def sample(
    size: int,
    rng: np.random.Generator,
    textures: dict[str, np.ndarray],
    max_defects: int = 3,
    defect_free: float = 0.2,
) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """One (uint8 grey image, YOLO label rows) pair."""
    image = surface(size, rng, textures)
    labels: list[tuple[int, float, float, float, float]] = []
    if rng.random() >= defect_free:
        for _ in range(int(rng.integers(1, max_defects + 1))):
            for _attempt in range(5):
                cls = int(rng.integers(len(CLASSES)))
                alpha, value = defect(CLASSES[cls], size, rng)
                box = _box(alpha)
                if box is not None and not _overlaps(box, [lab[1:] for lab in labels]):
                    image = image * (1 - alpha) + value * alpha
                    labels.append((cls, *box))
                    break
    noise = rng.normal(0, rng.uniform(0.005, 0.02), image.shape)
    return (np.clip(image + noise, 0, 1) * 255).round().astype(np.uint8), labels


def dataset_key(counts: dict[str, int], size: int, max_defects: int, free: float, seed: int) -> str:
    return key(_VERSION, sorted(counts.items()), size, max_defects, free, seed)


def write_dataset(
    folder: Path,
    counts: dict[str, int],
    size: int,
    max_defects: int,
    defect_free: float,
    seed: int,
) -> Path:
    """A YOLO data set at `folder` (images/, labels/, data.yaml), generated once."""

    def build(tmp: Path) -> None:
        from PIL import Image

        rng = np.random.default_rng(seed)
        textures = {name: _texture(name) for name in TEXTURES}
        for split, n in counts.items():
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            for i in range(n):
                image, labels = sample(size, rng, textures, max_defects, defect_free)
                stem = f"{split}_{i:05d}"
                Image.fromarray(image).save(tmp / "images" / split / f"{stem}.png")
                lines = "".join(
                    f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels
                )
                (tmp / "labels" / split / f"{stem}.txt").write_text(lines)
        write_data_yaml(tmp / "data.yaml", folder, list(CLASSES), list(counts))

    return build_once(folder, build)
