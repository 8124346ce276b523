"""Folders built once and reused: generated demo data, converted data sets.

A folder is built under a hidden temporary name and renamed into place, so a crash never
leaves half a data set that a later run would trust; two processes building the same
folder at once both succeed and one result is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def key(*parts: Any) -> str:
    """A short, stable name for the settings that determine a folder's contents."""
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:12]


def build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """`folder`, calling `build(tmp)` to fill it first when it does not exist yet."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        build(tmp)
        os.replace(tmp, folder)
    except OSError:
        if not folder.is_dir():  # not "another process finished first": a real failure
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    return folder
