"""The FastAPI app factory: one HTTP API for every vertical, built from a bundle.

Endpoints: `/health` (process alive), `/ready` (model loaded and warmed up on the
bundle's example inputs; 503 before), `/metadata` (version,
metrics, schema), `POST /predict` (one record or a list), `POST /feedback` (outcomes for
retraining, appended as JSON lines), `/metrics` (Prometheus) and the OpenAPI docs.
Malformed input is answered 422 with a message that names the field, never 500.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import pandas as pd
from fastapi import Body, FastAPI, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from pydantic import BaseModel, TypeAdapter, ValidationError, create_model

from verticals.core.bundle import Bundle, io_schema, load_bundle
from verticals.core.contract import FileOutput, FileVertical
from verticals.core.errors import UserError
from verticals.core.examples import EXAMPLES, warm_up
from verticals.core.logs import get_logger

log = get_logger("serving")
BUNDLE_ENV = "VERTICALS_BUNDLE"  # read by `app_from_env` in each server worker process
FEEDBACK_ENV = "VERTICALS_FEEDBACK_DIR"  # where /feedback writes (the bundle's image sets it)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # set for N > 1 workers: metrics add up


def describe_errors(errors: list[dict[str, Any]], prefix: tuple[Any, ...] = ()) -> str:
    """Pydantic errors as one readable line: `record[1].age: Input should be ...`."""
    parts = []
    for err in errors[:5]:
        loc = [*prefix, *err.get("loc", ())]
        where = ""
        for item in loc:
            where += f"[{item}]" if isinstance(item, int) else (f".{item}" if where else str(item))
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def _unprocessable(message: str, errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    detail = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in (errors or [])
    ]
    return JSONResponse(status_code=422, content={"message": message, "detail": detail})


def create_app(
    bundle: Bundle | str | Path,
    feedback_dir: str | Path | None = None,
    warm: Literal["now", "background"] = "now",
) -> FastAPI:
    """A FastAPI app serving `bundle` (a loaded `Bundle` or a bundle folder).

    The model scores the bundle's example inputs once before `/ready` turns true: here and
    now (an error is raised), or, with `warm="background"` (servers), in a thread started
    when the server starts, so `/health` answers and `/ready` says 503 meanwhile (and stays
    503, naming the error, if the model cannot score its examples).
    """
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    vertical, model = bundle.vertical, bundle.model
    feedback_root = feedback_dir or os.environ.get(FEEDBACK_ENV) or Path("feedback") / vertical.name
    feedback_path = Path(feedback_root) / "feedback.jsonl"
    schema = io_schema(vertical, model)

    state = ServingState(model_version=bundle.model_version)

    def warm_now() -> None:
        state.phase = "warming up"
        seconds = warm_up(vertical, model, bundle.path / EXAMPLES)
        if seconds is None:
            log.info("%s: no example inputs in the bundle; no warm-up", vertical.name)
        else:
            log.info("%s: warmed up on the bundle's examples in %.2f s", vertical.name, seconds)
        state.ready, state.phase = True, "serving"

    def warm_in_background() -> None:
        try:
            warm_now()
        except Exception as exc:  # not ready, and /ready says why; the log has the traceback
            log.exception("%s: the model failed on the bundle's examples", vertical.name)
            state.phase = f"warm-up failed: {type(exc).__name__}: {str(exc)[:200]}"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm == "background":
            app.state.warm_up = asyncio.create_task(asyncio.to_thread(warm_in_background))
        yield

    registry = CollectorRegistry()
    requests = Counter("verticals_requests", "HTTP requests", ["path", "status"], registry=registry)
    latency = Histogram("verticals_request_seconds", "Request latency", ["path"], registry=registry)
    scored = Counter("verticals_predictions", "Records scored", registry=registry)
    exposition = _exposition_registry(registry)

    app = FastAPI(
        lifespan=lifespan,
        title=f"Verticals: {vertical.title or vertical.name}",
        version=bundle.model_version,
        description=f"Serving bundle `{bundle.path.name}` of the {vertical.name} vertical.",
    )

    app.state.serving = state

    @app.middleware("http")
    async def _observe(request: Request, call_next: Any) -> Any:
        """Count every request by status, a crash included, and give each an id."""
        started = time.perf_counter()
        request_id = request_id_of(request)
        request.state.request_id = request_id
        try:
            resp = await call_next(request)
        except Exception:  # an unhandled error: the client gets a 500 with its id, not a hang
            log.exception("request %s %s %s failed", request_id, request.method, request.url.path)
            resp = JSONResponse(
                status_code=500,
                content={"message": "internal error; the server log has the details",
                         "request_id": request_id},
            )  # fmt: skip
        path = request.url.path if request.url.path in _known else "other"
        latency.labels(path).observe(time.perf_counter() - started)
        requests.labels(path, str(resp.status_code)).inc()
        resp.headers["X-Request-ID"] = request_id
        return resp

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"description": "loading, warming up or reloading"}})
    def ready() -> Any:
        body = {"ready": state.ready, "model_version": state.model_version, "state": state.phase}
        return body if state.ready else JSONResponse(status_code=503, content=body)

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        return {
            "vertical": vertical.name,
            "model_version": bundle.model_version,
            "created": bundle.manifest.get("created"),
            "metrics": bundle.metrics,
            "versions": bundle.manifest.get("versions", {}),
            "schema": schema,
        }

    if isinstance(vertical, FileVertical):
        _file_predict_route(app, bundle, scored)
    else:
        _records_predict_route(app, bundle, scored)

    @app.post("/feedback")
    def feedback(items: Annotated[list[dict[str, Any]], Body(min_length=1)]) -> Any:
        """Record observed outcomes (e.g. `{"id": ..., "outcome": 1}`) for monitoring/retraining."""
        stamp = datetime.now().isoformat(timespec="seconds")
        lines = []
        for i, item in enumerate(items):
            record = {**item, "received": stamp, "model_version": bundle.model_version}
            try:
                lines.append(json.dumps(record, allow_nan=False) + "\n")
            except ValueError:
                return _unprocessable(f"feedback[{i}] holds NaN or Infinity; send null instead")
        feedback_path.parent.mkdir(parents=True, exist_ok=True)
        with feedback_path.open("a") as fh:
            fh.writelines(lines)
        return {"stored": len(items)}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(generate_latest(exposition), media_type=CONTENT_TYPE_LATEST)

    _known = {route.path for route in app.routes}  # type: ignore[attr-defined]
    if warm == "now":
        warm_now()
    return app


@dataclass
class ServingState:
    """What `/ready` reports: false while the model loads, warms up or is being replaced."""

    model_version: str
    ready: bool = False
    phase: str = "loading"


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id_of(request: Request) -> str:
    """The client's `X-Request-ID` when it is a sane token, else a new random id."""
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def _exposition_registry(own: CollectorRegistry) -> CollectorRegistry:
    """The registry `/metrics` reads: this process's, or, when several server processes
    share `PROMETHEUS_MULTIPROC_DIR`, one that adds up every process's files."""
    if not os.environ.get(MULTIPROC_ENV):
        return own
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)
    return combined


def _records_predict_route(app: FastAPI, bundle: Bundle, scored: Counter) -> None:
    """`POST /predict` for record verticals: one JSON record or a list of them."""
    vertical, model = bundle.vertical, bundle.model
    record = vertical.request_schema(model)
    output = vertical.response_schema(model)
    records = TypeAdapter(list[record])  # type: ignore[valid-type]
    response = create_model(
        "PredictResponse",
        model_version=(str, ...),
        predictions=(list[output], ...),  # type: ignore[valid-type]
    )

    def _score(payload: list[Any]) -> pd.DataFrame:
        items = records.validate_python(payload)
        rows = [item.model_dump(by_alias=True) for item in items]  # aliases = column names
        return vertical.predict(model, pd.DataFrame(rows))

    single = record.model_json_schema()
    body_schema = {"anyOf": [single, {"type": "array", "items": single}]}

    @app.post(
        "/predict",
        response_model=response,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": body_schema}},
            }
        },
    )
    async def predict(request: Request) -> Any:
        try:
            payload = await request.json()
        except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
            return _unprocessable(f"body is not valid JSON: {str(exc)[:200]}")
        if isinstance(payload, dict):
            payload, prefix = [payload], ()
        elif isinstance(payload, list):
            prefix = ("record",)
        else:
            return _unprocessable("body must be one record (a JSON object) or a list of records")
        if not payload:
            return _unprocessable("body is an empty list: send at least one record")
        try:
            # Off the event loop: validation and the model are CPU work, and requests overlap.
            frame = await run_in_threadpool(_score, payload)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            if not prefix:  # single record: drop the list index
                errors = [{**e, "loc": tuple(e["loc"][1:])} for e in errors]
            return _unprocessable(describe_errors(errors, prefix), errors)
        except UserError as exc:
            return _unprocessable(str(exc))
        scored.inc(len(frame))
        # Missing values as null: pandas' string columns hold NaN for them, JSON has no NaN.
        rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
        return {"model_version": bundle.model_version, "predictions": rows}


class OutputFile(BaseModel):
    name: str
    media_type: str
    base64: str


def _file_predict_route(app: FastAPI, bundle: Bundle, scored: Counter) -> None:
    """`POST /predict` for file verticals: a multipart upload in; the summary and the output
    file (base64 in JSON, or the raw file with `?format=file`) out."""
    vertical, model = bundle.vertical, bundle.model
    assert isinstance(vertical, FileVertical)
    output = vertical.response_schema(model)
    endings = ", ".join(vertical.input_suffixes)
    response = create_model(
        "PredictResponse",
        model_version=(str, ...),
        input=(str, ...),
        prediction=(output, ...),
        output_file=(OutputFile | None, None),
    )

    def _run(name: str, data: bytes) -> FileOutput:
        with tempfile.TemporaryDirectory(prefix="verticals-upload-") as tmp:
            path = Path(tmp) / name  # readers pick the format from the file name's ending
            path.write_bytes(data)
            try:
                return vertical.predict_path(model, path)
            except UserError as exc:  # the temporary folder means nothing to the client
                raise UserError(exc.message.replace(str(path), name)) from None

    # Annotations are strings here (postponed evaluation): FastAPI resolves them against the
    # module's globals, so they must not name this function's locals.
    @app.post("/predict", response_model=response)
    async def predict(
        file: Annotated[UploadFile, File(description="one input file (endings: /metadata)")],
        fmt: Annotated[
            Literal["json", "summary", "file"],
            Query(
                alias="format",
                description="json: summary + base64 file; summary: no file; file: raw file",
            ),
        ] = "json",
    ) -> Any:
        name = Path(file.filename or "").name
        if not vertical.accepts_name(name):
            return _unprocessable(f"file {name!r} must end with one of: {endings}")
        data = await file.read()
        if not data:
            return _unprocessable(f"file {name!r} is empty")
        try:
            result = await run_in_threadpool(_run, name, data)
        except UserError as exc:
            message = exc.message if name in exc.message else f"{name}: {exc.message}"
            return _unprocessable(message)
        summary = output.model_validate(result.summary).model_dump(mode="json", by_alias=True)
        scored.inc()
        out_name = f"{vertical.stem(Path(name))}{result.suffix}"
        if fmt == "file":
            ascii_name = out_name.encode("ascii", "replace").decode().replace('"', "_")
            headers = {  # RFC 6266: an ASCII fallback and the UTF-8 name
                "Content-Disposition": f'attachment; filename="{ascii_name}"; '
                f"filename*=UTF-8''{quote(out_name)}",
                "X-Prediction": json.dumps(summary),
            }
            return Response(result.content, media_type=result.media_type, headers=headers)
        answer = {"model_version": bundle.model_version, "input": name, "prediction": summary}
        if fmt == "json":
            encoded = base64.b64encode(result.content).decode("ascii")
            answer["output_file"] = {
                "name": out_name, "media_type": result.media_type, "base64": encoded
            }  # fmt: skip
        return answer


def app_from_env() -> FastAPI:
    """App factory for multi-process servers (`uvicorn --factory`): bundle path from env."""
    path = os.environ.get(BUNDLE_ENV)
    if not path:
        raise UserError(f"set {BUNDLE_ENV} to the bundle folder to serve")
    return create_app(path, warm="background")
