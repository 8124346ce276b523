"""What one request may cost: body size, requests in flight, JSON nesting and records,
upload names, and how much of a client's own input an error message may quote.

`Limits` is a plain ASGI middleware (Starlette's `BaseHTTPMiddleware` costs a task and a
stream per request, more than scoring a record does). It refuses a body over the limit
from its `Content-Length` before reading it, and counts the bytes of a chunked body as
they arrive, answering 413 as soon as they pass the limit; beyond `max_inflight` requests
at once it answers 503 with `Retry-After`, so an overload degrades instead of piling up.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from verticals.core.auth import route_path

#: Deepest JSON nesting a body may have: records are flat, with a list or two inside.
MAX_DEPTH = 32
#: Characters of a client's own input an error message may quote.
EXCERPT = 80
#: Bytes of an upload's file name (most file systems' limit on one name).
MAX_NAME_BYTES = 255
#: Paths that stay answerable under any load: load balancers and scrapers ask them.
UNBOUNDED_PATHS = frozenset({"/health", "/ready", "/metrics"})
RETRY_AFTER_S = 1
#: Bodies larger than this are measured for nesting and records in a thread.
SHAPE_INLINE_BYTES = 256 << 10


class _BodyTooLarge(Exception):
    """Raised into the app by `receive` once a streamed body passes the limit."""


class Limits:
    """Refuse bodies over `max_body_bytes` (413) and requests beyond `max_inflight` at once
    (503 with `Retry-After`); `/health`, `/ready` and `/metrics` are never bounded."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_inflight: int) -> None:
        self.app, self.max_body_bytes, self.max_inflight = app, max_body_bytes, max_inflight
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or route_path(scope) in UNBOUNDED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.max_inflight:
            message = f"the server is working on {self.max_inflight} requests (serve.max_inflight)"
            await _reply(
                send, 503, f"{message}; try again", [(b"retry-after", str(RETRY_AFTER_S).encode())]
            )
            return
        declared = _content_length(scope["headers"])
        if declared is not None and declared > self.max_body_bytes:
            await _reply(send, 413, self._too_large())
            return
        self.inflight += 1
        try:
            await self._bounded(scope, receive, send)
        finally:
            self.inflight -= 1

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, counting body bytes as they arrive; past the limit, answer 413
        (unless an answer has started) and drop whatever the app sends afterwards."""
        received, started, refused = 0, False, False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except Exception as exc:
            # FastAPI wraps errors raised while it parses a form: look for ours inside
            if not _caused_by_overflow(exc) or started:
                raise
            refused = True
            await _reply(send, 413, self._too_large())

    def _too_large(self) -> str:
        mb = self.max_body_bytes / 2**20
        return f"the request body is larger than {mb:g} MB (serve.max_body_mb)"


def _caused_by_overflow(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, _BodyTooLarge):
            return True
        if isinstance(exc, BaseExceptionGroup):  # raised in a task group
            return any(_caused_by_overflow(inner) for inner in exc.exceptions)
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for key, value in headers:
        if key == b"content-length":
            return int(value) if value.strip().isdigit() else None
    return None


async def _reply(
    send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A JSON answer in the shape of every other refusal: `{"message", "detail"}`."""
    body = json.dumps({"message": message, "detail": []}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), *(extra or [])]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def is_json(content_type: str | None) -> bool:
    """Whether a `Content-Type` names JSON (`application/json`, `application/*+json`).

    Any other type, or none, is refused, so a page elsewhere cannot make a browser post a
    form, `text/plain` or a typeless blob that gets scored."""
    if not content_type:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def unsupported_media(content_type: str | None) -> str:
    """The 415 message for a body that is not JSON."""
    given = excerpt(content_type.split(";", 1)[0].strip()) if content_type else "none"
    return f"the body must be sent as Content-Type: application/json (got {given})"


@dataclass(frozen=True)
class JsonShape:
    depth: int  # deepest nesting of arrays and objects
    items: int  # items of the top-level array (1 for anything else)


_STRING = re.compile(rb'"[^"]*"')
_STRUCTURE = b'[]{},"'
_OTHER_BYTES = bytes(b for b in range(256) if b not in _STRUCTURE)
_CHUNK = 1 << 22
_STEP = np.zeros(256, np.int64)
_STEP[list(b"[{")], _STEP[list(b"]}")] = 1, -1


def json_shape(body: bytes) -> JsonShape:
    """How deep a JSON body nests and how many items its top-level array has, without
    parsing it: brackets and commas inside strings do not count. A few ms per MB; malformed
    JSON gives some figures, and the parser names what is wrong with it."""
    text = body.replace(b"\\\\", b"").replace(b'\\"', b"")  # escapes cannot end a string
    text = _STRING.sub(b"", text.translate(None, _OTHER_BYTES)).replace(b'"', b"")
    if not text:
        return JsonShape(0, 1)
    depth = level = commas = 0
    for start in range(0, len(text), _CHUNK):  # chunks: a 256 MB `[[[[...` in bounded memory
        codes = np.frombuffer(text, np.uint8, min(_CHUNK, len(text) - start), start)
        levels = np.cumsum(_STEP[codes]) + level
        depth, level = max(depth, int(levels.max())), int(levels[-1])
        commas += int(np.count_nonzero((codes == ord(",")) & (levels == 1)))
    return JsonShape(depth, commas + 1 if text[:1] == b"[" else 1)


def may_exceed(body: bytes, max_records: int) -> bool:
    """Whether `json_shape` is needed: a body with few brackets cannot nest deeply, and
    one with few commas cannot hold many records (two passes at memory speed)."""
    return body.count(b"[") + body.count(b"{") > MAX_DEPTH or body.count(b",") >= max_records


def shape_problem(body: bytes, max_records: int) -> tuple[int, str] | None:
    """(status, message) when a JSON body nests too deeply (422) or holds more than
    `max_records` records (413); None when neither."""
    if not may_exceed(body, max_records):
        return None
    shape = json_shape(body)
    if shape.depth > MAX_DEPTH:
        return 422, f"the JSON body nests deeper than {MAX_DEPTH} levels"
    if shape.items > max_records:
        return 413, (
            f"the body holds {shape.items} records; at most {max_records} per request "
            "(serve.max_records): send them in several requests"
        )
    return None


async def body_shape_problem(body: bytes, max_records: int) -> tuple[int, str] | None:
    """`shape_problem`, off the event loop when the body is big (ms per MB)."""
    if len(body) > SHAPE_INLINE_BYTES:
        return await asyncio.to_thread(shape_problem, body, max_records)
    return shape_problem(body, max_records)


def excerpt(text: str, limit: int = EXCERPT) -> str:
    """`text`, or its first `limit` characters and how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


_LONG_RUN = re.compile(rf"\S{{{EXCERPT + 1},}}")


def clip(message: str, limit: int = 1000) -> str:
    """An error message fit to send back: every long unbroken run (a client's huge id,
    quoted) cut to an excerpt, and the whole at most `limit` characters."""
    if len(message) <= EXCERPT:
        return message
    message = _LONG_RUN.sub(lambda m: excerpt(m.group()), message)
    return excerpt(message, limit)


def name_problem(name: str) -> str | None:
    """What is wrong with an uploaded file's name, or None: control characters (NUL
    included), folders or `..`, or more than 255 bytes break or escape the folder the file
    is written to."""
    shown = excerpt(name, 40)
    if not name:
        return "the upload has no file name"
    if any(not c.isprintable() for c in name):
        return f"file name {shown!r} contains control characters"
    if "/" in name or "\\" in name or name in (".", ".."):
        return f"file name {shown!r} must be a plain name, without folders"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"file name {shown!r} is longer than {MAX_NAME_BYTES} bytes"
    return None
