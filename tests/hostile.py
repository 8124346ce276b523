"""Hand-made hostile inputs for the upload endpoints: odd file names, images and volumes
that declare huge sizes, gzip bombs. Shared by the limits tests and the fuzzing tests."""

from __future__ import annotations

import gzip
import struct
import zlib

#: Upload names a server must refuse (422), and the words its message gives why.
BAD_NAMES: tuple[tuple[bytes, str], ...] = (
    (b"scan\x00", "control characters"),
    (b"scan\x01", "control characters"),
    (b"a" * 300, "255 bytes"),
    (b"../../etc/", "without folders"),
    (b"..\\x", "without folders"),
)


def multipart(name: bytes, data: bytes) -> tuple[bytes, dict[str, str]]:
    """A multipart body by hand: clients escape odd names, a hostile one does not."""
    boundary = b"limitsboundary"
    body = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + name + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--" + boundary + b"--\r\n"
    )
    return body, {"content-type": f"multipart/form-data; boundary={boundary.decode()}"}


def png(width: int, height: int) -> bytes:
    """A few hundred bytes that declare a `width` x `height` RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 10_000)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def nifti_header(shape: tuple[int, ...], bitpix: int = 8) -> bytes:
    """A NIfTI-1 header (348 bytes and the 4-byte extension flag) for a uint8 volume."""
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, len(shape), *shape, *[1] * (7 - len(shape)))
    struct.pack_into("<hh", header, 70, 2, bitpix)  # datatype uint8
    struct.pack_into("<8f", header, 76, 1, *[1.0] * 7)  # pixdim
    struct.pack_into("<f", header, 108, 352.0)  # vox_offset
    header[344:348] = b"n+1\0"
    return bytes(header)


def gzip_bomb(inflated: int = 1 << 30) -> bytes:
    """A valid 16^3 volume's header followed by `inflated` bytes of zeros, about 1 MB
    gzipped: members of 16 MiB of zeros, each compressed once and repeated."""
    member = gzip.compress(b"\0" * (16 << 20), compresslevel=9, mtime=0)
    head = gzip.compress(nifti_header((16, 16, 16)) + b"\0" * 16**3, mtime=0)
    return head + member * (inflated // (16 << 20))
