"""What a server writes to the prediction log for each answered `/predict`.

Record requests: the validated records (as `log.inputs` and `log.drop` allow) and the
answer as it was sent. File uploads: the file's name, size, sha256 and the statistics the
vertical measured on it (the file itself only with `log.keep_files`), the summary, and the
output file when the vertical needs it later (`FileVertical.keep_outputs`). The route
answers only after `write` returns: the row is committed by then.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic_core import to_json

from verticals.core.content_store import digest, ending, safe_name
from verticals.core.contract import FileOutput, FileVertical, Vertical
from verticals.core.predlog import LogUnavailable, PredictionLog, prediction_row, value_hash

HASH_IN_THREAD = 1 << 20  # bytes: hashing more than this holds the event loop for ~1 ms
RECORDS_IN_THREAD = 1000  # records: writing more as JSON holds the event loop for ~1 ms


class RequestLog:
    """Turns one answered request into one `predictions` row and waits for its commit."""

    def __init__(self, log: PredictionLog, vertical: Vertical) -> None:
        self.log = log
        self.vertical = vertical.name
        self.keep_outputs = isinstance(vertical, FileVertical) and vertical.keep_outputs
        settings = log.settings
        self.inputs_mode = settings.inputs
        self.keep_files = settings.keep_files
        self.as_sent = settings.inputs == "full" and not settings.drop  # the body is the log
        self._keys: dict[str, tuple[bytes, bytes]] = {}

    async def records(
        self,
        version: str,
        request_id: str,
        records: list[dict[str, Any]] | None,
        body: bytes,
        answer: bytes,
        n_inputs: int,
        latency_ms: float,
    ) -> None:
        """Log a record request (`records` None: parsed elsewhere, read again from `body`)."""
        if records is not None and len(records) > RECORDS_IN_THREAD:
            inputs = await asyncio.to_thread(self.log.inputs_json, records)
        elif records is not None:
            inputs = self.log.inputs_json(records)
        elif self.as_sent:  # the body is the records: one object is a list of one
            inputs = b"[%s]" % body if body.lstrip().startswith(b"{") else body
        else:
            inputs = await asyncio.to_thread(self._from_body, body)
        spool = self.log.spool
        if spool is not None:  # the embedded log: the hot path, straight to the spool
            keys = self._keys.get(version) or self._key(version)
            try:
                spool.append_answer(request_id, keys[0], keys[1], n_inputs, latency_ms,
                                    inputs, answer)  # fmt: skip
            except OSError as exc:  # a full disk: the answer is not sent unlogged
                raise LogUnavailable(f"the prediction log's spool failed: {exc}") from None
            return
        row = prediction_row(
            request_id, self.vertical, version, n_inputs=n_inputs, latency_ms=latency_ms,
            inputs=None if inputs is None else inputs.decode(), outputs=answer.decode(),
        )  # fmt: skip
        await self.log.write(row)

    def _key(self, version: str) -> tuple[bytes, bytes]:
        """The vertical's and a version's names as JSON, once per version."""
        self._keys[version] = (to_json(self.vertical), to_json(version))
        return self._keys[version]

    def _from_body(self, body: bytes) -> bytes | None:
        given = json.loads(body)
        return self.log.inputs_json(given if isinstance(given, list) else [given])

    async def file(
        self,
        version: str,
        request_id: str,
        name: str,
        data: bytes,
        result: FileOutput,
        summary: dict[str, Any],
        out_name: str,
        latency_ms: float,
    ) -> None:
        """Log a file upload: its facts always, its bytes and the output as configured."""
        if len(data) > HASH_IN_THREAD or self.keep_files or self.keep_outputs:
            sha, out_sha = await asyncio.to_thread(self._keep, data, name, result, out_name)
        else:
            sha, out_sha = digest(data), None
        kept_name: str | None = safe_name(name)
        facts: dict[str, Any] | None = {
            "name": kept_name, "size": len(data), "statistics": result.statistics,
        }  # fmt: skip
        if self.inputs_mode == "none":
            facts, kept_name = None, None
        elif self.inputs_mode == "hashed":  # a file name can name a patient
            facts = {**facts, "name": value_hash("name", kept_name)}  # type: ignore[dict-item]
            kept_name = str(facts["name"])  # type: ignore[index]
        inputs = None if facts is None else to_json(facts).decode()
        row = prediction_row(
            request_id, self.vertical, version, inputs=inputs,
            outputs=to_json(summary).decode(), latency_ms=latency_ms, input_name=kept_name,
            input_sha256=sha, input_size=len(data), output_sha256=out_sha,
        )  # fmt: skip
        await self.log.write(row)

    def _keep(
        self, data: bytes, name: str, result: FileOutput, out_name: str
    ) -> tuple[str, str | None]:
        sha = digest(data)
        if self.inputs_mode != "full":  # a file name can name a patient: a neutral one
            name, out_name = f"input{ending(name)}", f"output{result.suffix}"
        if self.keep_files:
            self.log.keep(data, name, sha)
        out_sha = self.log.keep(result.content, out_name) if self.keep_outputs else None
        return sha, out_sha
