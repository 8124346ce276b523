"""Retraining for the medical vertical: corrected masks become training cases, and a
champion's test cases are kept as a self-contained holdout that every challenger is scored on.

A feedback case is the uploaded volume (kept only under `log.keep_files=true`) with the
clinician's corrected mask. The mask is read by content (the log may keep it under any name),
renumbered into the label space being trained (by structure name, in case the predicting
model numbered them otherwise) and written once as NIfTI in the volume's own grid, so that
MONAI's loaders pair it with the volume voxel for voxel, as `check_outcome_file` accepted it.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import logging
import re
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from verticals.core.cache import build_once, key
from verticals.core.contract import CaseScores, Logged, RunContext, Splits
from verticals.core.errors import UserError
from verticals.core.holdout import file_keys
from verticals.core.runs import write_atomic
from verticals.medical import evaluation
from verticals.medical.decathlon import NIFTI
from verticals.medical.monitoring import read_mask

if TYPE_CHECKING:
    import pandas as pd
    from omegaconf import DictConfig

    from verticals.medical.model import MedicalModel

log = logging.getLogger(__name__)

HOLDOUT_FORMAT = 1
HOLDOUT_FILE = "holdout.json"
#: Why a feedback entry gave no case, in the words `info["feedback"]` counts them by.
NO_INPUT, NO_MASK, UNREADABLE, GRID, LABELS = (
    "no_input",
    "no_mask",
    "unreadable",
    "grid",
    "labels",
)


# -- feedback -> cases -----------------------------------------------------------------


def learn_from(cfg: DictConfig, splits: Splits, feedback: list[Logged]) -> Splits:
    """`splits` with one training case per feedback entry that kept its volume and got a
    corrected mask; entries without them, or whose mask does not fit, are counted and left out.
    """
    labels = {int(k): str(v) for k, v in splits.info["labels"].items()}
    channels = len(splits.info["modality"])
    root = Path(cfg.paths.cache_dir) / "medical" / "feedback"
    cases, skipped = feedback_cases(feedback, labels, channels, root)
    if not cases:
        raise UserError(_nothing_to_learn(len(feedback), skipped))
    info = dict(splits.info)
    info["feedback"] = {"cases": len(cases), "skipped": skipped}
    if isinstance(info.get("cases"), dict):
        info["cases"] = {**info["cases"], "train": len(splits.train) + len(cases)}
    return dataclasses.replace(splits, train=list(splits.train) + cases, info=info)


def extend_holdout(
    model: MedicalModel, holdout: list[dict[str, str]], feedback: list[Logged]
) -> list[dict[str, str]]:
    """`holdout` plus the usable feedback cases, in the label space of `model` (the champion
    whose holdout it is). Unusable entries are logged and left out, never fatal: the holdout
    still scores the models."""
    root = _scratch() / "holdout"
    cases, skipped = feedback_cases(feedback, dict(model.labels), model.in_channels, root)
    if skipped:
        log.warning("holdout: %d feedback case(s) left out: %s", sum(skipped.values()), skipped)
    return list(holdout) + cases


def feedback_cases(
    feedback: list[Logged], labels: dict[int, str], channels: int, root: Path
) -> tuple[list[dict[str, str]], dict[str, int]]:
    """The cases (`{"image", "label", "name"}`) the entries give, and how many were skipped
    per reason (NO_INPUT, NO_MASK, UNREADABLE, GRID, LABELS)."""
    cases: list[dict[str, str]] = []
    skipped: dict[str, int] = {}
    for entry in feedback:
        case = feedback_case(entry, labels, channels, root)
        if isinstance(case, str):
            skipped[case] = skipped.get(case, 0) + 1
        else:
            cases.append(case)
    return cases, skipped


def feedback_case(
    entry: Logged, labels: dict[int, str], channels: int, root: Path
) -> dict[str, str] | str:
    """One entry's training case, or the reason it gives none."""
    image, corrected = entry.files.get("input"), entry.files.get("outcome")
    if image is None or not Path(image).is_file():
        return NO_INPUT
    if corrected is None or not Path(corrected).is_file():
        return NO_MASK
    try:
        shape, affine, image_channels = _volume_grid(Path(image))
        mask, _ = read_mask(Path(corrected))
    except UserError as exc:
        log.warning("feedback %s: %s", entry.request_id, exc)
        return UNREADABLE
    if mask.shape != shape or image_channels != channels:
        log.warning("feedback %s: mask %s, volume %s with %d channel(s), model %d",
                    entry.request_id, list(mask.shape), list(shape), image_channels,
                    channels)  # fmt: skip
        return GRID
    renumbered = renumber(mask, _logged_labels(entry), labels)
    if renumbered is None:
        return LABELS
    name = _case_name(entry)
    label = stage_mask(renumbered, affine, root, name)
    return {"image": str(image), "label": str(label), "name": name}


def _volume_grid(path: Path) -> tuple[tuple[int, ...], np.ndarray, int]:
    """(spatial shape, affine, channels) of a NIfTI volume, from its header alone."""
    import nibabel as nib

    if not path.name.lower().endswith(NIFTI):
        raise UserError(f"{path.name} is not a NIfTI file (.nii.gz, .nii)")
    try:
        header = nib.load(path)
    except Exception as exc:  # nibabel raises several types for damaged files
        raise UserError(f"{path.name} cannot be read as NIfTI: {exc}") from None
    shape = tuple(int(n) for n in header.shape)
    if len(shape) not in (3, 4):
        raise UserError(f"{path.name} is {len(shape)}-D; expected a 3-D volume")
    return shape[:3], np.asarray(header.affine, dtype=float), shape[3] if len(shape) == 4 else 1


def _logged_labels(entry: Logged) -> dict[int, str] | None:
    """The label numbering of the model that made the prediction, as its summary says."""
    summary = entry.outputs if isinstance(entry.outputs, dict) else {}
    logged = summary.get("labels")
    return {int(k): str(v) for k, v in logged.items()} if isinstance(logged, dict) else None


def renumber(
    mask: np.ndarray, logged: dict[int, str] | None, labels: dict[int, str]
) -> np.ndarray | None:
    """`mask` (numbered as `logged`, or already as `labels` when None) numbered as `labels`,
    matching structures by name; None when it holds a structure `labels` lacks."""
    values = np.unique(mask)
    if values.min() < 0:
        return None
    index = {name: k for k, name in labels.items()}
    table = np.full(int(values.max()) + 1, -1, dtype=np.int64)
    for value in values.tolist():
        if value == 0:  # background, whatever either model calls it
            table[0] = 0
        elif logged is None:
            table[value] = value if value in labels else -1
        else:
            table[value] = index.get(logged.get(value, ""), -1)
    if (table[values] < 0).any():
        return None
    return table[mask].astype(np.uint8)


def stage_mask(mask: np.ndarray, affine: np.ndarray, root: Path, name: str) -> Path:
    """Write `mask` in the volume's grid (its affine) once, in a folder keyed by content."""
    import nibabel as nib

    digest = hashlib.sha256(mask.tobytes()).hexdigest()
    folder = root / key(digest, list(mask.shape), affine.tolist(), name)
    target = f"{name}.nii.gz"

    def build(tmp: Path) -> None:
        nib.save(nib.Nifti1Image(mask, affine), tmp / target)

    return build_once(folder, build) / target


def _case_name(entry: Logged) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", entry.request_id).strip("._") or "case"
    return f"feedback_{safe[:80]}"


def _nothing_to_learn(total: int, skipped: dict[str, int]) -> str:
    """One line saying why no feedback case could be used, and what to change."""
    if total == 0:
        return "no feedback to learn from: post corrected masks to /feedback first"
    if skipped.get(NO_INPUT, 0) == total:
        return (
            f"none of the {total} corrected predictions kept its input volume: serve with "
            "log.keep_files=true and post corrected masks to /feedback"
        )
    if skipped.get(NO_MASK, 0) + skipped.get(NO_INPUT, 0) == total:
        return (
            f"none of the {total} feedback entries has both a kept input volume and a corrected "
            f"mask ({skipped}): serve with log.keep_files=true and post corrected masks"
        )
    return f"none of the {total} feedback entries gave a usable case (skipped: {skipped})"


_SCRATCH: list[Path] = []


def _scratch() -> Path:
    """A folder for this process's staged holdout masks, removed when it exits."""
    if not _SCRATCH:
        folder = Path(tempfile.mkdtemp(prefix="verticals-medical-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _SCRATCH.append(folder)
    return _SCRATCH[0]


# -- the holdout as files --------------------------------------------------------------


def save_holdout(data: list[dict[str, str]], directory: Path) -> None:
    """Copy each case's image and label into `directory` and list them in `holdout.json`
    (relative paths), so the holdout outlives its data source and can be moved."""
    directory = Path(directory)
    cases = []
    for number, item in enumerate(data):
        prefix = f"{number:04d}_"
        image = _copy(Path(item["image"]), directory / "images", prefix)
        label = _copy(Path(item["label"]), directory / "labels", prefix)
        cases.append({"name": str(item["name"]), "image": image, "label": label})
    listing = {"format": HOLDOUT_FORMAT, "cases": cases}
    write_atomic(directory / HOLDOUT_FILE, json.dumps(listing, indent=1) + "\n")


def _copy(source: Path, folder: Path, prefix: str) -> str:
    """Copy a file (or a DICOM series folder) keeping its ending; its path under the
    holdout's folder."""
    if not source.exists():
        raise UserError(f"holdout case file {source} is missing")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{prefix}{source.name}"
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)
    return target.relative_to(folder.parent).as_posix()


def load_holdout(directory: Path) -> list[dict[str, str]]:
    """The cases `save_holdout` wrote, with absolute paths into `directory`."""
    directory = Path(directory).resolve()
    path = directory / HOLDOUT_FILE
    try:
        listing = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is missing: not a medical holdout folder") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(listing, dict) or listing.get("format") != HOLDOUT_FORMAT:
        raise UserError(f"{path}: not a medical holdout of format {HOLDOUT_FORMAT}")
    return [_case(directory, case, path) for case in listing.get("cases") or []]


def _case(directory: Path, case: Any, listing: Path) -> dict[str, str]:
    if not isinstance(case, dict) or not {"name", "image", "label"} <= case.keys():
        raise UserError(f"{listing}: each case needs name, image and label")
    out = {"name": str(case["name"])}
    for part in ("image", "label"):
        path = (directory / str(case[part])).resolve()
        if not path.is_relative_to(directory) or not path.exists():
            raise UserError(f"{listing}: case {case['name']}: {part} {case[part]} is missing")
        out[part] = str(path)
    return out


# -- per-case scores, shared with evaluate ---------------------------------------------

#: Per-case tables of recent (model, cases) pairs, so that `evaluate` then `score_cases` on
#: one holdout segment each volume once. Keyed by the network's identity (held weakly) and
#: its weights' versions, which in-place training bumps.
_TABLES: dict[tuple[Any, ...], tuple[weakref.ref[Any], pd.DataFrame]] = {}
_TABLES_KEPT = 4


def evaluate(
    model: MedicalModel, items: list[dict[str, str]], ctx: RunContext | None = None
) -> dict[str, float]:
    """`evaluation.evaluate`; without a run's `ctx` (no plots or files to write), through the
    per-case table that `score_cases` reuses."""
    if ctx is not None:
        return evaluation.evaluate(model, items, ctx)
    return evaluation.summarise(case_table(model, items), model.foreground)


def score_cases(model: MedicalModel, items: list[dict[str, str]]) -> CaseScores:
    """Dice and HD95 per label and their means on any resample of the cases, computed as
    `evaluate` computes them (a label's mean over the cases that have it, then the mean over
    labels), so that all positions give `evaluate`'s figures."""
    table = case_table(model, items)
    names = list(model.foreground.values())
    dice = _column_block(table, "dice", names)
    hd95 = _column_block(table, "hd95", names)

    def metrics(positions: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {}
        for prefix, block in (("dice", dice), ("hd95", hd95)):
            means = _nan_means(block[positions], axis=0)
            out.update({f"{prefix}_{n}": float(v) for n, v in zip(names, means, strict=True)})
            out[f"{prefix}_mean"] = float(_nan_means(means[None, :], axis=1)[0])
        return out

    return CaseScores(len(table), metrics)


def _column_block(table: pd.DataFrame, prefix: str, names: list[str]) -> np.ndarray:
    if table.empty:
        return np.zeros((0, len(names)))
    return table[[f"{prefix}_{n}" for n in names]].to_numpy(dtype=float)


def _nan_means(values: np.ndarray, axis: int) -> np.ndarray:
    """Means skipping NaN, NaN where all are (as pandas' mean; without numpy's warning)."""
    seen = ~np.isnan(values)
    counts = seen.sum(axis=axis)
    sums = np.where(seen, values, 0.0).sum(axis=axis)
    return np.divide(sums, counts, out=np.full(sums.shape, np.nan), where=counts > 0)


def case_table(model: MedicalModel, items: list[dict[str, str]]) -> pd.DataFrame:
    """`evaluation.per_case` of `items`, reused while the model and the files are unchanged."""
    cache_key = _table_key(model, items)
    hit = _TABLES.get(cache_key)
    if hit is not None and hit[0]() is model.network:
        return hit[1]
    table, _ = evaluation.per_case(model, items)
    _TABLES.pop(cache_key, None)
    _TABLES[cache_key] = (weakref.ref(model.network), table)
    while len(_TABLES) > _TABLES_KEPT:
        _TABLES.pop(next(iter(_TABLES)))
    return table


def _table_key(model: MedicalModel, items: list[dict[str, str]]) -> tuple[Any, ...]:
    tensors = [*model.network.parameters(), *model.network.buffers()]
    weights = tuple((t.data_ptr(), t._version) for t in tensors)
    settings = json.dumps(
        [model.prep, model.roi, model.sw_batch_size, model.sw_overlap, model.device,
         model.precision, sorted(model.labels.items())],
        sort_keys=True, default=str,
    )  # fmt: skip
    files = tuple(
        (item["name"], *(_stamp(Path(item[part])) for part in ("image", "label"))) for item in items
    )
    return (id(model.network), weights, settings, files)


def _stamp(path: Path) -> tuple[str, int, int]:
    """A file's identity for the cache: path, size and modification time."""
    try:
        stat = path.stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path), stat.st_size, stat.st_mtime_ns)


def case_keys(cases: list[dict[str, str]]) -> set[str]:
    """The sha256 of each case's image."""
    return file_keys([c["image"] for c in cases])
