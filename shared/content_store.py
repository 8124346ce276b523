"""A folder of files named by their content: `<root>/<sha[:2]>/<sha256>/<name>`.

The prediction log keeps uploaded inputs, output files and corrected outcomes here, so the
same scan sent twice is stored once, and a row names its file by hash alone. The file keeps
its first name inside its hash's folder: readers (nibabel, OpenCV) pick a format from the
ending.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

_SAFE_NAME = 200  # UTF-8 bytes of a stored name (endings are what matters to readers)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ContentStore:
    """Files by sha256 under `root` (created when the first file is put)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def folder(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes, name: str, sha256: str | None = None) -> str:
        """Store `data` (once per content) and return its sha256."""
        sha256 = sha256 or digest(data)
        folder = self.folder(sha256)
        if folder.is_dir() and any(folder.iterdir()):
            return sha256
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".put-", dir=folder.parent))
        try:
            (tmp / safe_name(name)).write_bytes(data)
            try:
                os.rename(tmp, folder)  # whole or not at all; a racing writer wins
            except OSError:
                if not folder.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return sha256

    def path(self, sha256: str | None) -> Path | None:
        """The stored file of `sha256`, or None when it is not kept."""
        if not sha256:
            return None
        folder = self.folder(sha256)
        if not folder.is_dir():
            return None
        return next((p for p in folder.iterdir() if p.is_file()), None)

    def remove_except(self, keep: set[str], younger_s: float = 3600.0) -> int:
        """Delete every stored file whose hash is not in `keep` (after a prune), except
        those stored in the last `younger_s` seconds: their rows may still be on their way
        (in a server's spool, or a feedback not yet committed)."""
        removed = 0
        if not self.root.is_dir():
            return 0
        recent = time.time() - younger_s
        for folder in self.root.glob("??/*"):
            if not folder.is_dir() or folder.name in keep or folder.name.startswith("."):
                continue
            if folder.stat().st_mtime > recent:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
        return removed


def safe_name(name: str) -> str:
    """A file name fit for any file system, its ending kept: no folders, NUL or control
    characters, at most 200 bytes of UTF-8."""
    base = Path(name.replace("\\", "/")).name
    cleaned = "".join(c if c.isprintable() and c not in '<>:"|?*' else "_" for c in base)
    cleaned = cleaned.strip(" .") or "file"
    if len(cleaned.encode()) > _SAFE_NAME:
        dot = cleaned.find(".", len(cleaned) - 20)
        ending = cleaned[dot:] if dot > 0 else ""
        cleaned = _utf8_prefix(
            cleaned[: len(cleaned) - len(ending)], _SAFE_NAME - len(ending.encode())
        )
        cleaned += ending
    return cleaned


def _utf8_prefix(text: str, size: int) -> str:
    """The longest start of `text` whose UTF-8 is at most `size` bytes: file systems count
    a name's bytes (255), not its characters."""
    return text.encode()[: max(size, 0)].decode("utf-8", "ignore")


def ending(name: str) -> str:
    """A file name's ending from its first dot (`.nii.gz`, `.png`), for a neutral name that
    readers still open by format."""
    base = safe_name(name)
    dot = base.find(".", 1)
    return base[dot:] if dot > 0 else ""
