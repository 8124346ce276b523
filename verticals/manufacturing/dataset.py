"""A YOLO-format data set as ultralytics reads it: data.yaml, image folders, label files.

Layout: each image `.../images/<split>/x.jpg` has its boxes in `.../labels/<split>/x.txt`,
one `class x_center y_center width height` line per box, all normalised to [0, 1]; no
file or an empty file means no defect. data.yaml names the split folders (or .txt lists of
images) relative to its `path:` and gives the class names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verticals.core.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class ImageSet:
    """One split of a YOLO data set: the data.yaml that describes it and its image files."""

    yaml: Path
    split: str  # the data.yaml key: train | val | test
    images: list[Path]
    names: list[str]

    def __len__(self) -> int:
        return len(self.images)


def open_image(path: Path) -> Any:
    """PIL's image for `path`, or a `UserError` naming the file.

    Once ultralytics is imported, PIL's `Image.open` is its wrapper, which answers an
    unknown format by trying to install a HEIF plugin; offline that is an ImportError."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except ImportError:
        raise UserError(f"{path} cannot be read as an image: not a format Pillow reads") from None
    except Image.DecompressionBombError as exc:
        raise UserError(f"{path} is too large to read safely: {exc}") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise UserError(f"{path} cannot be read as an image: {exc}") from None
    return image


def label_path(image: Path) -> Path:
    """Where ultralytics looks for `image`'s boxes: the last `images` folder -> `labels`."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def read_boxes(label: Path) -> list[tuple[int, float, float, float, float]]:
    """The (class, cx, cy, w, h) rows of a label file (none when the file is absent)."""
    if not label.is_file():
        return []
    rows = []
    for line in label.read_text(encoding="utf-8-sig").splitlines():
        fields = line.split()
        if fields:
            values = [float(v) for v in fields]
            if len(values) > 5:  # a polygon: its bounding box, as ultralytics does
                xs, ys = values[1::2], values[2::2]
                x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
                values = [values[0], (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
            rows.append((int(values[0]), *values[1:5]))
    return rows  # type: ignore[return-value]


def _names(raw: Any, where: Path) -> list[str]:
    if isinstance(raw, list) and raw:
        return [str(n) for n in raw]
    if isinstance(raw, dict) and raw:
        try:
            ordered = sorted((int(k), str(v)) for k, v in raw.items())
        except (TypeError, ValueError):
            raise UserError(f"{where}: `names` keys must be class numbers 0, 1, ...") from None
        if [k for k, _ in ordered] != list(range(len(ordered))):
            raise UserError(f"{where}: `names` must number classes 0..{len(ordered) - 1}")
        return [v for _, v in ordered]
    raise UserError(f"{where}: `names` must list the class names (a list, or 0: name, ...)")


def read_yaml(path: str | Path) -> tuple[Path, dict[str, Any], list[str]]:
    """(dataset root, the parsed data.yaml, class names), with errors naming the file."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"data.yaml={path} does not exist")
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path} must be a mapping with train, val and names")
    for key in ("train", "val"):
        if not doc.get(key):
            raise UserError(f"{path} has no `{key}:` entry (the {key} image folder)")
    root = Path(doc.get("path") or path.parent).expanduser()
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    return root, doc, _names(doc.get("names"), path)


def split_images(root: Path, entry: Any, yaml_path: Path, key: str) -> list[Path]:
    """The image files a data.yaml split entry names (folders, image lists, or both).

    Relative entries, and relative lines of an image list, are read against the data set's
    root and the list's own folder (ultralytics would read some against the current folder;
    the vertical hands it a normalised copy, see `mirror`)."""
    images: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        where = Path(str(item)).expanduser()
        where = where if where.is_absolute() else root / where
        if where.is_dir():
            images += sorted(
                p
                for p in where.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
        elif where.is_file() and where.suffix == ".txt":
            for line in where.read_text(encoding="utf-8-sig").splitlines():
                if line.strip():
                    image = Path(line.strip())
                    images.append(image if image.is_absolute() else where.parent / image)
        else:
            raise UserError(f"{yaml_path}: `{key}: {item}` is not a folder or image list ({where})")
    if not images:
        raise UserError(
            f"{yaml_path}: `{key}: {entry}` holds no images ({', '.join(IMAGE_SUFFIXES)})"
        )
    return images


def load(path: str | Path) -> dict[str, ImageSet]:
    """Every split the data.yaml names (train, val and test when present)."""
    yaml_path = Path(path).expanduser().resolve()
    root, doc, names = read_yaml(yaml_path)
    return {
        key: ImageSet(yaml_path, key, split_images(root, doc[key], yaml_path, key), names)
        for key in ("train", "val", "test")
        if doc.get(key)
    }


def mirror(parts: dict[str, ImageSet], folder: Path) -> Path:
    """A normalised copy of a user's data set for ultralytics, built once: images linked,
    labels copied, and a data.yaml with an absolute path, the class names and nothing else.

    ultralytics resolves relative paths against the current folder, runs a data.yaml's
    `download:` entry, and writes `.cache` files (and re-saved images) beside the data; the
    copy keeps all of that in the suite's cache and away from the user's folders."""
    from verticals.core.cache import build_once

    names = next(iter(parts.values())).names

    def build(tmp: Path) -> None:
        for split, part in parts.items():
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            taken: set[str] = set()
            for i, image in enumerate(part.images):
                name = image.name if image.name not in taken else f"{i:06d}_{image.name}"
                taken.add(name)
                link(image, tmp / "images" / split / name)
                label = label_path(image)
                text = label.read_text(encoding="utf-8-sig") if label.is_file() else ""
                (tmp / "labels" / split / Path(name).with_suffix(".txt")).write_text(text)
        write_data_yaml(tmp / "data.yaml", folder, names, list(parts))

    return build_once(folder, build) / "data.yaml"


def link(source: Path, target: Path) -> None:
    """`target` pointing at `source` (a copy where the file system has no links)."""
    import os
    import shutil

    try:
        os.symlink(source.resolve(), target)
    except OSError:
        shutil.copy2(source, target)


def write_data_yaml(path: Path, root: Path, names: list[str], splits: list[str]) -> None:
    """An ultralytics data.yaml with an absolute `path:` (its settings would otherwise
    resolve a relative one against whatever folder ultralytics was first imported in)."""
    import yaml

    doc = {"path": str(Path(root).resolve()), **{s: f"images/{s}" for s in splits}}
    doc["names"] = dict(enumerate(names))
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
