"""Check a YOLO data set before training, so a bad label costs seconds, not an epoch.

ultralytics drops a bad label file with a warning and trains on; a quality engineer would
rather hear at once which file and line is wrong. Every problem is collected and reported
together, each naming the file (and line).
"""

from __future__ import annotations

import glob
import math
from pathlib import Path

from verticals.core.errors import UserError
from verticals.manufacturing.dataset import ImageSet, label_path, open_image

_FIELDS = ("x_center", "y_center", "width", "height")
_SHOWN = 12


def _label_problems(label: Path, n_classes: int, names: list[str]) -> list[str]:
    problems: list[str] = []
    kinds: set[str] = set()
    try:
        lines = label.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{label}: cannot be read ({exc})"]
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{label} line {number}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            problems.append(f"{where}: {line.strip()!r} is not numbers")
            continue
        if len(values) != 5 and (len(values) < 7 or len(values) % 2 == 0):
            problems.append(
                f"{where}: {len(values)} values; expected 5 (class x_center y_center width height)"
            )
            continue
        if not all(math.isfinite(v) for v in values):
            problems.append(f"{where}: {line.strip()!r} holds nan or inf")
            continue
        kinds.add("box" if len(values) == 5 else "polygon")
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < n_classes:
            known = ", ".join(f"{i}: {n}" for i, n in enumerate(names[:8]))
            problems.append(f"{where}: class {fields[0]} is not in the class list ({known})")
        for i, value in enumerate(values[1:]):
            if not 0.0 <= value <= 1.0:
                name = _FIELDS[i] if len(values) == 5 else f"coordinate {i + 1}"
                problems.append(f"{where}: {name}={fields[i + 1]} is outside [0, 1]")
    if len(kinds) > 1:  # ultralytics drops such a file's image without a word
        problems.append(f"{label}: mixes box rows (5 values) and polygon rows; use one kind")
    return problems


def _image_problem(image: Path) -> str | None:
    try:
        open_image(image).close()
    except UserError as exc:
        return exc.message
    return None


def _orphans(splits: dict[str, ImageSet]) -> list[str]:
    """Label files in the data set's label folders that belong to no image on disk."""
    labelled = {label_path(p) for split in splits.values() for p in split.images}
    found = []
    for folder in sorted({p.parent for p in labelled if p.parent.is_dir()}):
        for label in sorted(folder.glob("*.txt")):
            if label in labelled or label.name == "classes.txt":
                continue
            images = label_path_inverse(label)
            if images is not None and any(
                p.is_file() for p in images.parent.glob(f"{glob.escape(images.name)}.*")
            ):
                continue  # an image in a format the suite does not read; not an orphan
            found.append(
                f"{label}: label without an image (no {label.stem}.* among the data set's images)"
            )
    return found


def label_path_inverse(label: Path) -> Path | None:
    """`.../labels/x/a.txt` -> `.../images/x/a` (no ending): where its image would be."""
    parts = list(label.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "labels":
            parts[i] = "images"
            return Path(*parts).with_suffix("")
    return None


def check(splits: dict[str, ImageSet], progress: bool = True) -> None:
    """Raise one `UserError` listing every problem in the data set, or return quietly."""
    from tqdm.auto import tqdm

    problems: list[str] = []
    for split in splits.values():
        n = len(split.names)
        for image in tqdm(
            split.images, desc=f"check {split.split}", unit="img", disable=not progress, leave=False
        ):
            if (problem := _image_problem(image)) is not None:
                problems.append(problem)
            label = label_path(image)
            if label.is_file():
                problems += _label_problems(label, n, split.names)
    problems += _orphans(splits)
    problems = list(dict.fromkeys(problems))  # an image in two splits is reported once
    if problems:
        shown = "\n  ".join(problems[:_SHOWN])
        more = f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        yaml = next(iter(splits.values())).yaml
        raise UserError(f"{yaml}: {len(problems)} problem(s) in the data set:\n  {shown}{more}")
