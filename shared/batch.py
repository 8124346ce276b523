"""Batch prediction with a bundle, with a progress bar: a CSV/Parquet file in batches (record
verticals), or a folder of files one by one (file verticals)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from verticals.core.batch_log import BatchLog
from verticals.core.bundle import Bundle
from verticals.core.contract import FileVertical, RecordVertical
from verticals.core.errors import UserError
from verticals.core.logs import get_logger
from verticals.core.runs import write_atomic
from verticals.core.tables import (
    TableWriter,
    check_readable,
    count_rows,
    iter_batches,
    table_format,
    whole_groups,
)

log = get_logger("batch")


def predict_file(
    bundle: Bundle,
    input_path: str | Path,
    output_path: str | Path,
    batch_size: int = 50_000,
    keep_columns: list[str] | None = None,
    progress: bool = True,
    journal: BatchLog | None = None,
) -> int:
    """Score every row of `input_path` and write the predictions to `output_path`.

    Columns named in `keep_columns` (an id, say) are copied in front of the predictions.
    Returns the number of rows scored; the output appears only once every row is written.
    With `journal`, every input is in the prediction log, and its request id is the
    output's first column.
    """
    if not isinstance(bundle.vertical, RecordVertical):
        raise UserError(f"{bundle.vertical.name} takes files: give input=<folder of files>")
    input_path, output_path = Path(input_path), Path(output_path)
    check_readable(input_path, "input")
    if input_path.resolve() == output_path.resolve():
        raise UserError(f"output={output_path} is the input file; choose another name")
    keep = list(keep_columns or [])
    text_ids = table_format(input_path) == "csv"
    writer = TableWriter(output_path)
    done = 0
    bar = tqdm(total=count_rows(input_path), unit="rows", desc="predict", disable=not progress)
    batches = iter_batches(input_path, batch_size)
    group = bundle.vertical.group_column
    if group:
        batches = whole_groups(batches, group, input_path)
    try:
        for frame in batches:
            if frame.empty:
                continue
            if done == 0:
                _check_keep(keep, frame, input_path)
                _warn_missing(bundle, frame, input_path)
            try:
                result = bundle.vertical.predict_table(bundle.model, frame)
            except UserError as exc:  # say where in the file
                rows = f"rows {done + 1}-{done + len(frame)}"
                detail = exc.message.removeprefix("input: ")
                raise UserError(f"{input_path} ({rows}): {detail}") from None
            if journal is not None:
                result.insert(0, "request_id", journal.records(frame, result, group))
            if keep and len(result) != len(frame):
                raise UserError(
                    f"keep_columns needs one prediction per row; {bundle.vertical.name} "
                    f"answers per {group or 'input'}"
                )
            if keep:
                clash = sorted(set(keep) & set(result.columns))
                if clash:
                    raise UserError(f"keep_columns {clash} clash with prediction columns")
                kept = frame[keep].reset_index(drop=True)
                if text_ids:  # CSV chunks infer types one by one: text keeps ids one type
                    kept = kept.astype("string")
                result = pd.concat([kept, result.reset_index(drop=True)], axis=1)
            writer.write(result)
            done += len(frame)
            bar.update(len(frame))
        if done == 0:
            raise UserError(f"input {input_path} has no rows to score")
    except BaseException:
        writer.abort()
        if journal is not None:
            journal.abort()
        raise
    finally:
        bar.close()
    writer.close()
    if journal is not None:
        journal.finish(input_path)
    return done


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
    vertical = bundle.vertical
    if not isinstance(vertical, FileVertical):
        raise UserError(f"{vertical.name} scores tables: give input=<file.csv|.parquet>")
    source, out = Path(input_path), Path(output)
    table_only = out.suffix.lower() in _TABLE_SUFFIXES
    if not source.exists():
        raise UserError(f"input {source} does not exist")
    files = [source] if vertical.matches(source) else vertical.find_inputs(source)
    if source.is_file() and not files:
        raise UserError(f"input {source} is not a {'/'.join(vertical.input_suffixes)} file")
    if not files:
        endings = ", ".join(vertical.input_suffixes)
        raise UserError(f"input {source} holds no {vertical.name} inputs (files ending {endings})")
    if out.is_dir() and table_only:
        raise UserError(f"output={out} is a folder; a table needs a new .csv or .parquet name")
    if out.exists() and not out.is_dir() and not table_only:
        raise UserError(
            f"output={out} is a file; give a folder for the {vertical.name} outputs, "
            "or a .csv/.parquet name for the table alone"
        )
    if source.is_dir() and out.resolve().is_relative_to(source.resolve()):
        raise UserError(f"output={out} is inside input={source}; outputs would be read as inputs")
    base = source if source.is_dir() else source.parent
    if not table_only:
        out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for path in tqdm(files, unit="file", desc="predict", disable=not progress):
        try:
            result = vertical.predict_path(bundle.model, path)
        except Exception as exc:  # one bad input must not cost the others their results
            message = exc.message if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            shown = message if str(path) in message else f"{path}: {message}"
            log.error("%s", shown, exc_info=not isinstance(exc, UserError))
            failed.append(f"{path.name} ({message})")
            rows.append({"input": str(path), "error": message})
            continue
        row: dict[str, Any] = {"input": str(path)}
        if journal is not None:
            summary = vertical.response_schema(bundle.model).model_validate(result.summary)
            row["request_id"] = journal.file(path, result, summary.model_dump(mode="json"))
        if not table_only:  # mirror the input tree, so a/case and b/case keep apart
            target = out / path.relative_to(base).parent / f"{vertical.stem(path)}{result.suffix}"
            write_atomic(target, result.content)
            row["output"] = str(target)
        rows.append({**row, **result.summary, "error": None})
    table = summary_table(rows)
    destination = out if table_only else out / "predictions.csv"
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.suffix.lower() == ".parquet":
        write_atomic(destination, table.to_parquet(index=False))
    else:
        write_atomic(destination, table.to_csv(index=False))
    if journal is not None:
        journal.finish(source)
    if failed:
        shown = "; ".join(failed[:3]) + (f"; and {len(failed) - 3} more" if len(failed) > 3 else "")
        raise UserError(
            f"{len(failed)} of {len(files)} inputs failed, the rest are in {out}: {shown}"
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
