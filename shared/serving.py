"""The FastAPI app factory: one HTTP API for every vertical, built from a bundle.

Endpoints: `/health` (process alive), `/ready` (model loaded and warmed up on the
bundle's example inputs; 503 before), `/metadata` (version,
metrics, schema), `POST /predict` (one record or a list), `POST /feedback` (outcomes for
retraining, appended as JSON lines), `/metrics` (Prometheus) and the OpenAPI docs.
Malformed input is answered 422 with a message that names the field, never 500.

How a record request reaches the model, cheapest first: the body is parsed and checked
by one compiled pydantic call (`records.RecordCodec`); a small body goes through the
vertical's `predict_records` (no pandas), gathered with concurrent requests into one call
when micro-batching is on (`batching.MicroBatcher`); a big body goes whole to a process of
its own, on the table path (`offload.Offload`), so it never stalls the small ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from verticals.core.bundle import Bundle, io_schema, load_bundle
from verticals.core.config import ServeConfig
from verticals.core.contract import FileVertical
from verticals.core.errors import UserError
from verticals.core.examples import EXAMPLES, warm_up
from verticals.core.logs import get_logger
from verticals.core.routes import FilePredict, RecordPredict, unprocessable_response

log = get_logger("serving")
BUNDLE_ENV = "VERTICALS_BUNDLE"  # read by `app_from_env` in each server worker process
SERVE_ENV = "VERTICALS_SERVE"  # the serve.* settings as JSON, for the worker processes
FEEDBACK_ENV = "VERTICALS_FEEDBACK_DIR"  # where /feedback writes (the bundle's image sets it)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # set for N > 1 workers: metrics add up
Warm = Literal["now", "background", "startup"]
CLIENT_CLOSED = 499  # nginx's status for a client that closed the connection first


def create_app(
    bundle: Bundle | str | Path,
    feedback_dir: str | Path | None = None,
    warm: Warm = "now",
    options: ServeConfig | None = None,
) -> FastAPI:
    """A FastAPI app serving `bundle` (a loaded `Bundle` or a bundle folder).

    The model scores the bundle's example inputs once before `/ready` turns true: here and
    now (an error is raised); with `warm="background"` (one server process), in a thread
    started when the server starts, so `/health` answers and `/ready` says 503 meanwhile
    (and stays 503, naming the error, if the model cannot score its examples); with
    `warm="startup"` (each of several worker processes), before the process accepts any
    request, so traffic only reaches warm workers. `options` are the `serve.*` settings.
    """
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    options = options or ServeConfig()
    vertical, model = bundle.vertical, bundle.model
    feedback_root = feedback_dir or os.environ.get(FEEDBACK_ENV) or Path("feedback") / vertical.name
    feedback_path = Path(feedback_root) / "feedback.jsonl"
    schema = io_schema(vertical, model)

    state = ServingState(model_version=bundle.model_version)
    registry = CollectorRegistry()
    requests = Counter("verticals_requests", "HTTP requests", ["path", "status"], registry=registry)
    latency = Histogram("verticals_request_seconds", "Request latency", ["path"], registry=registry)
    scored = Counter("verticals_predictions", "Records scored", registry=registry)
    batch_sizes = Histogram(
        "verticals_batch_inputs",
        "Inputs per model call of the micro-batcher",
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        registry=registry,
    )
    exposition = _exposition_registry(registry)

    kind = FilePredict if isinstance(vertical, FileVertical) else RecordPredict
    route = kind(bundle, scored, options, batch_sizes)

    def warm_now() -> None:
        state.phase = "warming up"
        seconds = warm_up(vertical, model, bundle.path / EXAMPLES)
        if seconds is None:
            log.info("%s: no example inputs in the bundle; no warm-up", vertical.name)
        else:
            log.info("%s: warmed up on the bundle's examples in %.2f s", vertical.name, seconds)
        route.warm()
        if warm != "now":  # a server: the model and libraries stay for the process's life
            gc.freeze()  # gen-2 collections skip them: 120 ms pauses became 15 ms (traffic)
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
        elif warm == "startup":  # this worker takes no request until it is warm (or failed:
            await asyncio.to_thread(warm_in_background)  # then /ready says why, and 503)
        try:
            yield
        finally:
            route.close()

    app = FastAPI(
        lifespan=lifespan,
        title=f"Verticals: {vertical.title or vertical.name}",
        version=bundle.model_version,
        description=f"Serving bundle `{bundle.path.name}` of the {vertical.name} vertical.",
    )
    app.state.serving = state
    app.add_middleware(_Observe, known=lambda: known, latency=latency, requests=requests)

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
            "serving": {"batching": route.batching, "max_batch": options.max_batch,
                        "batch_wait_ms": options.batch_wait_ms,
                        "big_request_kib": options.big_request_kib},
        }  # fmt: skip

    route.add_to(app)
    app.state.predict = route

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
                return unprocessable_response(
                    f"feedback[{i}] holds NaN or Infinity; send null instead"
                )
        feedback_path.parent.mkdir(parents=True, exist_ok=True)
        with feedback_path.open("a") as fh:
            fh.writelines(lines)
        return {"stored": len(items)}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(generate_latest(exposition), media_type=CONTENT_TYPE_LATEST)

    known = {route.path for route in app.routes}  # type: ignore[attr-defined]
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


def request_id_of(given: str) -> str:
    """The client's `X-Request-ID` when it is a sane token, else a new random id."""
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


class _Observe:
    """Count every request by path and status (a crash too, as a 500 with its request id),
    time it, and give it an `X-Request-ID`. Plain ASGI: Starlette's `BaseHTTPMiddleware`
    costs a task and a stream per request, more than scoring a record does."""

    def __init__(
        self,
        app: ASGIApp,
        known: Callable[[], set[str]],
        latency: Histogram,
        requests: Counter,
    ) -> None:
        self.app, self.known, self.latency, self.requests = app, known, latency, requests
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}  # labels() costs µs

    def _count(self, path: str, status: int, seconds: float) -> None:
        path = path if path in self.known() else "other"  # a scan's paths: one label
        key = (path, status)
        if key not in self._children:
            self._children[key] = (
                self.latency.labels(path),
                self.requests.labels(path, str(status)),
            )
        timer, counter = self._children[key]
        timer.observe(seconds)
        counter.inc()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        request_id = request_id_of(given.decode("latin-1"))
        scope.setdefault("state", {})["request_id"] = request_id
        status, answered = 500, False

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                headers = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:  # the client left mid-body: nobody to answer, nothing broke
            log.info("request %s %s: the client went away", request_id, scope["path"])
            status = CLIENT_CLOSED
        except Exception:  # an unhandled error: the client gets a 500 with its id, not a hang
            log.exception("request %s %s %s failed", request_id, scope["method"], scope["path"])
            status = 500
            if not answered:
                await JSONResponse(
                    status_code=500,
                    content={"message": "internal error; the server log has the details",
                             "request_id": request_id},
                    headers={"X-Request-ID": request_id},
                )(scope, receive, send)  # fmt: skip
        finally:
            self._count(scope["path"], status, time.perf_counter() - started)


def _exposition_registry(own: CollectorRegistry) -> CollectorRegistry:
    """The registry `/metrics` reads: this process's, or, when several server processes
    share `PROMETHEUS_MULTIPROC_DIR`, one that adds up every process's files."""
    if not os.environ.get(MULTIPROC_ENV):
        return own
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)
    return combined


def options_from_env() -> ServeConfig:
    """The `serve.*` settings a worker process was started with (defaults when unset)."""
    given = os.environ.get(SERVE_ENV)
    return ServeConfig(**json.loads(given)) if given else ServeConfig()


def options_to_env(options: ServeConfig) -> str:
    """`serve.*` settings as the JSON `options_from_env` reads (enum members as words)."""
    settings = dataclasses.asdict(options)
    return json.dumps({k: str(v) if isinstance(v, StrEnum) else v for k, v in settings.items()})


def app_from_env() -> FastAPI:
    """App factory for multi-process servers (`uvicorn --factory`): bundle path from env;
    each worker warms up before it accepts a request."""
    path = os.environ.get(BUNDLE_ENV)
    if not path:
        raise UserError(f"set {BUNDLE_ENV} to the bundle folder to serve")
    return create_app(path, warm="startup", options=options_from_env())
