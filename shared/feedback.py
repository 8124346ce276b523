"""Outcomes of logged predictions: checked against the vertical's outcome type, then stored.

One path for every way feedback arrives (`POST /feedback` as JSON or, for an outcome that
is a file, multipart; `verticals feedback <vertical> input=outcomes.csv`): each item names
a request id, says when the outcome was observed, and carries the vertical's own fields
(`Vertical.outcome_schema`). Nothing is stored unless every item is valid and every
request id is in the log; a second outcome for a request replaces the first and says so.
"""

from __future__ import annotations

import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from verticals.core.content_store import digest, ending, safe_name
from verticals.core.contract import FileVertical, Logged, Vertical
from verticals.core.errors import UserError
from verticals.core.predlog import Outcome, PredictionLog, parse_since
from verticals.core.records import BadRequest, describe_errors

REQUEST_ID = r"^[A-Za-z0-9._:@/+=-]{1,128}$"  # what a server accepts as X-Request-ID
RequestId = Annotated[str, Field(pattern=REQUEST_ID, description="the prediction's request id")]


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: RequestId
    observed_at: datetime | None = Field(None, description="when the outcome was observed")


def outcome_model(vertical: Vertical, model: Any) -> type[BaseModel] | None:
    """The schema of one feedback item: request id, observed_at and the vertical's fields
    (None when the vertical takes no feedback)."""
    own = vertical.outcome_schema(model)
    if own is None:
        return None
    return create_model(
        f"{vertical.name.title()}Feedback", __base__=(own, _Envelope), __module__=__name__
    )


class FeedbackCheck:
    """Validates feedback items for one served model and stores them in the log."""

    def __init__(self, vertical: Vertical, model: Any, log: PredictionLog) -> None:
        self.vertical, self.log = vertical, log
        self.schema = outcome_model(vertical, model)
        self.items = None if self.schema is None else TypeAdapter(list[self.schema])  # type: ignore[name-defined]
        self.file_field = vertical.outcome_file if isinstance(vertical, FileVertical) else None

    def refuse_none(self) -> None:
        if self.schema is None:
            raise BadRequest(f"the {self.vertical.name} vertical takes no feedback")

    def parse(self, items: Any, where: str = "feedback") -> list[BaseModel]:
        """Validated items, or `BadRequest` naming the item and field (`feedback[2].defaulted`)."""
        self.refuse_none()
        assert self.items is not None
        if not isinstance(items, list):
            items = [items]
        if not items:
            raise BadRequest("feedback is an empty list: send at least one outcome")
        try:
            return self.items.validate_python(items)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            raise BadRequest(describe_errors(errors, (where,)), errors) from None

    def store(self, parsed: list[BaseModel], files: dict[int, tuple[str, bytes]] | None = None
              ) -> list[bool]:  # fmt: skip
        """Store parsed items (with their outcome files, by item index); for each whether it
        replaced an earlier outcome. `UnknownRequests` when an id is not in the log;
        `UserError` when an outcome file does not fit its prediction."""
        files = files or {}
        if self.file_field and len(files) < len(parsed):
            missing = next(i for i in range(len(parsed)) if i not in files)
            raise BadRequest(
                f"feedback[{missing}]: the {self.file_field} file is missing; upload it as "
                f"multipart form field {self.file_field!r} (with request_id)"
            )
        outcomes = []
        entries = self._entries([item.request_id for item in parsed]) if files else {}  # type: ignore[attr-defined]
        for i, item in enumerate(parsed):
            fields = item.model_dump(mode="json", exclude={"request_id", "observed_at"})
            sha = None
            if i in files:
                name, data = files[i]
                sha = self._check_file(name, data, entries[item.request_id])  # type: ignore[attr-defined]
                shown = safe_name(name) if self.log.settings.inputs == "full" else None
                fields[str(self.file_field)] = {"name": shown, "sha256": sha,
                                                "size": len(data)}  # fmt: skip
            outcomes.append(
                Outcome(
                    request_id=item.request_id,  # type: ignore[attr-defined]
                    outcome=fields,
                    observed_at=_utc(item.observed_at),  # type: ignore[attr-defined]
                    file_sha256=sha,
                )
            )
        return self.log.store_feedback(self.vertical.name, outcomes)

    def _entries(self, request_ids: list[str]) -> dict[str, Logged]:
        from verticals.core.predlog import UnknownRequests

        found = self.log.find(self.vertical.name, request_ids)
        missing = [r for r in request_ids if r not in found]
        if missing:
            raise UnknownRequests(missing)
        return {rid: self.log._entry({**row, "outcome": None, "observed_at": None,
                                      "outcome_sha256": None})
                for rid, row in found.items()}  # fmt: skip

    def _check_file(self, name: str, data: bytes, entry: Logged) -> str:
        """Check an outcome file against its prediction, then keep it; its sha256."""
        assert isinstance(self.vertical, FileVertical)
        if not data:
            raise BadRequest(f"the {self.file_field} file {name!r} is empty")
        with tempfile.TemporaryDirectory(prefix="verticals-outcome-") as tmp:
            path = Path(tmp) / safe_name(name)
            path.write_bytes(data)
            try:
                self.vertical.check_outcome_file(path, entry)
            except UserError as exc:
                message = exc.message.replace(str(path), name)
                raise BadRequest(f"{self.file_field} {name!r}: {message}") from None
        sha = digest(data)
        if self.log.settings.inputs != "full":  # a file name can name a patient
            name = f"{self.file_field}{ending(name)}"
        return self.log.keep(data, name, sha)


def answer(parsed: list[BaseModel], replaced: list[bool]) -> dict[str, Any]:
    """The reply to stored feedback: how many, and which replaced an earlier outcome."""
    again = [item.request_id for item, r in zip(parsed, replaced, strict=True) if r]  # type: ignore[attr-defined]
    reply: dict[str, Any] = {"stored": len(parsed), "replaced": len(again)}
    if again:
        shown = ", ".join(again[:5]) + (f" and {len(again) - 5} more" if len(again) > 5 else "")
        reply["message"] = f"replaced the earlier outcome of {shown}"
        reply["replaced_request_ids"] = again
    return reply


def _utc(when: datetime | None) -> datetime | None:
    return None if when is None else parse_since(when)


_MISSING = re.compile(r"^\s*$")


def rows_of_table(frame: Any) -> list[dict[str, Any]]:
    """Feedback items from a table (`verticals feedback ... input=outcomes.csv`), one per
    request id. Empty cells are left out; a cell holding JSON (`["12", "40"]`, as
    spreadsheets keep a list) is read as it; columns `a.b` are the fields of the items of a
    list `a`, one item per row of that request id (traffic: `observed.sensor`,
    `observed.timestamp`, `observed.speed`)."""
    import json

    items: dict[Any, dict[str, Any]] = {}
    for number, record in enumerate(frame.to_dict("records")):
        key = record.get("request_id", f"(row {number + 1})")
        item = items.setdefault(key, {})
        nested: dict[str, dict[str, Any]] = {}
        for column, value in record.items():
            value = _cell(value, json)
            if value is _SKIP:
                continue
            parent, _, child = str(column).partition(".")
            if child:
                nested.setdefault(parent, {})[child] = value
            else:
                item[parent] = value
        for parent, fields in nested.items():
            item.setdefault(parent, []).append(fields)
    return list(items.values())


_SKIP = object()


def _cell(value: Any, json: Any) -> Any:
    """A table cell as JSON would hold it (`_SKIP` for an empty one)."""
    if value is None or (isinstance(value, float) and value != value):
        return _SKIP
    if isinstance(value, str):
        if _MISSING.match(value):
            return _SKIP
        if value.lstrip()[:1] in ("[", "{"):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value
