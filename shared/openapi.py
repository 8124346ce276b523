"""The OpenAPI schema as the server really answers: every refusal with its JSON body.

Routes declare what only they answer (404, 415, 422...); the middlewares answer on every
path they guard, so their statuses are added here, path by path: 401 and 403 where a
token is needed (`auth.scope_for`), 413 and 503 where `limits.Limits` bounds the request.
A client generated from the schema, or a fuzzer checking answers against it, then meets
no undeclared status and no body of an undeclared shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from verticals.core.auth import scope_for
from verticals.core.limits import UNBOUNDED_PATHS

SCHEME = "bearerAuth"
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_AUTH = {
    401: "no bearer token, or an unknown or revoked one (once the server has tokens)",
    403: "the token's scope does not cover this path",
}
_LIMITS = {
    413: "the body is over serve.max_body_mb",
    503: "the server is answering serve.max_inflight requests already (Retry-After)",
}


class ErrorDetail(BaseModel):
    """One of pydantic's errors, clipped: where, what, and its kind."""

    model_config = ConfigDict(extra="allow")
    loc: list[str | int] = Field(default_factory=list)
    msg: str | None = None
    type: str | None = None


class ErrorBody(BaseModel):
    """Every refusal's body: a message naming what is wrong, and the request's id when the
    refusal came after it was given one; 422s list pydantic's errors in `detail`, a
    feedback 404 the unknown ids in `request_ids`."""

    model_config = ConfigDict(extra="allow")
    message: str
    request_id: str | None = None
    detail: list[ErrorDetail] = Field(default_factory=list)
    request_ids: list[str] | None = None


def install(app: FastAPI) -> None:
    """Make `app.openapi()` give the completed schema (rebuilt whenever `app.openapi_schema`
    is reset, as a version swap does)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            complete(FastAPI.openapi(app))  # FastAPI keeps it in app.openapi_schema
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the middlewares' statuses, the error body and the bearer scheme to `schema`
    (in place; returned too)."""
    components = schema.setdefault("components", {})
    defs = components.setdefault("schemas", {})
    body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    defs.update(body.pop("$defs", {}))
    defs["ErrorBody"] = body
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422: not what we send
        defs.pop(name, None)
    components.setdefault("securitySchemes", {})[SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "a token from `verticals token create` (needed once any exists)",
    }
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                _complete_operation(path, item[method])
    return schema


def _complete_operation(path: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    if scope_for(path) is not None:
        operation["security"] = [{SCHEME: []}]
        _declare(responses, _AUTH)
    if path not in UNBOUNDED_PATHS:
        _declare(responses, _LIMITS)
    ref = {"$ref": "#/components/schemas/ErrorBody"}
    for status, response in responses.items():
        if not str(status).startswith("2") and _is_default_or_empty(response):
            response["content"] = {"application/json": {"schema": ref}}


def _declare(responses: dict[str, Any], statuses: dict[int, str]) -> None:
    """Add each status, or its reason to the description a route already gave it."""
    for status, why in statuses.items():
        response = responses.setdefault(str(status), {"description": why})
        if why not in response.get("description", ""):
            response["description"] = f"{response['description']}; or {why}"


def _is_default_or_empty(response: dict[str, Any]) -> bool:
    """A response declared without a body, or with FastAPI's default validation error."""
    content = response.get("content")
    if not content:
        return True
    schema = content.get("application/json", {}).get("schema", {})
    return schema.get("$ref", "").endswith("/HTTPValidationError")
