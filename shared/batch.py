"""Batch prediction with a bundle, with a progress bar: CSV/Parquet tables in batches (record
verticals), or a folder of files one by one (file verticals).

The scoring of one batch (`score_batch`) or one file (`score_path`) and the writing of the
outputs (`TableJob`, `FolderJob`) are shared with `cluster_batch`, which runs the same
scoring on Ray actors: both ways write the same outputs."""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from verticals.core.batch_log import BatchLog
from verticals.core.bundle import Bundle
from verticals.core.contract import FileOutput, FileVertical, RecordVertical, Vertical
from verticals.core.errors import UserError
from verticals.core.logs import get_logger
from verticals.core.runs import write_atomic
from verticals.core.tables import (
    FORMATS,
    TableWriter,
    check_readable,
    count_rows,
    iter_batches,
    table_format,
    whole_groups,
)

log = get_logger("batch")

#: What `input=` may be for a record vertical: a table, a folder of tables, or several.
Source = str | Path | Sequence[str | Path]


def predict_file(
    bundle: Bundle,
    input_path: Source,
    output_path: str | Path,
    batch_size: int = 50_000,
    keep_columns: list[str] | None = None,
    progress: bool = True,
    journal: BatchLog | None = None,
) -> int:
    """Score every row of `input_path` and write the predictions to `output_path`.

    `input_path` may also be a folder of CSV/Parquet files (sorted by path) or a list of
    files: they are scored, in that order, into the one output table.
    Columns named in `keep_columns` (an id, say) are copied in front of the predictions.
    Returns the number of rows scored; the output appears only once every row is written.
    With `journal`, every input is in the prediction log, and its request id is the
    output's first column after the kept ones.
    """
    job = TableJob(bundle, input_path, output_path, keep_columns, journal)
    bar = tqdm(total=job.total_rows(), unit="rows", desc="predict", disable=not progress)
    try:
        with job:
            for path, start, frame in job.batches(batch_size):
                result = score_batch(bundle.vertical, bundle.model, frame, job.keep,
                                     job.text_ids, job.reserved, path, start)  # fmt: skip
                job.write(result, len(frame), frame)
                bar.update(len(frame))
    finally:
        bar.close()
    return job.done


def table_inputs(source: Source) -> list[Path]:
    """The tables `input=` names, in order: one CSV/Parquet file, a folder of them (sorted
    by path, sub-folders included, hidden files left out), or a list of files and folders."""
    items = [source] if isinstance(source, str | Path) else list(source)
    if not items:
        raise UserError("input= names no tables")
    paths: list[Path] = []
    for item in items:
        path = Path(str(item))
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in FORMATS
            )
            if not found:
                raise UserError(f"input {path} holds no .csv or .parquet files")
            paths.extend(found)
        else:
            check_readable(path, "input")
            paths.append(path)
    return paths


def score_batch(
    vertical: Vertical,
    model: Any,
    frame: pd.DataFrame,
    keep: list[str],
    text_ids: bool,
    reserved: frozenset[str],
    path: Path,
    start: int,
) -> pd.DataFrame:
    """One batch's output rows as `predict_file` writes them, bar the request ids: the
    `keep` columns, then the predictions. `start`: the batch's first row in `path` (for
    messages); `reserved`: output columns the kept ones may not take (`request_id`)."""
    assert isinstance(vertical, RecordVertical)
    try:
        result = vertical.predict_table(model, frame)
    except UserError as exc:  # say where in the file
        rows = f"rows {start + 1}-{start + len(frame)}"
        detail = exc.message.removeprefix("input: ")
        raise UserError(f"{path} ({rows}): {detail}") from None
    if not keep:
        return result
    if len(result) != len(frame):
        raise UserError(
            f"keep_columns needs one prediction per row; {vertical.name} "
            f"answers per {vertical.group_column or 'input'}"
        )
    clash = sorted(set(keep) & (set(result.columns) | reserved))
    if clash:
        raise UserError(f"keep_columns {clash} clash with prediction columns")
    kept = frame[keep].reset_index(drop=True)
    if text_ids:  # CSV chunks infer types one by one: text keeps ids one type
        kept = kept.astype("string")
    return pd.concat([kept, result.reset_index(drop=True)], axis=1)


class TableJob:
    """One run of a record vertical over tables: the checks, the batches (whole groups),
    and the output table with its request ids; the scoring is `score_batch`'s, here or on
    Ray's actors. Used as a context manager: the output (and the journal's batch) is
    complete when the block ends, or removed when it raises."""

    def __init__(
        self,
        bundle: Bundle,
        source: Source,
        output_path: str | Path,
        keep_columns: list[str] | None = None,
        journal: BatchLog | None = None,
    ) -> None:
        if not isinstance(bundle.vertical, RecordVertical):
            raise UserError(f"{bundle.vertical.name} takes files: give input=<folder of files>")
        self.bundle, self.journal = bundle, journal
        self.paths = table_inputs(source)
        self.output = Path(output_path)
        out = self.output.resolve()
        for item in [source] if isinstance(source, str | Path) else list(source):
            folder = Path(str(item)).resolve()
            if folder.is_dir() and out.is_relative_to(folder):
                raise UserError(
                    f"output={self.output} is inside input={item}; it would be read as an input"
                )
        for path in self.paths:
            if path.resolve() == out:
                raise UserError(f"output={self.output} is the input file; choose another name")
        table_format(self.output, "output")
        single = isinstance(source, str | Path) or len(self.paths) == 1
        #: what the journal records as the batch's input: the file, or the folder of them
        self.source = Path(str(source)) if isinstance(source, str | Path) else (
            self.paths[0] if single else Path(os.path.commonpath([p.resolve() for p in self.paths]))
        )  # fmt: skip
        self.keep = list(keep_columns or [])
        self.text_ids = any(table_format(p) == "csv" for p in self.paths)
        self.group = bundle.vertical.group_column
        self.reserved = frozenset({"request_id"} if journal is not None else ())
        self.done = 0
        self._writer: TableWriter | None = None

    def total_rows(self) -> int | None:
        """Rows to score, when cheap to know (Parquet only)."""
        counts = [count_rows(p) for p in self.paths]
        return None if None in counts else sum(c for c in counts if c is not None)

    def batches(self, batch_size: int) -> Iterator[tuple[Path, int, pd.DataFrame]]:
        """(file, first row's index in it, batch) for every non-empty batch, in order;
        each file's first batch is checked (keep_columns, model inputs)."""
        last: Any = None  # the last group of the previous file
        for path in self.paths:
            batches = iter_batches(path, batch_size)
            if self.group:
                batches = whole_groups(batches, self.group, path)
            start = 0
            grouped = False
            for frame in batches:
                grouped = bool(self.group) and self.group in frame.columns
                if frame.empty:
                    continue
                if start == 0:
                    _check_keep(self.keep, frame, path)
                    _warn_missing(self.bundle, frame, path)
                    if grouped and last is not None and _key(frame[self.group].iloc[0]) == last:
                        raise UserError(
                            f"{path}: the rows of {self.group}={last} continue from the file "
                            "before; keep each group's rows in one file"
                        )
                yield path, start, frame
                start += len(frame)
                if grouped:
                    last = _key(frame[self.group].iloc[-1])

    def __enter__(self) -> TableJob:
        self._writer = TableWriter(self.output)
        return self

    def write(self, result: pd.DataFrame, rows: int, frame: pd.DataFrame | None = None) -> None:
        """Write `score_batch`'s `result` for a batch of `rows` input rows, with request ids
        when logged (which needs the batch itself, `frame`)."""
        assert self._writer is not None, "TableJob.write outside its `with` block"
        if self.journal is not None:
            assert frame is not None, "the prediction log needs the input batch"
            predictions = result.iloc[:, len(self.keep) :]
            ids = self.journal.records(frame, predictions, self.group)
            result.insert(len(self.keep), "request_id", ids)
        self._writer.write(result)
        self.done += rows

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        assert self._writer is not None
        if kind is None and self.done == 0:
            self._writer.abort()
            if self.journal is not None:
                self.journal.abort()
            raise UserError(f"input {self.source} has no rows to score")
        if kind is not None:
            self._writer.abort()
            if self.journal is not None:
                self.journal.abort()
            return
        self._writer.close()
        if self.journal is not None:
            self.journal.finish(self.source)


def _key(value: Any) -> str:
    """A group id as `whole_groups` compares them: text, missing ids alike."""
    return "<missing>" if pd.isna(value) else str(value)


def _warn_missing(bundle: Bundle, frame: pd.DataFrame, path: Path) -> None:
    """Say which model inputs the file lacks: they are scored as missing, which is legal
    but rarely what a user meant."""
    fields = bundle.vertical.request_schema(bundle.model).model_fields
    expected = [field.alias or name for name, field in fields.items()]
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        shown = ", ".join(missing[:8]) + (
            f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        )
        log.warning("%s lacks %d model input(s), scored as missing: %s", path, len(missing), shown)


def _check_keep(keep: list[str], frame: pd.DataFrame, path: Path) -> None:
    missing = [c for c in keep if c not in frame.columns]
    if missing:
        raise UserError(f"keep_columns {missing} are not columns of {path}")


_TABLE_SUFFIXES = (".csv", ".parquet")


def predict_folder(
    bundle: Bundle,
    input_path: str | Path,
    output: str | Path,
    progress: bool = True,
    journal: BatchLog | None = None,
) -> pd.DataFrame:
    """Run a file vertical's bundle over a folder (or one file) of inputs.

    `output` a folder: one `<input stem><output suffix>` per input (the input tree mirrored)
    plus `predictions.csv`, one summary row per input. `output` a .csv/.parquet file: only
    that table. A file that cannot be read is logged and listed in the table's `error`
    column while the others go on; the command fails at the end, naming them.
    """
    job = FolderJob(bundle, input_path, output, journal)
    for path in tqdm(job.files, unit="file", desc="predict", disable=not progress):
        job.add(path, score_path(bundle.vertical, bundle.model, path))
    return job.finish()


@dataclass
class Failure:
    """An input file that could not be scored: the message, and the traceback of an
    unexpected error (not a `UserError`)."""

    message: str
    trace: str | None = None


def score_path(vertical: Vertical, model: Any, path: Path) -> FileOutput | Failure:
    """`vertical.predict_path` on one file, or why it failed: one bad input must not cost
    the others their results."""
    assert isinstance(vertical, FileVertical)
    try:
        return vertical.predict_path(model, path)
    except UserError as exc:
        return Failure(exc.message)
    except Exception as exc:
        return Failure(f"{type(exc).__name__}: {exc}", traceback.format_exc())


class FolderJob:
    """One run of a file vertical over a folder: the checks, the list of inputs, and the
    outputs (a file per input, the summary table, the journal); the scoring is
    `score_path`'s, here or on Ray's actors. `add` each input's outcome in order, then
    `finish`."""

    def __init__(
        self,
        bundle: Bundle,
        input_path: str | Path,
        output: str | Path,
        journal: BatchLog | None = None,
    ) -> None:
        vertical = bundle.vertical
        if not isinstance(vertical, FileVertical):
            raise UserError(f"{vertical.name} scores tables: give input=<file.csv|.parquet>")
        self.bundle, self.vertical, self.journal = bundle, vertical, journal
        source, out = Path(input_path), Path(output)
        self.source, self.out = source, out
        self.table_only = table_only = out.suffix.lower() in _TABLE_SUFFIXES
        if not source.exists():
            raise UserError(f"input {source} does not exist")
        files = [source] if vertical.matches(source) else vertical.find_inputs(source)
        if source.is_file() and not files:
            raise UserError(f"input {source} is not a {'/'.join(vertical.input_suffixes)} file")
        if not files:
            endings = ", ".join(vertical.input_suffixes)
            raise UserError(
                f"input {source} holds no {vertical.name} inputs (files ending {endings})"
            )
        if out.is_dir() and table_only:
            raise UserError(f"output={out} is a folder; a table needs a new .csv or .parquet name")
        if out.exists() and not out.is_dir() and not table_only:
            raise UserError(
                f"output={out} is a file; give a folder for the {vertical.name} outputs, "
                "or a .csv/.parquet name for the table alone"
            )
        if source.is_dir() and out.resolve().is_relative_to(source.resolve()):
            raise UserError(
                f"output={out} is inside input={source}; outputs would be read as inputs"
            )
        self.files: list[Path] = files
        self.base = source if source.is_dir() else source.parent
        if not table_only:
            out.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self.failed: list[str] = []

    def add(self, path: Path, outcome: FileOutput | Failure) -> None:
        """Record one input's outcome: its output file, summary row and journal entry."""
        if isinstance(outcome, Failure):
            message = outcome.message
            shown = message if str(path) in message else f"{path}: {message}"
            if outcome.trace:
                log.error("%s\n%s", shown, outcome.trace.rstrip())
            else:
                log.error("%s", shown)
            self.failed.append(f"{path.name} ({message})")
            self.rows.append({"input": str(path), "error": message})
            return
        row: dict[str, Any] = {"input": str(path)}
        if self.journal is not None:
            schema = self.vertical.response_schema(self.bundle.model)
            summary = schema.model_validate(outcome.summary)
            row["request_id"] = self.journal.file(path, outcome, summary.model_dump(mode="json"))
        if not self.table_only:  # mirror the input tree, so a/case and b/case keep apart
            stem = self.vertical.stem(path)
            target = self.out / path.relative_to(self.base).parent / f"{stem}{outcome.suffix}"
            write_atomic(target, outcome.content)
            row["output"] = str(target)
        self.rows.append({**row, **outcome.summary, "error": None})

    def finish(self) -> pd.DataFrame:
        """Write the summary table and close the journal's batch; fail naming the inputs
        that could not be scored, once the others are written."""
        table = summary_table(self.rows)
        destination = self.out if self.table_only else self.out / "predictions.csv"
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.suffix.lower() == ".parquet":
            write_atomic(destination, table.to_parquet(index=False))
        else:
            write_atomic(destination, table.to_csv(index=False))
        if self.journal is not None:
            self.journal.finish(self.source)
        failed = self.failed
        if failed:
            shown = "; ".join(failed[:3]) + (
                f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
            )
            raise UserError(
                f"{len(failed)} of {len(self.files)} inputs failed, the rest are in "
                f"{self.out}: {shown}"
            )
        return table


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}_"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def summary_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Summary rows as a flat table: nested dicts become `a_b` columns, lists become JSON
    text (one cell per input), and whole numbers stay whole beside failed rows' gaps."""
    import json

    table = pd.DataFrame([_flatten(r) for r in rows], dtype=object)
    for column in table.columns:
        values = table[column].dropna()
        kind = pd.api.types.infer_dtype(values, skipna=True)
        if values.map(lambda v: isinstance(v, list | tuple)).any():
            table[column] = table[column].map(
                lambda v: json.dumps(v) if isinstance(v, list | tuple) else v
            )
        elif kind == "integer":
            table[column] = table[column].astype("Int64")
        elif kind == "boolean":
            table[column] = table[column].astype("boolean")
        elif kind in ("floating", "mixed-integer-float"):
            table[column] = table[column].astype(float)
        elif kind == "string":
            table[column] = table[column].astype("string")
    return table[[c for c in table.columns if c != "error"] + ["error"]]
