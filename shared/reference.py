"""The training reference: test-split inputs as clients would send them, and what the model
said about them, saved with a run and carried by its bundle.

The monitor builds the vertical's `monitor_frame` from this and from the live log in the
same way, so a drift figure compares like with like: the same fields, the same derived
columns, the same privacy (`log.inputs=hashed` hashes the reference's inputs as it hashed
the live ones). Entries are kept as the log keeps them, as JSON lines.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path
from typing import Any

from pydantic_core import to_json

from verticals.core.contract import (
    FileVertical,
    Logged,
    RecordVertical,
    Splits,
    Vertical,
    records_of,
)
from verticals.core.errors import UserError
from verticals.core.logs import get_logger
from verticals.core.predlog import private_records, value_hash

log = get_logger("reference")
REFERENCE = "reference.jsonl.gz"


def build(vertical: Vertical, model: Any, splits: Splits) -> list[dict[str, Any]]:
    """`vertical.reference_size` test inputs scored by `model`: {"inputs", "outputs"} each,
    one per request a client would send (a record, a window, a file)."""
    if isinstance(vertical, FileVertical):
        return _file_entries(vertical, model, splits)
    assert isinstance(vertical, RecordVertical)
    return _record_entries(vertical, model, splits)


def _record_entries(vertical: RecordVertical, model: Any, splits: Splits) -> list[dict[str, Any]]:
    from verticals.core.records import RecordCodec

    frame = vertical.example_inputs(splits, vertical.reference_size)
    codec = RecordCodec.of(vertical, model)
    inputs = codec.validate(json.loads(frame.to_json(orient="records", date_format="iso")))
    outputs = json.loads(to_json(records_of(vertical.predict(model, frame))))
    group = vertical.group_column
    if group is None:
        if len(outputs) != len(inputs):
            return [{"inputs": inputs, "outputs": outputs}]
        return [{"inputs": [i], "outputs": [o]} for i, o in zip(inputs, outputs, strict=True)]
    entries: dict[Any, dict[str, list[Any]]] = {}
    for record in inputs:
        entries.setdefault(record.get(group), {"inputs": [], "outputs": []})["inputs"].append(
            record
        )
    for row in outputs:
        key = row.get(group)
        if key in entries:
            entries[key]["outputs"].append(row)
    return [json.loads(to_json(e)) for e in entries.values()]


def _file_entries(vertical: FileVertical, model: Any, splits: Splits) -> list[dict[str, Any]]:
    schema = vertical.response_schema(model)
    entries = []
    with tempfile.TemporaryDirectory(prefix="verticals-reference-") as tmp:
        for path in vertical.example_files(splits, vertical.reference_size, Path(tmp)):
            result = vertical.predict_path(model, path)
            summary = schema.model_validate(result.summary).model_dump(mode="json", by_alias=True)
            facts = {"name": path.name, "size": path.stat().st_size,
                     "statistics": result.statistics}  # fmt: skip
            entries.append({"inputs": json.loads(to_json(facts)), "outputs": summary})
    return entries


def write(vertical: Vertical, model: Any, splits: Splits, run_dir: Path) -> int:
    """Save the reference into `run_dir`; the number of entries (0: none saved, and the
    monitor will say so; a training run never fails for it)."""
    try:
        entries = build(vertical, model, splits)
    except Exception as exc:  # noqa: BLE001 - monitoring is an extra: the model is done
        log.warning("%s: no monitoring reference saved (%s)", vertical.name, exc)
        return 0
    with gzip.open(run_dir / REFERENCE, "wt", encoding="utf-8") as fh:
        for entry in entries:
            fh.write(json.dumps(entry) + "\n")
    return len(entries)


def read(bundle_dir: Path, inputs: str = "full", drop: tuple[str, ...] = ()) -> list[Logged]:
    """The reference of a bundle as `Logged` entries, private as the log is (`log.inputs`,
    `log.drop`)."""
    path = Path(bundle_dir) / REFERENCE
    if not path.is_file():
        raise UserError(
            f"{bundle_dir} has no monitoring reference ({REFERENCE})",
            hint="it was trained before monitoring existed: train and package it again",
        )
    entries = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for number, line in enumerate(fh):
            item = json.loads(line)
            given = item.get("inputs")
            if isinstance(given, list):
                given = private_records(given, inputs, drop)
            elif isinstance(given, dict) and inputs != "full":  # a file's facts
                given = (
                    None
                    if inputs == "none"
                    else {**given, "name": value_hash("name", given.get("name"))}
                )
            entries.append(Logged(request_id=f"reference-{number}", inputs=given,
                                  outputs=item.get("outputs")))  # fmt: skip
    return entries
