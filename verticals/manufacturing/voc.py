"""Pascal VOC boxes (one .xml per image) -> a YOLO data set, converted once into the cache.

Images are linked, not copied; each .xml becomes a label file in YOLO's normalised
`class cx cy w h` form. Errors name the .xml file and the object.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verticals.core.cache import build_once, key
from verticals.core.errors import UserError
from verticals.manufacturing.dataset import IMAGE_SUFFIXES, link, write_data_yaml

_IMAGE_DIRS = ("JPEGImages", "IMAGES", "images", "Images")
_XML_DIRS = ("Annotations", "ANNOTATIONS", "annotations")
_VERSION = 1


@dataclass
class Annotation:
    image: Path
    width: int
    height: int
    boxes: list[tuple[str, float, float, float, float]]  # name, xmin, ymin, xmax, ymax (pixels)


def _folder(root: Path, given: str | None, candidates: tuple[str, ...], what: str) -> Path:
    if given:
        folder = root / given
        if not folder.is_dir():
            raise UserError(f"data.{what}={given}: {folder} is not a folder")
        return folder
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    raise UserError(f"data.root={root} has none of {', '.join(candidates)}; set data.{what}")


def _number(node: ET.Element, tag: str, where: str) -> float:
    text = node.findtext(tag)
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(f"{where}: <{tag}> is {text!r}; expected a number") from None


def parse(xml: Path, images: Path) -> Annotation:
    """One VOC annotation; its image is `<filename>` in `images` (or the .xml's stem)."""
    try:
        root = ET.parse(xml).getroot()
    except (ET.ParseError, OSError) as exc:
        raise UserError(f"{xml} cannot be read as Pascal VOC XML: {exc}") from None
    name = (root.findtext("filename") or "").strip()
    image = images / name if name else None
    if image is None or not image.is_file():
        found = [images / f"{xml.stem}{s}" for s in IMAGE_SUFFIXES]
        image = next((p for p in found if p.is_file()), None)
        if image is None:
            raise UserError(f"{xml}: its image {name or xml.stem + '.*'} is not in {images}")
    size = root.find("size")
    if size is not None and size.findtext("width") and size.findtext("height"):
        width, height = (
            int(_number(size, "width", str(xml))),
            int(_number(size, "height", str(xml))),
        )
    else:
        from PIL import Image

        with Image.open(image) as handle:
            width, height = handle.size
    if width <= 0 or height <= 0:
        raise UserError(f"{xml}: image size {width}x{height} is not positive")
    boxes = []
    for i, obj in enumerate(root.iter("object"), start=1):
        label = (obj.findtext("name") or "").strip()
        where = f"{xml} object {i} ({label or 'no name'})"
        box = obj.find("bndbox")
        if not label or box is None:
            raise UserError(f"{where}: needs <name> and <bndbox>")
        x0, y0, x1, y1 = (_number(box, t, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        if x1 <= x0 or y1 <= y0:
            raise UserError(f"{where}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has no area")
        if x0 >= width or y0 >= height or x1 < 1 or y1 < 1:
            raise UserError(
                f"{where}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the "
                f"{width}x{height} image"
            )
        boxes.append((label, x0, y0, x1, y1))
    return Annotation(image, width, height, boxes)


def _yolo_line(cls: int, box: tuple[float, float, float, float], w: int, h: int) -> str:
    x0, y0, x1, y1 = box
    x0, y0 = max(x0 - 1, 0.0), max(y0 - 1, 0.0)  # VOC pixels are 1-based and inclusive
    x1, y1 = min(x1, w), min(y1, h)
    cx, cy, bw, bh = (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h
    return f"{cls} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n"


def convert(
    root: str | Path,
    cache_dir: Path,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    images_dir: str | None = None,
    annotations_dir: str | None = None,
    classes: list[str] | None = None,
    max_images: int | None = None,
) -> Path:
    """The data.yaml of the converted data set (built on first use)."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise UserError(f"data.root={root} is not a folder")
    images = _folder(root, images_dir, _IMAGE_DIRS, "images_dir")
    xml_dir = _folder(root, annotations_dir, _XML_DIRS, "annotations_dir")
    xmls = sorted(xml_dir.glob("*.xml"))
    if not xmls:
        raise UserError(f"{xml_dir} holds no .xml annotation files")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError(
            f"data.val_fraction={val_fraction}, data.test_fraction={test_fraction}: "
            "each in [0, 1) and together below 1"
        )
    order = np.random.default_rng(seed).permutation(len(xmls))
    xmls = [xmls[i] for i in order][: max_images or None]
    stamp = max(p.stat().st_mtime_ns for p in xmls)
    ident = key(_VERSION, str(root), str(images), [p.name for p in xmls], stamp, classes,
                val_fraction, test_fraction)  # fmt: skip
    folder = cache_dir / "manufacturing" / f"voc-{root.name}-{ident}"
    if (folder / "data.yaml").is_file():
        return folder / "data.yaml"
    annotations = [parse(x, images) for x in xmls]
    seen: dict[Path, Path] = {}
    for xml, a in zip(xmls, annotations, strict=True):
        if a.image in seen:
            raise UserError(f"{xml} and {seen[a.image]} both annotate {a.image.name}")
        seen[a.image] = xml
    found = sorted({b[0] for a in annotations for b in a.boxes})
    names = list(classes) if classes else found
    unknown = [n for n in found if n not in names]
    if unknown:
        where = next(
            x
            for x, a in zip(xmls, annotations, strict=True)
            if any(b[0] in unknown for b in a.boxes)
        )
        raise UserError(
            f"{where}: class {unknown[0]!r} is not in data.classes ({', '.join(names)})"
        )
    n_val, n_test = round(len(xmls) * val_fraction), round(len(xmls) * test_fraction)
    if len(xmls) - n_val - n_test < 1 or n_val < 1:
        raise UserError(f"{len(xmls)} annotated images are too few to split into train and val")
    parts = {
        "train": annotations[n_val + n_test :],
        "val": annotations[:n_val],
        **({"test": annotations[n_val : n_val + n_test]} if n_test else {}),
    }

    def build(tmp: Path) -> None:
        for split, items in parts.items():
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            for a in items:
                link(a.image, tmp / "images" / split / a.image.name)
                lines = [_yolo_line(names.index(b[0]), b[1:], a.width, a.height) for b in a.boxes]
                (tmp / "labels" / split / f"{a.image.stem}.txt").write_text("".join(lines))
        write_data_yaml(tmp / "data.yaml", folder, names, list(parts))

    return build_once(folder, build) / "data.yaml"
