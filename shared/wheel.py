"""Rebuild the wheel of an installed distribution, so a bundle carries the code that serves it.

A bundle must install on a machine that has only the bundle: the suite is on no package
index, so `verticals package` writes the suite's own wheel into the bundle. The wheel is
made from what is installed here (the same code that trained and packaged the model), with
no build tool and no network: a regular install's files come from its RECORD, an editable
install's from the folders its import finder maps (setuptools' editable finder, or a path
in its `.pth` file). The zip is written with fixed times, so the same code gives the same
bytes and the same sha256 in the manifest. (From an editable install, the wheel holds the
working tree as it is at package time, uncommitted changes included.)
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from importlib.metadata import Distribution, distributions
from pathlib import Path

from verticals.core.errors import UserError

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip file can hold
_SKIP_PARTS = {"__pycache__", ".ipynb_checkpoints"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


def _normalise(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")


def _metadata_file(dist: Distribution, name: str) -> str | None:
    text = dist.read_text(name)
    return text if text else None


def _editable_mapping(dist: Distribution) -> dict[str, Path]:
    """Import package -> source folder for an editable install (empty for a regular one)."""
    direct = _metadata_file(dist, "direct_url.json")
    if not direct or not json.loads(direct).get("dir_info", {}).get("editable"):
        return {}
    mapping: dict[str, Path] = {}
    for file in dist.files or []:
        located = Path(str(dist.locate_file(file)))
        if file.name.startswith("__editable__") and file.name.endswith("_finder.py"):
            tree = ast.parse(located.read_text())
            for node in tree.body:  # `MAPPING: dict[str, str] = {...}`, a literal
                target = getattr(node, "target", None)
                if isinstance(target, ast.Name) and target.id == "MAPPING":
                    mapping.update({k: Path(v) for k, v in ast.literal_eval(node.value).items()})
        elif file.name.endswith(".pth") and not mapping:
            for line in located.read_text().splitlines():  # a plain path entry: src layout
                folder = Path(line.strip())
                if line.strip() and not line.startswith("import") and folder.is_dir():
                    for top in (_metadata_file(dist, "top_level.txt") or "").split():
                        if (folder / top).is_dir():
                            mapping[top] = folder / top
    if not mapping:
        raise UserError(
            f"cannot rebuild the wheel of {dist.metadata['Name']}: it is installed in editable "
            "mode in a way this suite does not read; install it with `pip install .`"
        )
    return mapping


def _package_files(dist: Distribution) -> Iterator[tuple[str, Path]]:
    """(path inside the wheel, file on disk) for every importable file of `dist`."""
    mapping = _editable_mapping(dist)
    if mapping:
        for package, folder in sorted(mapping.items()):
            prefix = package.replace(".", "/")
            for path in sorted(folder.rglob("*")):
                rel = path.relative_to(folder)
                hidden = any(part.startswith(".") or part in _SKIP_PARTS for part in rel.parts)
                if path.is_file() and not hidden and not path.name.endswith(_SKIP_SUFFIXES):
                    yield f"{prefix}/{rel.as_posix()}", path
        return
    for file in dist.files or []:
        rel = file.as_posix()
        if rel.startswith("..") or ".dist-info/" in rel or rel.endswith(_SKIP_SUFFIXES):
            continue  # scripts in bin/, metadata (rewritten below), byte code
        if _SKIP_PARTS & set(file.parts) or rel.endswith(".pth"):
            continue
        yield rel, Path(str(dist.locate_file(file)))


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def _installed(name: str) -> Distribution:
    """The installed distribution `name`, as pip installed it (a `.dist-info` with a RECORD).

    A checkout on `sys.path` also holds the `.egg-info` that an editable install leaves in
    the source tree; its file list is relative to the source, not to site-packages.
    """
    wanted = _normalise(name).lower()
    found = [d for d in distributions() if _normalise(d.metadata["Name"] or "").lower() == wanted]
    for dist in found:
        if dist.read_text("RECORD") is not None:
            return dist
    if found:
        return found[0]
    raise UserError(f"{name} is not installed, so it cannot be put into the bundle")


def build_wheel(name: str, out_dir: Path) -> Path:
    """Write `<name>-<version>-py3-none-any.whl` into `out_dir` from the installed `name`."""
    dist = _installed(name)
    version = dist.version
    base = f"{_normalise(dist.metadata['Name'])}-{version}"
    info = f"{base}.dist-info"
    entries = [(arc, path.read_bytes()) for arc, path in _package_files(dist)]
    if not entries:
        raise UserError(f"no files found for the installed {name}; reinstall it")
    wheel_meta = "Wheel-Version: 1.0\nGenerator: verticals.core.wheel\nRoot-Is-Purelib: true\n"
    meta = _metadata_file(dist, "METADATA") or _metadata_file(dist, "PKG-INFO") or ""
    entries.append((f"{info}/METADATA", meta.encode()))
    entries.append((f"{info}/WHEEL", (wheel_meta + "Tag: py3-none-any\n").encode()))
    for extra in ("entry_points.txt", "top_level.txt"):
        text = _metadata_file(dist, extra)
        if text:
            entries.append((f"{info}/{extra}", text.encode()))
    record = io.StringIO()
    for arc, data in entries:
        record.write(f"{arc},{_record_hash(data)},{len(data)}\n")
    record.write(f"{info}/RECORD,,\n")
    entries.append((f"{info}/RECORD", record.getvalue().encode()))

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{base}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for arc, data in entries:
            item = zipfile.ZipInfo(arc, date_time=_EPOCH)
            item.external_attr = 0o644 << 16
            item.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(item, data)
    return target
