"""Record requests and answers as bytes: JSON in, validated records out, JSON back.

Pydantic's compiled (Rust) validators parse and check a whole request body in one call,
microseconds per record; the answer is checked against the response schema and written
to JSON the same way. Nothing here builds a DataFrame: this is the serving fast path's
edge, shared by the small-request path, the micro-batcher and the big-request process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model
from pydantic_core import to_json

from verticals.core.contract import RecordVertical
from verticals.core.errors import UserError
from verticals.core.limits import clip, excerpt

MAX_DETAILS = 20  # pydantic errors listed in a 422 answer's `detail`
MAX_STRING = 1024  # characters of a string in a record (ids, names, categories)


class BadRequest(ValueError):
    """A request the server answers 422: the message names the record and the field."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []

    def body(self) -> dict[str, Any]:
        """The 422 answer: the readable message, and pydantic's errors when there are any
        (clipped: a client's huge value or key is never sent back whole)."""
        return {"message": clip(self.message), "detail": error_details(self.errors)}


def unprocessable(exc: BadRequest | UserError) -> bytes:
    """The JSON body of a 422 for a bad request or a `UserError` (its hint included)."""
    if isinstance(exc, UserError):
        exc = BadRequest(str(exc))
    return json.dumps(exc.body()).encode()


def describe_errors(errors: list[dict[str, Any]], prefix: tuple[Any, ...] = ()) -> str:
    """Pydantic errors as one readable line: `record[1].age: Input should be ...`."""
    parts = []
    for err in errors[:5]:
        loc = [*prefix, *err.get("loc", ())]
        where = ""
        for item in loc:
            where += f"[{item}]" if isinstance(item, int) else (f".{item}" if where else str(item))
        parts.append(f"{excerpt(where) or 'body'}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def error_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The JSON-able part of pydantic's errors, for a 422 body's `detail`: the first
    `MAX_DETAILS` (a list of a million bad records must not make a huge answer), with
    client-given keys and messages cut to an excerpt."""
    return [
        {"loc": [_clip_loc(item) for item in e.get("loc", ())], "msg": clip(str(e.get("msg"))),
         "type": e.get("type")}
        for e in errors[:MAX_DETAILS]
    ]  # fmt: skip


def _clip_loc(item: Any) -> Any:
    return excerpt(item) if isinstance(item, str) else item


@dataclass
class RecordCodec:
    """A record vertical's request and response schemas, compiled once per served model."""

    one: TypeAdapter[Any]
    many: TypeAdapter[Any]
    answer: TypeAdapter[Any]
    record_schema: type
    output_schema: type

    @classmethod
    def of(cls, vertical: RecordVertical, model: Any) -> RecordCodec:
        record = _bounded_strings(vertical.request_schema(model))
        output = vertical.response_schema(model)
        response = create_model(
            "PredictResponse",
            model_version=(str, ...),
            request_id=(str | None, None),  # the log's key: feedback names it
            predictions=(list[output], ...),  # type: ignore[valid-type]
        )
        return cls(
            one=TypeAdapter(record),
            many=TypeAdapter(list[record]),  # type: ignore[valid-type]
            answer=TypeAdapter(response),
            record_schema=record,
            output_schema=response,
        )

    def parse(self, body: bytes) -> list[dict[str, Any]]:
        """The records of a request body (one JSON object, or a list of them), validated and
        dumped by alias (keys are the model's column names). Raises `BadRequest`."""
        first = body.lstrip()[:1]
        single = first == b"{"
        if not single and first != b"[":
            try:  # not an object or a list: is it JSON at all?
                TypeAdapter(Any).validate_json(body)
            except ValidationError as exc:
                raise BadRequest(f"body is not valid JSON: {_json_message(exc)}") from None
            raise BadRequest("body must be one record (a JSON object) or a list of records")
        adapter = self.one if single else self.many
        try:
            items = adapter.validate_json(body)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            if errors and errors[0]["type"] == "json_invalid":
                raise BadRequest(f"body is not valid JSON: {_json_message(exc)}") from None
            prefix = () if single else ("record",)
            raise BadRequest(describe_errors(errors, prefix), errors) from None
        if single:
            return [self.one.dump_python(items, by_alias=True)]
        if not items:
            raise BadRequest("body is an empty list: send at least one record")
        return self.many.dump_python(items, by_alias=True)

    def validate(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Python records (a notebook's, a test's) through the same checks as `parse`."""
        try:
            return self.many.dump_python(self.many.validate_python(records), by_alias=True)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            raise BadRequest(describe_errors(errors, ("record",)), errors) from None

    def encode(
        self,
        model_version: str,
        rows: list[dict[str, Any]],
        sample: int | None = None,
        request_id: str | None = None,
    ) -> bytes:
        """The JSON answer, checked against the response schema (a vertical's bug is a 500
        here, not a malformed answer).

        With `sample`, a long answer is checked on its first `sample` rows only and written
        as it is, which is seconds faster for 100,000 rows with nested lists: rows of one
        table path share their types, and if the sample's checked JSON differs in any byte
        from the unchecked one, every row is checked after all.
        """
        answer = {"model_version": model_version, "request_id": request_id, "predictions": rows}
        if sample is not None and len(rows) > sample:
            head = {**answer, "predictions": rows[:sample]}
            if self._checked(head) == to_json(head, inf_nan_mode="null"):
                return to_json(answer, inf_nan_mode="null")
        return self._checked(answer)

    def _checked(self, answer: dict[str, Any]) -> bytes:
        return self.answer.dump_json(self.answer.validate_python(answer), by_alias=True)


def _bounded_strings(record: type[BaseModel]) -> type[BaseModel]:
    """`record` with every string at most `MAX_STRING` characters: an id or a name longer
    than that is a 422, not echoed back in the answer (a subclass: the vertical's own
    config and validators stay)."""
    if record.model_config.get("str_max_length") is not None:
        return record
    namespace = {"model_config": ConfigDict(str_max_length=MAX_STRING),
                 "__module__": record.__module__, "__doc__": record.__doc__}  # fmt: skip
    return type(record.__name__, (record,), namespace)


def _json_message(exc: ValidationError) -> str:
    return str(exc.errors(include_url=False)[0].get("msg", "invalid"))[:200]
