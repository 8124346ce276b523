"""A Parquet table too big for one process, as pieces that Ray tasks read on their own.

A table is a file, a folder of files or a glob; its pieces are the files' row groups
(`Fragment`), listed from the Parquet footers without reading any rows. A training job
deals the pieces to its workers (`deal`), and each reads only its own (`read`). Rows go
to train, validation or test by a hash of their values (`hash_split`): the same row lands
in the same split whichever worker reads it and however the files are cut, and duplicated
rows never sit on both sides. `map_pieces` runs a function over groups of pieces as Ray
tasks and hands back what each returned: a profile pass, a scoring pass.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from verticals.core.errors import UserError

SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class Fragment:
    """One row group of one Parquet file. `source` is "<path>#<row group>", size and time
    of the file: what the table is, as text (a run's data fingerprint stays cheap)."""

    path: str
    row_group: int
    rows: int
    source: str

    def __fingerprint__(self) -> str:  # a run's data fingerprint: never read the rows
        return self.source


def is_parquet_table(path: str | None) -> bool:
    """Whether `path` names Parquet data: a .parquet/.pq file, a folder holding such files,
    or a glob."""
    if not path:
        return False
    if glob.has_magic(path):
        return True
    p = Path(path)
    if p.is_dir():
        return any(f.suffix.lower() in SUFFIXES for f in p.rglob("*"))
    return p.suffix.lower() in SUFFIXES


def files_of(path: str, what: str = "data.path") -> list[str]:
    """The Parquet files at `path`, sorted, as absolute paths (Ray tasks start elsewhere):
    the file, the folder's files, or the glob's (files of other kinds, such as Spark's
    `_SUCCESS`, are left out)."""
    if glob.has_magic(path):
        found = sorted(f for f in glob.glob(path, recursive=True)
                       if os.path.isfile(f) and Path(f).suffix.lower() in SUFFIXES)  # fmt: skip
    elif Path(path).is_dir():
        found = sorted(str(f) for f in Path(path).rglob("*") if f.suffix.lower() in SUFFIXES)
    elif Path(path).is_file():
        found = [path]
    else:
        raise UserError(f"{what}={path} does not exist")
    found = [os.path.abspath(f) for f in found]
    if not found:
        raise UserError(f"{what}={path} holds no .parquet files")
    return found


def fragments(path: str, what: str = "data.path") -> list[Fragment]:
    """Every row group of the table at `path`, from the files' footers (no rows read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = []
    for name in files_of(path, what):
        try:
            meta = pq.ParquetFile(name).metadata
        except (OSError, pa.ArrowException) as exc:
            raise UserError(f"{what}: {name} could not be read as Parquet: {exc}") from None
        stat = os.stat(name)
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            if rows:
                source = f"{name}#{group} ({stat.st_size} bytes, mtime {stat.st_mtime_ns})"
                out.append(Fragment(name, group, rows, source))
    if not out:
        raise UserError(f"{what}={path} has no rows")
    return out


def columns(path: str, what: str = "data.path") -> list[str]:
    """The column names of the table (the first file's schema)."""
    import pyarrow.parquet as pq

    return list(pq.read_schema(files_of(path, what)[0]).names)


def read(pieces: Sequence[Fragment], names: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
    """The pieces' rows, one frame per row group: memory holds one row group at a time. A
    file that cannot be read is a `UserError` naming it (on a cluster, every node must
    see the same paths)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    opened: dict[str, Any] = {}
    for piece in pieces:
        try:
            if piece.path not in opened:
                opened.clear()  # one file open at a time
                opened[piece.path] = pq.ParquetFile(piece.path)
            file = opened[piece.path]
            wanted = None if names is None else [n for n in names if n in file.schema_arrow.names]
            table = file.read_row_group(piece.row_group, columns=wanted)
        except (OSError, pa.ArrowException) as exc:
            raise UserError(
                f"{piece.path} (row group {piece.row_group}) could not be read: {exc} "
                "(on a cluster, every node must see the table at the same path)"
            ) from None
        yield table.to_pandas()


def read_all(path: str, what: str = "data.path") -> pd.DataFrame:
    """The whole table in this process: what a run without a cluster trains on."""
    return pd.concat(list(read(fragments(path, what))), ignore_index=True)


def deal(pieces: Sequence[Fragment], size: int, what: str = "data.path") -> list[list[Fragment]]:
    """The pieces in `size` hands of about equal rows (largest first, to the lightest)."""
    if len(pieces) < size:
        raise UserError(
            f"{what}: the table has {len(pieces)} row groups, too few for {size} workers; "
            "write it as more files or with smaller row groups (pyarrow's row_group_size)"
        )
    hands: list[list[Fragment]] = [[] for _ in range(size)]
    load = [0] * size
    for piece in sorted(pieces, key=lambda p: -p.rows):
        lightest = load.index(min(load))
        hands[lightest].append(piece)
        load[lightest] += piece.rows
    return hands


TRAIN, VAL, TEST = 0, 1, 2


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """The row values in one form whatever the column types a row group was read with
    (an int column with nulls reads as float, a bool one as object): numbers and booleans
    as float64, everything else as text; columns in name order."""
    out = {}
    for name in sorted(frame.columns, key=str):
        col = frame[name]
        numbers = pd.to_numeric(col, errors="coerce") if col.dtype == object else col
        if pd.api.types.is_numeric_dtype(numbers) and (
            col.dtype != object or (numbers.notna() | col.isna()).all()
        ):
            out[str(name)] = numbers.astype("float64")
        else:
            out[str(name)] = col.astype("string")
    return pd.DataFrame(out, index=frame.index)


def uniform(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """A number in [0, 1) per row from a hash of its values (`canonical`) and `seed`: the
    same row gets the same number in any file, row group, process or order."""
    key = f"{seed:016d}"[-16:]
    hashed = pd.util.hash_pandas_object(canonical(frame), index=False, hash_key=key).to_numpy()
    return (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def hash_split(u: np.ndarray, test_size: float, val_size: float) -> np.ndarray:
    """TRAIN, VAL or TEST per row from its `uniform` number: `test_size` of the rows to
    test, `val_size` of the rest to validation."""
    val_end = test_size + (1.0 - test_size) * val_size
    return np.where(u < test_size, TEST, np.where(u < val_end, VAL, TRAIN)).astype(np.int8)


def map_pieces(
    fn: Callable[..., Any], pieces: Sequence[Fragment], *args: Any, tasks: int = 0
) -> Iterator[Any]:
    """`fn(hand, *args)` for hands of the pieces, each in its own Ray task (Ray must be
    connected), the results as they come: a caller that folds them holds one at a time.
    `tasks`: how many (0: two per CPU of the cluster)."""
    import ray

    if not ray.is_initialized():
        raise UserError(
            "this table is read by Ray tasks (cluster= with a Parquet table), and Ray is not "
            "connected here; run the command with cluster=ray_local or cluster=ray"
        )
    if tasks <= 0:
        tasks = max(int(ray.cluster_resources().get("CPU", 1)) * 2, 1)
    hands = [h for h in deal(pieces, min(tasks, len(pieces))) if h]
    shared = [ray.put(a) for a in args]  # once, not once per task
    remote = ray.remote(fn)
    waiting = [remote.remote(hand, *shared) for hand in hands]
    try:
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            yield ray.get(done[0])
    except ray.exceptions.RayTaskError as exc:  # a task's bad input: its message, one line
        cause = getattr(exc, "cause", None)
        if isinstance(cause, UserError):
            raise cause from None
        raise
    finally:
        for ref in waiting:  # stopped early (an error): the rest need not run
            ray.cancel(ref)
