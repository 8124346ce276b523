"""A content hash of a data set in whatever form a vertical holds it.

The tracking store records which data a run trained on; a vertical's splits can be data
frames, arrays, sparse matrices, tensors, dataclasses or lists of file paths (volumes,
images). `fingerprint` walks them and hashes the content: a table by pandas' row hashes,
an array by its bytes, a file a string names by the file's bytes. Same data, same digest,
whatever folder it was read from.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

_MAX_DEPTH = 8
_MAX_PATH = 4096


def fingerprint(*parts: Any, length: int = 16) -> str:
    """The hex digest (first `length` characters of a sha256) of `parts`' content."""
    digest = hashlib.sha256()
    _Feeder(digest).feed(parts, 0)
    return digest.hexdigest()[:length]


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Feeder:
    def __init__(self, digest: Any) -> None:
        self.digest = digest
        self.seen: set[int] = set()
        self.files: dict[str, str] = {}  # a file named twice is read once

    def put(self, *chunks: str | bytes) -> None:
        for chunk in chunks:
            self.digest.update(chunk if isinstance(chunk, bytes) else chunk.encode())

    def feed(self, obj: Any, depth: int) -> None:  # noqa: C901 - one branch per kind
        if obj is None or isinstance(obj, bool | int | float | complex):
            self.put(f"{type(obj).__name__}:{obj!r};")
        elif isinstance(obj, bytes):
            self.put(b"bytes:", obj)
        elif isinstance(obj, str | Path):
            self._path_or_text(obj)
        elif hasattr(obj, "__fingerprint__"):  # says what it is cheaper than its contents
            self.put(f"{type(obj).__name__}:", str(obj.__fingerprint__()), ";")
        elif depth > _MAX_DEPTH or id(obj) in self.seen:
            self.put(f"<{type(obj).__name__}>;")
        else:
            self.seen.add(id(obj))
            self._container(obj, depth + 1)

    def _path_or_text(self, value: str | Path) -> None:
        text = str(value)
        if len(text) < _MAX_PATH and os.path.isfile(text):
            if text not in self.files:
                self.files[text] = file_digest(text)
            self.put("file:", self.files[text], ";")
        else:
            self.put("str:", text, ";")

    def _container(self, obj: Any, depth: int) -> None:
        module = type(obj).__module__.split(".")[0]
        if module == "pandas" and hasattr(obj, "to_numpy"):
            self._pandas(obj)
        elif module == "numpy" and hasattr(obj, "dtype"):
            self._array(obj)
        elif module == "scipy" and hasattr(obj, "tocsr"):
            csr = obj.tocsr()
            self.put(f"sparse{csr.shape};")
            for part in (csr.data, csr.indices, csr.indptr):
                self._array(part)
        elif module == "torch" and hasattr(obj, "detach"):
            self._array(obj.detach().cpu().numpy())
        elif isinstance(obj, dict):
            for key in sorted(obj, key=str):
                self.put(f"key:{key!s};")
                self.feed(obj[key], depth)
        elif isinstance(obj, list | tuple):
            self.put(f"{type(obj).__name__}[{len(obj)}];")
            for item in obj:
                self.feed(item, depth)
        elif isinstance(obj, set | frozenset):
            for item in sorted(obj, key=repr):
                self.feed(item, depth)
        elif is_dataclass(obj):
            self.put(f"{type(obj).__name__}(")
            for f in fields(obj):
                self.put(f"{f.name}=")
                self.feed(getattr(obj, f.name), depth)
        elif hasattr(obj, "__dict__") and not callable(obj):
            self.put(f"{type(obj).__name__}(")
            for key, value in sorted(vars(obj).items()):
                if not callable(value):
                    self.put(f"{key}=")
                    self.feed(value, depth)
        else:
            self.put(f"<{type(obj).__name__}>;")

    def _pandas(self, obj: Any) -> None:
        import numpy as np
        import pandas as pd

        if isinstance(obj, pd.DataFrame):
            self.put(f"frame{obj.shape};", *(f"{c}:{t};" for c, t in obj.dtypes.items()))
        try:
            hashed = pd.util.hash_pandas_object(obj, index=True).to_numpy()
        except TypeError:  # a kind pandas does not hash (a Categorical on its own)
            hashed = np.asarray(obj, dtype=object)
        self._array(hashed)

    def _array(self, array: Any) -> None:
        import numpy as np

        if array.dtype == object:
            self.put(f"objects{array.shape};", repr(array.tolist()))
            return
        self.put(f"array{array.shape}{array.dtype.str};")
        self.put(np.ascontiguousarray(array).tobytes())
