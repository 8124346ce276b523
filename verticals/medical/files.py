"""What the core's file serving and batch prediction call: a volume in, the label mask (as
NIfTI) and its volumes per label out; and test volumes copied as a user would have them."""

from __future__ import annotations

import gzip
import math
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

from verticals.core.contract import FileOutput, Splits
from verticals.core.errors import UserError
from verticals.medical.model import MedicalModel, segment

#: Most voxels a volume may have (its header says; the reader allocates 4+ bytes each).
MAX_VOXELS = 512**3 * 2
VOXELS_ENV = "VERTICALS_MAX_VOXELS"
ZIP = ".zip"  # a DICOM series as one upload
MAX_SLICES = 4096  # files of a zipped series
DICOM_HEADER_BYTES = 64 << 10  # allowed per file of a zipped series, beyond its voxels
#: Bytes a `.nii.gz` may inflate to beyond what its header accounts for.
GZIP_SLACK = 16 << 20
_CHUNK = 1 << 20


def predict_path(model: MedicalModel, path: Path) -> FileOutput:
    """Segment the volume (NIfTI file, DICOM series folder, or a zip of a DICOM series: one
    upload) at `path`; the volume's intensity and grid figures go along as the statistics
    the monitor watches."""
    if path.is_file() and path.name.lower().endswith(ZIP):
        with tempfile.TemporaryDirectory(prefix="verticals-dicom-") as folder:
            return predict_path(model, unpack_series(path, Path(folder)))
    if path.is_file():
        check_volume(path)
    seg = segment(model, path)
    summary = {
        "shape": [int(n) for n in seg.mask.shape],
        "spacing_mm": [round(s, 4) for s in seg.spacing],
        "labels": {str(k): v for k, v in model.labels.items()},
        "volumes_ml": seg.volumes_ml(model.foreground),
    }
    return FileOutput(
        summary, seg.nifti_gz(), ".nii.gz", "application/gzip", statistics=seg.statistics
    )


def example_files(splits: Splits, n: int, directory: Path) -> list[Path]:
    """Copy up to `n` test images (without their labels) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for item in splits.test[:n]:
        target = directory / Path(item["image"]).name
        shutil.copy2(item["image"], target)
        out.append(target)
    return out


def max_voxels() -> int:
    """The voxel limit: `VERTICALS_MAX_VOXELS` when set, else `MAX_VOXELS`."""
    given = os.environ.get(VOXELS_ENV, "").strip()
    try:
        return int(float(given)) if given else MAX_VOXELS
    except ValueError:
        raise UserError(f"{VOXELS_ENV}={given!r} is not a number of voxels") from None


def unpack_series(path: Path, into: Path) -> Path:
    """The `.dcm` files of a zipped DICOM series, written flat into `into` (no member can
    land outside it, whatever its name), after checking that they fit the voxel limit at
    2 bytes a voxel plus their headers (a zip bomb is refused before anything inflates)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{path.name} is not a zip archive of a DICOM series: {exc}") from None
    with archive:
        members = [m for m in archive.infolist()
                   if not m.is_dir() and m.filename.lower().endswith(".dcm")]  # fmt: skip
        if not members:
            raise UserError(f"{path.name} holds no .dcm files (a zipped DICOM series is expected)")
        if len(members) > MAX_SLICES:
            raise UserError(f"{path.name} holds {len(members)} files; at most {MAX_SLICES}")
        limit = max_voxels() * 2 + len(members) * DICOM_HEADER_BYTES
        if sum(m.file_size for m in members) > limit:
            raise UserError(f"{path.name} inflates past {limit} bytes: more voxels than "
                            f"{VOXELS_ENV} allows")  # fmt: skip
        try:  # zipfile reads a member up to its declared size and checks its CRC
            for number, member in enumerate(members):
                target = into / f"{number:05d}.dcm"
                with archive.open(member) as source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise UserError(f"{path.name} is a damaged zip archive: {exc}") from None
    return into


def check_volume(path: Path) -> None:
    """Refuse a NIfTI file before any reader allocates it: a header declaring more than
    `max_voxels()` voxels (a 1 MB file can declare 1024^3), and a `.nii.gz` that inflates
    past what its header accounts for (a gzip bomb) or ends early (truncated). Streams the
    file once: nothing is kept but the header."""
    gzipped = path.name.lower().endswith(".gz")
    try:
        with gzip.open(path, "rb") if gzipped else path.open("rb") as stream:
            expected = _expected_bytes(path, stream.read(540))
            if gzipped:
                _inflate_at_most(path, stream, expected + GZIP_SLACK)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise UserError(f"{path} is not a whole gzip file ({exc or 'it ends early'})") from None
    except OSError as exc:
        raise UserError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if not gzipped and path.stat().st_size < expected:
        raise UserError(f"{path} is truncated: its header accounts for {expected} bytes")


def _expected_bytes(path: Path, header: bytes) -> int:
    """The size of the NIfTI-1 or -2 file that `header` describes (offset + voxel data),
    after checking its voxel count against the limit."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(f"{order}i", header[:4])[0] == 348:
            dims = struct.unpack(f"{order}8h", header[40:56])
            bitpix = struct.unpack(f"{order}h", header[72:74])[0]
            offset = _offset(path, struct.unpack(f"{order}f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(f"{order}i", header[:4])[0] == 540:
            dims = struct.unpack(f"{order}8q", header[16:80])
            bitpix = struct.unpack(f"{order}h", header[14:16])[0]
            offset = _offset(path, struct.unpack(f"{order}q", header[168:176])[0])
            break
    else:
        raise UserError(f"{path} is not a NIfTI file: its header is not a NIfTI-1 or -2 header")
    voxels = _voxels(path, dims)
    if bitpix not in _BITPIX:
        raise UserError(f"{path}: its header says {bitpix} bits per voxel; not a NIfTI data type")
    return offset + voxels * max(bitpix, 8) // 8


_BITPIX = (1, 8, 16, 24, 32, 64, 128, 256)
_MAX_OFFSET = 1 << 20  # header and extensions: kilobytes in practice


def _offset(path: Path, value: float) -> int:
    """Where the voxels start, checked: a NaN or a huge offset would make the bomb limit
    (what the header accounts for) meaningless."""
    if not math.isfinite(value) or not 0 <= value <= _MAX_OFFSET:
        raise UserError(f"{path}: its header puts the voxel data at {value!r}; not a NIfTI file")
    return int(value)


def _voxels(path: Path, dims: tuple[int, ...]) -> int:
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(n < 1 for n in dims[1 : ndim + 1]):
        raise UserError(f"{path} has an invalid NIfTI header: dimensions {list(dims[: ndim + 1])}")
    voxels = 1
    for n in dims[1 : ndim + 1]:
        voxels *= n
    limit = max_voxels()
    if voxels > limit:
        shape = "x".join(str(n) for n in dims[1 : ndim + 1])
        raise UserError(
            f"{path} declares {shape} = {voxels} voxels; at most {limit} ({VOXELS_ENV})"
        )
    return voxels


def _inflate_at_most(path: Path, stream: gzip.GzipFile, limit: int) -> None:
    """Read `stream` to its end, refusing it once it has inflated past `limit` bytes."""
    total = 540
    while chunk := stream.read(_CHUNK):
        total += len(chunk)
        if total > limit:
            raise UserError(
                f"{path} inflates past {limit} bytes, more than its header accounts for "
                "(a gzip bomb, or data after the volume)"
            )
