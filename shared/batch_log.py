"""A `verticals predict` run in the prediction log: one batch record, and one row per input
(a record, a window of readings, a file) under a request id of its own, which the output
table carries in its `request_id` column, so outcomes can be fed back for batch-scored
inputs as for served ones."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic_core import to_json

from verticals.core.content_store import safe_name
from verticals.core.contract import FileOutput
from verticals.core.fingerprint import file_digest
from verticals.core.predlog import PredictionLog, prediction_row, private_records, value_hash

FLUSH_ROWS = 20_000


class BatchLog:
    """Collects a batch's rows and writes them in transactions of `FLUSH_ROWS`."""

    def __init__(self, plog: PredictionLog, vertical: str, version: str) -> None:
        self.log, self.vertical, self.version = plog, vertical, version
        self.batch_id = f"batch-{uuid.uuid4().hex[:16]}"
        self.count = 0
        self._rows: list[dict[str, Any]] = []
        settings = plog.settings
        self.inputs, self.drop = settings.inputs, settings.drop

    def _next_id(self) -> str:
        self.count += 1
        return f"{self.batch_id}-{self.count}"

    def _add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            self.log.write_now(self._rows)
            self._rows = []

    def records(self, frame: pd.DataFrame, result: pd.DataFrame, group: str | None) -> list[str]:
        """Log one batch of a table: each input row (or group of rows) with its output
        rows; the request id of every output row, in order."""
        inputs = _json_lines(frame)
        outputs = _json_lines(result)
        if group is None and len(inputs) == len(outputs):
            ids = []
            for record, answer in zip(inputs, outputs, strict=True):
                request_id = self._next_id()
                ids.append(request_id)
                self._add(self._row(request_id, f"[{record}]", f"[{answer}]", 1))
            return ids
        keys = frame[group].astype(str).tolist() if group else ["all"] * len(frame)
        out_keys = result[group].astype(str).tolist() if group and group in result else None
        by_input: dict[str, list[str]] = {}
        for key, record in zip(keys, inputs, strict=True):
            by_input.setdefault(key, []).append(record)
        by_output: dict[str, list[str]] = {}
        for i, answer in enumerate(outputs):
            by_output.setdefault(out_keys[i] if out_keys else "all", []).append(answer)
        id_of = {}
        for key, records in by_input.items():
            id_of[key] = request_id = self._next_id()
            answers = by_output.get(key, [])
            self._add(self._row(request_id, f"[{','.join(records)}]", f"[{','.join(answers)}]", 1))
        return [id_of.get(out_keys[i] if out_keys else "all", "") for i in range(len(outputs))]

    def _row(self, request_id: str, inputs: str, outputs: str, n: int) -> dict[str, Any]:
        if self.inputs != "full" or self.drop:
            kept = private_records(json.loads(inputs), self.inputs, self.drop)
            inputs = None if kept is None else to_json(kept).decode()  # type: ignore[assignment]
        return prediction_row(request_id, self.vertical, self.version, source="row",
                              n_inputs=n, inputs=inputs, outputs=outputs,
                              batch_id=self.batch_id)  # fmt: skip

    def file(self, path: Path, result: FileOutput, summary: dict[str, Any]) -> str:
        """Log one scored file (its facts and summary); its request id."""
        request_id = self._next_id()
        name = safe_name(path.name)
        facts: dict[str, Any] | None = {"name": name, "size": path.stat().st_size,
                                        "statistics": result.statistics}  # fmt: skip
        if self.inputs == "none":
            facts, name = None, None  # type: ignore[assignment]
        elif self.inputs == "hashed":
            name = value_hash("name", name)  # type: ignore[assignment]
            facts = {**facts, "name": name}  # type: ignore[dict-item]
        self._add(prediction_row(
            request_id, self.vertical, self.version, source="row", batch_id=self.batch_id,
            inputs=None if facts is None else to_json(facts).decode(),
            outputs=to_json(summary).decode(), input_name=name,
            input_sha256=file_digest(path), input_size=path.stat().st_size,
        ))  # fmt: skip
        return request_id

    def abort(self) -> None:
        """Take the batch's rows out of the log: its output was never written."""
        self._rows = []
        self.log.delete_batch(self.batch_id)

    def finish(self, source: Path) -> None:
        """Write what is left, then the batch's own record (the input file's facts)."""
        self.flush()
        digest = file_digest(source) if source.is_file() else None
        size = source.stat().st_size if source.is_file() else None
        name = safe_name(source.name) if self.inputs == "full" else None
        self.log.write_now([prediction_row(
            self.batch_id, self.vertical, self.version, source="batch", n_inputs=self.count,
            batch_id=self.batch_id, input_name=name, input_sha256=digest, input_size=size,
        )])  # fmt: skip


def _json_lines(frame: pd.DataFrame) -> list[str]:
    """Each row as a JSON object (pandas' C writer: fast on a million rows)."""
    if frame.empty:
        return []
    text = frame.to_json(orient="records", lines=True, date_format="iso")
    return text.rstrip("\n").split("\n")
