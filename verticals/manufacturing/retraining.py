"""Retraining for the manufacturing vertical: inspectors' corrected boxes become training
images, and a champion's test images become a fixed, self-contained holdout.

Which feedback teaches the detector (`InspectorVerdict`: a verdict, and `boxes` or not):

- the log kept the image (`log.keep_files=true`) and the inspector gave `boxes`: those
  lines become the image's label file. `boxes: []` with verdict pass labels a part without
  defects (a background image: it teaches the detector not to see defects in clean texture);
- `boxes: []` with verdict fail is left out: a defect without a place cannot be labelled;
  otherwise the boxes are the labels whatever the verdict (a pass may list defects under
  the line's tolerance);
- a verdict alone (no `boxes`) trains nothing: it already scores the pass/fail decision
  (`live_metrics`), and is only counted here.

The same image sent twice is one training image: its latest outcome wins.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import DictConfig

from verticals.core.cache import build_once, key
from verticals.core.contract import CaseScores, Logged, Splits
from verticals.core.errors import UserError
from verticals.core.holdout import file_keys
from verticals.manufacturing import dataset, evaluation
from verticals.manufacturing.dataset import IMAGE_SUFFIXES, ImageSet
from verticals.manufacturing.model import DefectModel
from verticals.manufacturing.monitoring import check_label_line
from verticals.manufacturing.offline import ultralytics

log = logging.getLogger(__name__)

HOLDOUT_SPLIT = "test"  # the data.yaml key a saved holdout is evaluated under
HOLDOUT_JSON = "holdout.json"
_FORMAT = 1
_BOX_METRICS = ("map50", "map50_95", "precision", "recall")
#: Why a feedback entry does not become a training image (counted in `info["feedback"]`).
_LEFT_OUT = ("verdict_only", "fail_without_boxes", "without_image", "not_an_image")


@dataclass(frozen=True)
class Case:
    """One image of a data set to write: its file, its YOLO label text and the name it gets
    there; `copy`: copied, not linked (a feedback image the log may prune later)."""

    image: Path
    label: str
    name: str
    copy: bool = False


# -- feedback -> labelled images --------------------------------------------------------


def feedback_cases(feedback: list[Logged], names: list[str]) -> tuple[list[Case], dict[str, int]]:
    """The labelled images in `feedback` (see the module's docstring for which), and how many
    entries each rule took or left: `images` (of which `defect_free`, and their `boxes`),
    `verdict_only`, `fail_without_boxes`, `without_image`, `not_an_image`."""
    counts = dict.fromkeys(_LEFT_OUT, 0)
    cases: dict[str, Case] = {}
    for entry in feedback:
        outcome = entry.outcome or {}
        boxes = outcome.get("boxes")
        if boxes is None:
            counts["verdict_only"] += 1
        elif not boxes and outcome.get("verdict") == "fail":
            counts["fail_without_boxes"] += 1
        elif (image := _kept_input(entry)) is None:
            counts["without_image"] += 1
        elif image.suffix.lower() not in IMAGE_SUFFIXES:
            counts["not_an_image"] += 1
        else:
            sha = _checked(entry, image, boxes, names)
            name = f"feedback_{sha[:16]}{image.suffix.lower()}"
            cases.pop(sha, None)  # the latest outcome of an image, in the latest place
            cases[sha] = Case(image, "".join(f"{b.strip()}\n" for b in boxes), name, copy=True)
    found = list(cases.values())
    summary = {
        "images": len(found),
        "defect_free": sum(not c.label for c in found),
        "boxes": sum(c.label.count("\n") for c in found),
    }
    return found, {**summary, **{k: v for k, v in counts.items() if v}}


def _kept_input(entry: Logged) -> Path | None:
    """The uploaded image the log kept for `entry`, when it did and it is still there."""
    path = entry.files.get("input")
    return Path(path) if path is not None and Path(path).is_file() else None


def _checked(entry: Logged, image: Path, boxes: list[str], names: list[str]) -> str:
    """`image`'s sha256, once its boxes fit the data's classes and Pillow reads it: the
    schema checked the boxes against the serving model's classes, which a retrain's data
    may not share."""
    for i, line in enumerate(boxes):
        problem = check_label_line(str(line), tuple(names))
        if problem:
            raise UserError(f"feedback {entry.request_id}: boxes line {i} {line!r}: {problem}")
    dataset.open_image(image).close()
    return hashlib.sha256(image.read_bytes()).hexdigest()


def _nothing_usable(feedback: list[Logged], counts: dict[str, int]) -> UserError:
    left = {k: v for k, v in counts.items() if k in _LEFT_OUT}
    why = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in left.items()) or "no entries"
    return UserError(
        f"none of the {len(feedback)} feedback entries can train the manufacturing detector "
        f"({why}): it learns from kept images with the inspector's boxes; serve with "
        "log.keep_files=true and post outcomes with boxes (YOLO lines 'class cx cy w h'; "
        "[] for a part without defects)"
    )


def _cases_of(images: list[Path]) -> list[Case]:
    """A split's images as cases: linked under their own names, labels as they are."""
    out = []
    for image in images:
        label = dataset.label_path(image)
        text = label.read_text(encoding="utf-8-sig") if label.is_file() else ""
        out.append(Case(image, text, image.name))
    return out


def write_cases(folder: Path, splits: dict[str, list[Case]], copy_all: bool = False) -> dict:
    """`images/<split>/` and `labels/<split>/` under `folder`; names that clash (also by
    stem: a.png and a.jpg would share a.txt) get their position as a prefix. Returns each
    split's image names, in the cases' order."""
    written: dict[str, list[str]] = {}
    for split, cases in splits.items():
        images, labels = folder / "images" / split, folder / "labels" / split
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        taken: set[str] = set()
        written[split] = []
        for i, case in enumerate(cases):
            name = case.name if Path(case.name).stem not in taken else f"{i:06d}_{case.name}"
            taken.add(Path(name).stem)
            if copy_all or case.copy:
                shutil.copyfile(case.image, images / name)
            else:
                dataset.link(case.image, images / name)
            (labels / Path(name).with_suffix(".txt")).write_text(case.label)
            written[split].append(name)
    return written


def learn_from(cfg: DictConfig, splits: Splits, feedback: list[Logged]) -> Splits:
    """`splits` with the inspectors' labelled images added to training: a new YOLO data set
    in the cache (keyed by its contents) that links the original images and copies the
    feedback ones, since ultralytics trains from one data.yaml."""
    names = list(splits.train.names)
    cases, counts = feedback_cases(feedback, names)
    if not cases:
        raise _nothing_usable(feedback, counts)
    parts = {"train": splits.train, "val": splits.val}
    if splits.test.split == "test":
        parts["test"] = splits.test
    listed = {split: _cases_of(part.images) for split, part in parts.items()}
    listed["train"] += cases
    signature = key(
        str(splits.train.yaml),
        {s: [str(p) for p in part.images] for s, part in parts.items()},
        [(c.name, c.label) for c in cases],
    )
    folder = Path(cfg.paths.cache_dir) / "manufacturing" / f"feedback-{signature}"

    def build(tmp: Path) -> None:
        write_cases(tmp, listed)
        dataset.write_data_yaml(tmp / "data.yaml", folder, names, list(listed))

    loaded = dataset.load(build_once(folder, build) / "data.yaml")
    test = loaded.get("test", loaded["val"])
    info = {**splits.info, "n_train": len(loaded["train"]), "feedback": counts}
    return Splits(loaded["train"], loaded["val"], test, info)


# -- the holdout: a folder of its own ---------------------------------------------------


def _write_holdout(folder: Path, cases: list[Case], names: list[str], source: str) -> None:
    """Copies of the images and labels, a data.yaml without `path:` (ultralytics then reads
    the folders against the yaml's own folder, so the holdout can move) and holdout.json
    (classes, where the images came from and their order, which `score_cases` counts by)."""
    written = write_cases(folder, {HOLDOUT_SPLIT: cases}, copy_all=True)[HOLDOUT_SPLIT]
    doc = {s: f"images/{HOLDOUT_SPLIT}" for s in ("train", "val", HOLDOUT_SPLIT)}
    doc["names"] = dict(enumerate(names))
    (folder / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    meta = {"format": _FORMAT, "split": HOLDOUT_SPLIT, "source_split": source,
            "names": list(names), "images": written}  # fmt: skip
    (folder / HOLDOUT_JSON).write_text(json.dumps(meta, indent=2) + "\n")


def save_holdout(data: ImageSet, directory: Path) -> None:
    """`data`'s images and labels copied into `directory` (images/test, labels/test,
    data.yaml, holdout.json), replacing a holdout written there before."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".holdout-", dir=directory))
    try:  # written aside first: `data` may be the holdout already in `directory`
        _write_holdout(tmp, _cases_of(data.images), list(data.names), data.split)
        for name in ("images", "labels"):
            shutil.rmtree(directory / name, ignore_errors=True)
            os.replace(tmp / name, directory / name)
        for name in ("data.yaml", HOLDOUT_JSON):
            os.replace(tmp / name, directory / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_holdout(directory: Path) -> ImageSet:
    """The holdout `save_holdout` wrote, its images in the saved order."""
    directory = Path(directory).expanduser().resolve()
    meta_path = directory / HOLDOUT_JSON
    if not meta_path.is_file():
        raise UserError(f"{directory} is not a manufacturing holdout: it has no {HOLDOUT_JSON}")
    meta = json.loads(meta_path.read_text())
    images = [directory / "images" / meta["split"] / name for name in meta["images"]]
    missing = [p for p in images if not p.is_file()]
    if missing:
        raise UserError(f"holdout {directory}: {len(missing)} image(s) missing, e.g. {missing[0]}")
    return ImageSet(directory / "data.yaml", meta["split"], images, list(meta["names"]))


def extend_holdout(model: DefectModel, holdout: ImageSet, feedback: list[Logged]) -> ImageSet:
    """`holdout` plus the labelled images of `feedback`, as a new holdout folder in the
    temporary folder (keyed by contents; the champion's holdout is left as it is). With no
    labelled image in `feedback`, `holdout` itself."""
    cases, counts = feedback_cases(feedback, list(holdout.names))
    if not cases:
        log.warning("no feedback image with boxes to add to the holdout (%s)", counts)
        return holdout
    base = _cases_of(holdout.images)
    signature = key(
        [(str(c.image), c.image.stat().st_mtime_ns, c.label) for c in base],
        [(c.name, c.label) for c in cases],
        holdout.names,
    )
    folder = Path(tempfile.gettempdir()) / "verticals-manufacturing" / f"holdout-{signature}"
    source = holdout.split
    build_once(folder, lambda tmp: _write_holdout(tmp, base + cases, list(holdout.names), source))
    return load_holdout(folder)


# -- per-image answers for the bootstrap ------------------------------------------------


def _where(path: str | Path) -> str:
    """A file's place with its folder's links resolved, not its own: ultralytics resolves
    a split's folder and globs it, so a linked image keeps its name."""
    path = str(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def val_stats(model: DefectModel, data: ImageSet) -> tuple[list[dict], list[str]]:
    """ultralytics' per-image statistics (true positives at each IoU, confidences, classes)
    from the very validation `evaluate` runs, and the image files in the order it went."""
    captured: dict[str, Any] = {}

    def grab(validator: Any) -> None:
        captured["files"] = list(validator.dataloader.dataset.im_files)
        captured["stats"] = {k: list(v) for k, v in validator.metrics.stats.items()}

    net = model.network("torch")
    net.add_callback("on_val_batch_end", grab)
    try:
        with tempfile.TemporaryDirectory(prefix="verticals-val-") as tmp:
            evaluation.detection_metrics(model, data, Path(tmp) / "val", plots=False)
    finally:
        net.callbacks["on_val_batch_end"].remove(grab)
    stats, files = captured.get("stats", {}), captured.get("files", [])
    per_image = [{k: v[i] for k, v in stats.items()} for i in range(len(files))]
    return per_image, files


def box_metrics(per_image: list[dict], names: list[str]) -> dict[str, float]:
    """mAP50, mAP50-95, precision and recall of these images' statistics, computed by
    ultralytics' own code (`DetMetrics.process`) as its validation does."""
    ultralytics()  # its offline settings first
    from ultralytics.utils.metrics import DetMetrics

    metrics = DetMetrics(names=dict(enumerate(names)))
    metrics.stats = {k: [s[k] for s in per_image] for k in metrics.stats}
    metrics.process()
    box = metrics.box
    return dict(zip(_BOX_METRICS, (float(box.map50), float(box.map), float(box.mp),
                                   float(box.mr)), strict=True))  # fmt: skip


def score_cases(model: DefectModel, data: ImageSet) -> CaseScores | None:
    """Per-image answers from one validation and one inspection pass: any resample's mAP50,
    mAP50-95, precision, recall (ultralytics' code on the resampled images' statistics) and
    decision accuracy, escape and false reject rates. Per-class figures are left out (a
    resample may lack a class). None when ultralytics left images out of its validation
    (an unreadable image), since cases then no longer match."""
    per_image, files = val_stats(model, data)
    index = {_where(p): i for i, p in enumerate(data.images)}
    rank = np.full(len(data.images), -1)
    for order, file in enumerate(files):
        if _where(file) in index:
            rank[index[_where(file)]] = order
    if len(files) != len(data.images) or (rank < 0).any():
        log.warning("%s: ultralytics validated %d of %d images; no per-image scores",
                    data.yaml, len(files), len(data.images))  # fmt: skip
        return None
    table, _ = evaluation.inspections(model, data)
    names = list(model.names)

    def metrics(positions: np.ndarray) -> dict[str, float]:
        positions = np.asarray(positions, dtype=int)
        chosen = np.sort(rank[positions])  # validation's order: all positions give its arrays
        return {
            **box_metrics([per_image[i] for i in chosen], names),
            **evaluation.decision_metrics(table.iloc[positions]),
        }

    return CaseScores(len(data.images), metrics)


def case_keys(images: ImageSet) -> set[str]:
    """The sha256 of each image."""
    return file_keys(images.images)
