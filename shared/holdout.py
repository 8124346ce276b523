"""The holdout a champion and its challengers are scored on, fixed and kept with the registry.

A holdout is a folder under `<tracking_dir>/holdouts/<vertical>/`: the vertical's own copy of
its cases (`Vertical.save_holdout`: tables, or the files themselves) in `data/`, and
`holdout.json` with where the cases came from, the request ids of any feedback in it (which
no challenger may train on) and the sha256 of every file. A registered version names its
holdout and that file's sha256 in its tags, so a holdout edited after the fact is refused
rather than silently scored on.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from verticals.core.contract import Logged, Vertical
from verticals.core.errors import UserError
from verticals.core.fingerprint import file_digest as _sha256
from verticals.core.runs import timestamp

TAG = "verticals.holdout"
DIGEST_TAG = "verticals.holdout_sha256"
META = "holdout.json"
DATA = "data"


@dataclass
class Holdout:
    folder: Path
    data: Any
    feedback_ids: set[str] = field(default_factory=set)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return _sha256(self.folder / META)

    def describe(self) -> str:
        base = self.meta.get("base", {})
        fed = len(self.feedback_ids)
        extra = f" + {fed} feedback cases" if fed else ""
        return f"{self.folder.name} ({base.get('from', '?')}{extra})"


def root(cfg: Any, vertical: str) -> Path:
    return Path(str(cfg.paths.tracking_dir)).expanduser().resolve() / "holdouts" / vertical


def write(
    vertical: Vertical,
    data: Any,
    where: Path,
    base: dict[str, Any],
    feedback_ids: set[str] | None = None,
    name: str | None = None,
) -> Holdout:
    """Save a holdout atomically under `where` (a crash leaves no half-written folder that
    reads as one); `base`: where its cases came from, for the report."""
    where.mkdir(parents=True, exist_ok=True)
    name = name or f"holdout-{timestamp()}"
    final = where / name
    partial = where / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    vertical.save_holdout(data, partial / DATA)
    files = {
        str(p.relative_to(partial)): _sha256(p)
        for p in sorted((partial / DATA).rglob("*"))
        if p.is_file()
    }
    meta = {
        "vertical": vertical.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "base": base,
        "feedback_ids": sorted(feedback_ids or ()),
        "files": files,
    }
    (partial / META).write_text(json.dumps(meta, indent=1))
    if final.exists():  # the same name again (a retry): the new one replaces it
        shutil.rmtree(final)
    os.replace(partial, final)
    return Holdout(final, data, set(meta["feedback_ids"]), meta)


def read(vertical: Vertical, folder: Path, digest: str | None = None) -> Holdout:
    """A saved holdout, its files checked; a one-line `UserError` naming what changed."""
    meta_path = folder / META
    if not meta_path.is_file():
        raise UserError(f"the holdout {folder} is missing (no {META})")
    if digest and _sha256(meta_path) != digest:
        raise UserError(f"the holdout {meta_path} changed since it was registered")
    meta = json.loads(meta_path.read_text())
    for name, expected in meta["files"].items():
        path = folder / name
        if not path.is_file() or _sha256(path) != expected:
            raise UserError(f"the holdout file {path} is missing or changed since it was saved")
    data = vertical.load_holdout(folder / DATA)
    return Holdout(folder, data, set(meta.get("feedback_ids", [])), meta)


def file_keys(paths: list[Path] | list[str]) -> set[str]:
    """The sha256 of each input file: the case keys of a file vertical (a folder input, a
    DICOM series, has none)."""
    return {_sha256(Path(p)) for p in paths if Path(p).is_file()}


def input_key(entry: Logged) -> set[str]:
    """The sha256 of a logged upload, from where the log kept it (`<sha[:2]>/<sha>/<name>`);
    none when it kept no file."""
    path = entry.files.get("input")
    sha = path.parent.name if path is not None else ""
    return {sha} if len(sha) == 64 else set()
