"""`POST /feedback`: outcomes of logged predictions, by request id.

JSON: a list of items (or one), each `{"request_id", "observed_at", <the vertical's
outcome fields>}`. A vertical whose outcome is a file (medical: a corrected mask) takes a
multipart form instead: `request_id`, `observed_at`, its other fields, and the file under
its field name. 404 for a request id the log does not have (nothing stored), 422 naming the
item and field of a malformed outcome; the reply says which outcomes replaced earlier ones.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import (
    UploadFile,
)  # what request.form() gives (FastAPI's subclasses it)
from starlette.requests import Request

from verticals.core.errors import UserError
from verticals.core.feedback import FeedbackCheck, answer
from verticals.core.hotswap import Versions
from verticals.core.limits import (
    body_shape_problem,
    clip,
    is_json,
    name_problem,
    unsupported_media,
)
from verticals.core.predlog import LogUnavailable, PredictionLog, UnknownRequests
from verticals.core.records import BadRequest

_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "a request id the prediction log does not have; nothing was stored"},
    413: {"description": "the body is over serve.max_body_mb, or holds over serve.max_records"},
    415: {"description": "a JSON body not sent as Content-Type: application/json"},
    422: {"description": "a malformed outcome: the message names the item and field"},
    503: {"description": "this server keeps no prediction log, or it could not be written"},
}


def add_feedback_route(app: FastAPI, versions: Versions[Any], log: PredictionLog | None) -> None:
    """Register `POST /feedback`; outcomes are checked against the schema of the version
    serving when they arrive."""
    checks: dict[str, FeedbackCheck] = {}

    def check_of(served: Any) -> FeedbackCheck:
        assert log is not None
        found = checks.get(served.version)
        if found is None:
            found = checks[served.version] = FeedbackCheck(served.vertical, served.model, log)
        return found

    first = versions.current
    schema = None if log is None else check_of(first).schema
    extra = None
    if schema is not None:
        item = TypeAdapter(schema).json_schema()
        body = {"anyOf": [item, {"type": "array", "items": item, "minItems": 1}]}
        content: dict[str, Any] = {"application/json": {"schema": body}}
        field = check_of(first).file_field
        if field:
            upload = {field: {"type": "string", "format": "binary"}}
            form = {**item, "properties": {**item.get("properties", {}), **upload}}
            content = {"multipart/form-data": {"schema": form}}
        extra = {"requestBody": {"required": True, "content": content}}

    @app.post("/feedback", responses=_RESPONSES, openapi_extra=extra)
    async def feedback(request: Request) -> JSONResponse:
        """Store what really happened after logged predictions (see the schema per vertical)."""
        if log is None:
            return _reply(503, "this server keeps no prediction log, so it takes no feedback")
        check = check_of(versions.current)
        files: dict[int, tuple[str, bytes]] = {}
        try:
            content_type = request.headers.get("content-type", "")
            if content_type.startswith("multipart/form-data"):
                items, files = await _form(request, check)
            elif not is_json(content_type):
                return _reply(415, unsupported_media(content_type))
            else:
                items = await _json_items(request, versions.current.options.max_records)
            parsed = check.parse(items)
            replaced = await asyncio.to_thread(check.store, parsed, files)
        except _Refused as exc:
            return _reply(exc.status, exc.message)
        except UnknownRequests as exc:
            return JSONResponse(
                status_code=404,
                content={"message": exc.message, "request_ids": exc.request_ids[:20]},
            )
        except BadRequest as exc:
            return JSONResponse(status_code=422, content=exc.body())
        except UserError as exc:
            return _reply(422, str(exc))
        except LogUnavailable as exc:
            return _reply(503, str(exc))
        except SQLAlchemyError as exc:
            first_line = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            return _reply(503, f"the prediction log could not be written: {first_line}")
        return JSONResponse(answer(parsed, replaced))


async def _json_items(request: Request, max_records: int) -> Any:
    """The JSON body, refused (422) when it nests deeper than `MAX_DEPTH` before `json`
    recurses into it, or (413) when it holds more than `max_records` items."""
    body = await request.body()
    problem = await body_shape_problem(body, max_records)
    if problem is not None:
        raise _Refused(*problem)
    try:
        return json.loads(body)
    except ValueError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def _form(
    request: Request, check: FeedbackCheck
) -> tuple[list[Any], dict[int, tuple[str, bytes]]]:
    """One item from a multipart form: its text fields, and the outcome file."""
    form = await request.form()
    fields: dict[str, Any] = {}
    files: dict[int, tuple[str, bytes]] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key != check.file_field:
                raise BadRequest(f"form field {key!r} is a file; only {check.file_field!r} may be")
            name = value.filename or key
            problem = name_problem(name)
            if problem is not None:
                raise BadRequest(problem)
            files[0] = (name, await value.read())
        else:
            fields[key] = value
    return [fields], files


def _reply(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"message": clip(message), "detail": []})
