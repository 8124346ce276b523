"""Reading and writing the tables users already have (CSV or Parquet), with clear errors."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from verticals.core.errors import UserError

FORMATS = (".csv", ".parquet", ".pq")


def table_format(path: Path, what: str = "file") -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UserError(
            f"{what} {path} has extension {suffix or '(none)'}; expected .csv or .parquet"
        )
    return "csv" if suffix == ".csv" else "parquet"


def check_readable(path: Path, what: str = "input") -> None:
    """Fail early, before any work starts, when `path` is not a table we can read."""
    table_format(path, what)
    _check_exists(path, what)


def _check_exists(path: Path, what: str) -> None:
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    if path.stat().st_size == 0:
        raise UserError(f"{what} {path} is empty")


def read_table(path: str | Path, what: str = "file") -> pd.DataFrame:
    """The whole table at `path`; a missing, empty or unreadable file is a `UserError`."""
    path = Path(path)
    kind = table_format(path, what)
    _check_exists(path, what)
    try:
        frame = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except (ValueError, OSError, pa.ArrowException, pd.errors.ParserError) as exc:
        raise UserError(f"{what} {path} could not be read as {kind}: {exc}") from None
    if frame.empty:
        raise UserError(f"{what} {path} has a header but no rows")
    return frame


def count_rows(path: Path) -> int | None:
    """Row count without loading the table (exact for Parquet, None for CSV)."""
    if table_format(path) != "parquet":
        return None
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"{path} could not be read as parquet: {exc}") from None


def iter_batches(path: str | Path, batch_size: int, what: str = "input") -> Iterator[pd.DataFrame]:
    """Stream `path` in batches of about `batch_size` rows, in a bounded amount of memory."""
    path = Path(path)
    kind = table_format(path, what)
    _check_exists(path, what)
    try:
        if kind == "csv":
            yield from pd.read_csv(path, chunksize=batch_size)
        else:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
                yield batch.to_pandas()
    except (ValueError, OSError, pa.ArrowException, pd.errors.ParserError) as exc:
        raise UserError(f"{what} {path} could not be read as {kind}: {exc}") from None


def whole_groups(
    batches: Iterator[pd.DataFrame], column: str, path: Path
) -> Iterator[pd.DataFrame]:
    """`batches` re-cut so that rows with the same `column` value arrive together (the file
    must hold each group's rows next to each other, as a sorted file does)."""
    carry: pd.DataFrame | None = None
    closed: set[Any] = set()
    for batch in batches:
        if column not in batch.columns:
            yield batch if carry is None else pd.concat([carry, batch], ignore_index=True)
            carry = None
            continue
        if carry is not None:
            batch = pd.concat([carry, batch], ignore_index=True)
        keys = batch[column].astype("string").fillna("<missing>").to_numpy(dtype=object)
        starts = np.r_[True, keys[1:] != keys[:-1]]  # missing ids count as one group here
        seen = keys[starts].tolist()
        counts = Counter(seen)
        again = [k for k in seen if k in closed or counts[k] > 1]
        if again:
            raise UserError(
                f"{path}: the rows of {column}={again[0]} are not next to each other; "
                f"sort the file by {column}"
            )
        tail = np.zeros(len(batch), dtype=bool)
        tail[int(np.flatnonzero(starts)[-1]) :] = True  # the last group, maybe cut
        closed.update(seen[:-1])
        carry = batch[tail]
        if (~tail).any():
            yield batch[~tail].reset_index(drop=True)
    if carry is not None and len(carry):
        yield carry.reset_index(drop=True)


def nested_as_json(frame: pd.DataFrame) -> pd.DataFrame:
    """Lists and dicts in cells (reason codes, say) as JSON text, readable in any tool."""
    out = frame
    for name in frame.columns:
        col = frame[name]
        if col.dtype != object or col.empty:
            continue
        first = col.dropna().head(1)
        if len(first) and isinstance(first.iloc[0], list | dict | tuple):
            out = out.copy() if out is frame else out
            out[name] = col.map(lambda v: None if v is None else json.dumps(v, default=str))
    return out


class TableWriter:
    """Append batches to a CSV or Parquet file; the file appears only when complete."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.kind = table_format(self.path, "output")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot write output {self.path}: {exc.strerror or exc}") from None
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        self._parquet: pq.ParquetWriter | None = None
        self._first = True

    def write(self, frame: pd.DataFrame) -> None:
        frame = nested_as_json(frame)
        try:
            if self.kind == "csv":
                mode = "w" if self._first else "a"
                frame.to_csv(self.tmp, mode=mode, header=self._first, index=False)
            else:
                table = pa.Table.from_pandas(frame, preserve_index=False)
                if self._parquet is None:
                    self._parquet = pq.ParquetWriter(self.tmp, table.schema)
                self._parquet.write_table(table.cast(self._parquet.schema))
        except OSError as exc:
            raise UserError(f"cannot write output {self.path}: {exc.strerror or exc}") from None
        self._first = False

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self.tmp.exists():
            self.tmp.replace(self.path)

    def abort(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        self.tmp.unlink(missing_ok=True)
