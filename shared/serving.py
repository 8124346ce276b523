"""The FastAPI app factory: one HTTP API for every vertical, built from a bundle.

Endpoints: `/health` (process alive), `/ready` (model loaded and warmed up on the
bundle's example inputs; 503 before), `/metadata` (version,
metrics, schema), `POST /predict` (one record or a list), `POST /feedback` (outcomes of
logged predictions, by request id), `/metrics` (Prometheus, with the latest monitor
figures), `/log/summary` (admin: the operations summary), the web console at `/ui`
(`console.py`) and the OpenAPI docs. Malformed input is answered 422 with a message that
names the field, never 500.

With a prediction log (`predlog`), every answered `/predict` is committed to it before
the answer is sent, under the request id the answer carries (body and `X-Request-ID`).

How a record request reaches the model, cheapest first: the body is parsed and checked
by one compiled pydantic call (`records.RecordCodec`); a small body goes through the
vertical's `predict_records` (no pandas), gathered with concurrent requests into one call
when micro-batching is on (`batching.MicroBatcher`); a big body goes whole to a process of
its own, on the table path (`offload.Offload`), so it never stalls the small ones.

A server can follow a model version (`follow`: the registry's champion) and swap to the
version it names while it runs, without dropping a request (`hotswap`); every `/predict`
answer names the version that gave it, in its body and its `X-Model-Version` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from verticals.core.auth import ENV as TOKENS_ENV
from verticals.core.auth import Auth, Tokens, route_path
from verticals.core.bundle import Bundle, load_bundle
from verticals.core.config import ServeConfig
from verticals.core.console_mount import Caller, ConsoleMount, LazyConsole
from verticals.core.contract import FileVertical
from verticals.core.errors import UserError
from verticals.core.examples import EXAMPLES, warm_up
from verticals.core.feedback_route import add_feedback_route
from verticals.core.hotswap import Follow, Follower, Versions, reason
from verticals.core.limits import Limits, clip
from verticals.core.logs import get_logger
from verticals.core.monitor_gauges import MonitorGauges
from verticals.core.openapi import install as install_openapi
from verticals.core.ops_route import add_summary_route
from verticals.core.predlog import LOG_ENV, LogSettings, PredictionLog, settings_from_env
from verticals.core.records import BadRequest, describe_errors
from verticals.core.request_log import RequestLog
from verticals.core.routes import (
    ANSWERED_BY,
    FilePredict,
    ModelVersion,
    RecordPredict,
)
from verticals.core.runs import write_atomic

log = get_logger("serving")
BUNDLE_ENV = "VERTICALS_BUNDLE"  # read by `app_from_env` in each server worker process
SERVE_ENV = "VERTICALS_SERVE"  # the serve.* settings as JSON, for the worker processes
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # set for N > 1 workers: metrics add up
SERVED_ENV = "VERTICALS_SERVED_NOTE"  # workers note the version they swapped to here
FOLLOW_ENV = "VERTICALS_FOLLOW"  # what the worker processes follow: `Champion.to_env()`
# uvicorn gives a new worker 5 s to start (a SIGHUP's rolling restart gives up after that);
# loading and warming a model up can take longer, more so on busy cores
WORKER_READY_S = 300
Warm = Literal["now", "background", "startup"]
CLIENT_CLOSED = 499  # nginx's status for a client that closed the connection first


def create_app(
    bundle: Bundle | str | Path,
    warm: Warm = "now",
    options: ServeConfig | None = None,
    follow: Follow | None = None,
    prediction_log: PredictionLog | LogSettings | None = None,
) -> FastAPI:
    """A FastAPI app serving `bundle` (a loaded `Bundle` or a bundle folder).

    The model scores the bundle's example inputs once before `/ready` turns true: here and
    now (an error is raised); with `warm="background"` (one server process), in a thread
    started when the server starts, so `/health` answers and `/ready` says 503 meanwhile
    (and stays 503, naming the error, if the model cannot score its examples); with
    `warm="startup"` (each of several worker processes), before the process accepts any
    request, so traffic only reaches warm workers. `options` are the `serve.*` settings.

    `follow` (a `model_versions.Champion`, or any callable that returns a bundle folder or None)
    is asked every `options.reload_seconds` and on SIGHUP while the server runs; when it
    names another bundle, that one is loaded, warmed up and swapped in without dropping a
    request (`hotswap`). `app.state.reload()` asks at once (an awaitable: True if swapped).

    `prediction_log` (a `PredictionLog`, or the settings of one) records every answered `/predict`
    before it is sent, and takes `/feedback`; without it nothing is logged and `/feedback`
    answers 503.
    """
    options = options or ServeConfig()
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle, trust=options)  # the signature before the model loads
    vertical = bundle.vertical
    plog = (
        PredictionLog(prediction_log) if isinstance(prediction_log, LogSettings) else prediction_log
    )
    journal = RequestLog(plog, vertical) if plog is not None else None

    registry = CollectorRegistry()
    requests = Counter("verticals_requests", "HTTP requests", ["path", "status"], registry=registry)
    latency = Histogram("verticals_request_seconds", "Request latency", ["path"], registry=registry)
    scored = Counter(
        "verticals_predictions", "Records scored, by model version", ["model_version"],
        registry=registry,
    )  # fmt: skip
    batch_sizes = Histogram(
        "verticals_batch_inputs",
        "Inputs per model call of the micro-batcher",
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        registry=registry,
    )
    reloads = Counter(
        "verticals_model_reloads", "New model versions swapped in, or that failed to load",
        ["outcome"], registry=registry,
    )  # fmt: skip
    exposition = _exposition_registry(registry)
    if plog is not None:  # the latest `verticals monitor` figures, read from the log
        gauges = MonitorGauges(plog, vertical.name)
        registry.register(gauges)
        if exposition is not registry:
            exposition.register(gauges)

    kind: type[ModelVersion] = FilePredict if isinstance(vertical, FileVertical) else RecordPredict
    first = kind(bundle, scored, options, batch_sizes)
    state = ServingState(model_version=first.version)

    def warm_version(route: ModelVersion) -> None:
        """Score the bundle's examples, then let the route settle its paths (fast path,
        event loop or threads, micro-batching)."""
        seconds = warm_up(vertical, route.model, route.bundle.path / EXAMPLES)
        if seconds is None:
            log.info("%s: no example inputs in %s; no warm-up", vertical.name, route.version)
        else:
            log.info("%s: %s warmed up on its examples in %.2f s", vertical.name, route.version,
                     seconds)  # fmt: skip
        route.warm()

    def warm_now() -> None:
        state.phase = "warming up"
        warm_version(versions.current)  # the first version (not swapped before it is warm)
        if warm != "now":  # a server: the model and libraries stay for the process's life
            gc.freeze()  # gen-2 collections skip them: 120 ms pauses became 15 ms (traffic)
        state.ready, state.phase = True, "serving"

    def warm_in_background() -> None:
        try:
            warm_now()
        except Exception as exc:  # not ready, and /ready says why; the log has the traceback
            log.exception("%s: the model failed on the bundle's examples", vertical.name)
            state.phase = f"warm-up failed: {type(exc).__name__}: {str(exc)[:200]}"

    def prepare(path: Path) -> ModelVersion:
        """A new version from the bundle at `path`: verified, loaded and warm (in a thread;
        raises, and leaves nothing running, if it cannot be served)."""
        new = load_bundle(path, trust=options)
        if new.vertical.name != vertical.name:
            raise UserError(
                f"{path} is a {new.vertical.name} bundle; this server serves {vertical.name}"
            )
        route = kind(new, scored, options, batch_sizes)
        try:
            warm_version(route)
        except BaseException:
            route.close()
            raise
        return route

    def swapped(new: ModelVersion, old: ModelVersion) -> None:
        state.model_version = new.version
        if not state.ready:  # the first version never warmed up; this one did
            state.ready, state.phase = True, "serving"
        app.state.served = app.state.predict = new
        app.version, app.description = new.version, _description(new.bundle)
        app.openapi_schema = None  # the docs name the new version
        _remember_served(new.bundle.path)

    def retired(old: ModelVersion) -> None:
        if warm != "now":  # a server froze the old model: collect it, freeze the new one
            gc.unfreeze()
            gc.collect()
            gc.freeze()

    versions = Versions(first, on_swap=swapped, on_retired=retired)
    follower = (
        None
        if follow is None
        else Follower(follow, versions, prepare, reloads, options.reload_seconds)
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warming = None
        if warm == "background":
            warming = app.state.warm_up = asyncio.create_task(asyncio.to_thread(warm_in_background))
        elif warm == "startup":  # this worker takes no request until it is warm (or failed:
            await asyncio.to_thread(warm_in_background)  # then /ready says why, and 503)
        if follower is not None:
            follower.start(after=warming)
        try:
            yield
        finally:
            if console is not None:
                await console.close()
            if follower is not None:
                await follower.stop()
            await versions.close()
            if plog is not None:
                plog.close()

    async def reload() -> bool:
        """Ask `follow` now (as SIGHUP does) and swap if it names another bundle."""
        return False if follower is None else await follower.check(retry=True)

    app = FastAPI(
        lifespan=lifespan,
        title=f"Verticals: {vertical.title or vertical.name}",
        version=bundle.model_version,
        description=_description(bundle),
    )
    app.state.serving = state
    app.state.versions, app.state.follower, app.state.reload = versions, follower, reload
    app.state.served = app.state.predict = first  # the current version's route object
    tokens = Tokens(Path(options.tokens_file) if options.tokens_file else None,
                    os.environ.get(TOKENS_ENV))  # fmt: skip
    failures = Counter("verticals_auth_failures", "Requests refused for their token",
                       ["reason"], registry=registry)  # fmt: skip
    app.add_middleware(
        Limits, max_body_bytes=int(options.max_body_mb * 2**20), max_inflight=options.max_inflight
    )  # inside Auth: refusals cost no slot
    app.add_middleware(Auth, tokens=tokens, failures=failures)  # inside _Observe: counted
    console = None
    if options.console:  # outside Auth: the page carries the token in its actions (console.py)
        console = LazyConsole(lambda: _console(app, versions, options))
        app.add_middleware(ConsoleMount, console=console)
    app.add_middleware(
        _Observe, known=lambda: known, latency=latency, requests=requests,
        version=lambda: versions.current.header,
    )  # fmt: skip

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "loading or warming up"}},
    )
    def ready() -> Any:
        body = {"ready": state.ready, "model_version": state.model_version, "state": state.phase}
        return body if state.ready else JSONResponse(status_code=503, content=body)

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        served = versions.current
        checked = follower.checked if follower is not None else None
        return {
            "vertical": vertical.name,
            "model_version": served.version,
            "created": served.bundle.manifest.get("created"),
            "metrics": served.bundle.metrics,
            "versions": served.bundle.manifest.get("versions", {}),
            "schema": served.schema,
            "serving": {"batching": served.batching, "max_batch": options.max_batch,
                        "batch_wait_ms": options.batch_wait_ms,
                        "big_request_kib": options.big_request_kib},
            "authentication": tokens.describe()
            + (" (serve.allow_unauthenticated)" if options.allow_unauthenticated else ""),
            "follows": follower.follows if follower is not None else None,
            "reload_seconds": options.reload_seconds if follower is not None else None,
            "checked": checked.isoformat(timespec="seconds") if checked else None,
            "reload_error": follower.error if follower is not None else None,
            "prediction_log": None if plog is None else {
                "database": plog.settings.describe(), "inputs": plog.settings.inputs,
                "dropped": list(plog.settings.drop), "keep_files": plog.settings.keep_files,
            },
        }  # fmt: skip

    kind.add_route(app, versions, journal)  # type: ignore[arg-type]
    add_feedback_route(app, versions, plog)
    add_summary_route(app, versions, plog, follow)

    @app.get("/metrics", response_class=Response, responses=_METRICS_RESPONSE)
    def metrics() -> Response:
        return Response(generate_latest(exposition), media_type=CONTENT_TYPE_LATEST)

    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _refused)  # type: ignore[arg-type]
    install_openapi(app)

    known = {route.path for route in app.routes}  # type: ignore[attr-defined]
    if warm == "now":
        warm_now()
    return app


def _console(app: FastAPI, versions: Versions[Any], options: ServeConfig) -> Any:
    """The console app (Gradio imported here: only on the first visit of `/ui`)."""
    from verticals.core.console import Served, build

    return build(Served(Caller(app), versions, int(options.max_body_mb * 2**20)))


class Readiness(BaseModel):
    """`/ready`'s answer, 200 or 503 alike: a load balancer reads the status, a person
    the state."""

    ready: bool
    model_version: str
    state: str


_METRICS_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 422 for a query parameter or form FastAPI could not validate, in the shape of every
    other 422 (`{"message", "detail", "request_id"}`), not FastAPI's `{"detail"}`."""
    errors = list(exc.errors())
    body = BadRequest(describe_errors(errors), errors).body()
    body["request_id"] = _request_id(request)
    return JSONResponse(status_code=422, content=body)


async def _refused(request: Request, exc: HTTPException) -> JSONResponse:
    """FastAPI's and Starlette's own refusals in the shape of ours. A body they could not
    parse (a broken multipart form: their 400) is a malformed input, 422 like any other."""
    status = 422 if exc.status_code == 400 else exc.status_code
    message = f"the body could not be parsed: {exc.detail}" if status == 422 else str(exc.detail)
    body = {"message": clip(message), "detail": [], "request_id": _request_id(request)}
    return JSONResponse(status_code=status, content=body, headers=exc.headers)


def _request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def _description(bundle: Bundle) -> str:
    return f"Serving bundle `{bundle.path.name}` of the {bundle.vertical.name} vertical."


@dataclass
class ServingState:
    """What `/ready` reports: false while the first version loads and warms up (a swap to
    another version, warmed up before it takes a request, keeps it true)."""

    model_version: str
    ready: bool = False
    phase: str = "loading"


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id_of(given: str) -> str:
    """The client's `X-Request-ID` when it is a sane token, else a new id."""
    return given if _REQUEST_ID.fullmatch(given) else new_request_id()


def new_request_id() -> str:
    """32 hex digits that sort by time, as a UUIDv7's do: milliseconds since 1970, then 80
    random bits. In time order, the log's index of request ids grows at one end; random
    ids rewrote pages all over it on every batch (megabytes of WAL per second)."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


class _Observe:
    """Count every request by path and status (a crash too, as a 500 with its request id),
    time it, and give it an `X-Request-ID`; a `/predict` answer also gets `X-Model-Version`,
    the version that answered (the route says which), or the current one for a request
    refused before it reached a version. Plain ASGI: Starlette's `BaseHTTPMiddleware`
    costs a task and a stream per request, more than scoring a record does."""

    def __init__(
        self,
        app: ASGIApp,
        known: Callable[[], set[str]],
        latency: Histogram,
        requests: Counter,
        version: Callable[[], bytes],
    ) -> None:
        self.app, self.known, self.latency, self.requests = app, known, latency, requests
        self.version = version  # the current version's `X-Model-Version` value
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
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        versioned = route_path(scope) == "/predict"
        status, answered = 500, False

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                headers = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
                if versioned:
                    headers.append((b"x-model-version", state.get(ANSWERED_BY) or self.version()))
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
                headers = {"X-Request-ID": request_id}
                if versioned:
                    version = state.get(ANSWERED_BY) or self.version()
                    headers["X-Model-Version"] = version.decode("latin-1")
                await JSONResponse(
                    status_code=500,
                    content={"message": "internal error; the server log has the details",
                             "request_id": request_id},
                    headers=headers,
                )(scope, receive, send)  # fmt: skip
        finally:
            self._count(route_path(scope), status, time.perf_counter() - started)


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
    """App factory for multi-process servers (`uvicorn --factory`): the bundle folder from
    `VERTICALS_BUNDLE`, or, with `VERTICALS_FOLLOW`, the bundle the followed champion names
    now (`VERTICALS_BUNDLE` when it names none or that one cannot be served), followed from
    then on. Each worker warms up before it accepts a request."""
    path = _last_served() or os.environ.get(BUNDLE_ENV) or None
    follow = follow_from_env()
    settings = settings_from_env()
    own = LOG_ENV not in os.environ  # no parent migrated it (a bundle's serve.py, uvicorn)
    plog = None if settings is None else PredictionLog(settings, migrate_schema=own)
    options = options_from_env()
    if follow is None:
        if path is None:
            raise UserError(f"set {BUNDLE_ENV} to the bundle folder to serve")
        return create_app(path, warm="startup", options=options, prediction_log=plog)
    bundle = first_bundle(follow, path, trust=options)
    return create_app(bundle, warm="startup", options=options, follow=follow, prediction_log=plog)


def _remember_served(path: Path) -> None:
    """Note the version this worker swapped to, for a replacement worker's fallback."""
    note = os.environ.get(SERVED_ENV)
    if note:
        with contextlib.suppress(OSError):
            write_atomic(Path(note), str(path))


def _last_served() -> str | None:
    """The version the workers last swapped to: what a worker started by SIGHUP falls back
    to when the champion cannot be served (not the version the server started with)."""
    note = os.environ.get(SERVED_ENV)
    try:
        text = Path(note).read_text().strip() if note else ""
    except OSError:
        return None
    return text if text and Path(text).is_dir() else None


def follow_from_env() -> Follow | None:
    """The `model_versions.Champion` that `VERTICALS_FOLLOW` describes (None when unset).

    Imported here, not at the top: the tracking module brings MLflow (about 2 s) along.
    """
    given = os.environ.get(FOLLOW_ENV)
    if not given:
        return None
    from verticals.core.model_versions import Champion

    return Champion.from_env(given)


def first_bundle(
    follow: Follow, fallback: Bundle | str | Path | None, trust: ServeConfig | None = None
) -> Bundle | str | Path:
    """What a following server starts with: the bundle `follow` names now, loaded once
    here so the server does not warm up twice; `fallback` when it names none, or when
    asking or loading fails (logged: the server then follows from `fallback`)."""
    given = fallback.path if isinstance(fallback, Bundle) else fallback
    try:
        target = follow()
        if target is not None and (
            given is None or Path(target).resolve() != Path(given).resolve()
        ):
            return load_bundle(target, trust=trust)
    except Exception as exc:  # noqa: BLE001 - the registry may be down: serve the fallback
        if fallback is None:
            raise
        log.error("cannot start on the followed version (%s); serving %s", reason(exc), given)
        log.debug("asking the followed version failed", exc_info=True)
    if fallback is None:
        raise UserError(f"the followed version names no bundle yet; set {BUNDLE_ENV} too")
    return fallback


def run_server(
    bundle: Bundle,
    settings: ServeConfig,
    follow: Follow | None = None,
    prediction_log: LogSettings | None = None,
) -> None:
    """Serve `bundle` with uvicorn until stopped: in this process (`settings.workers` 1,
    warming up in the background) or in that many worker processes, each warm before it
    takes a request, whose `/metrics` add up.

    With `follow` (a `model_versions.Champion`), each process serves the version it names (from
    the start, `bundle` being the fallback) and asks again every `reload_seconds` and on
    SIGHUP to that process. SIGHUP to the parent of several workers replaces them one by
    one: uvicorn starts each replacement, which asks afresh and warms up, and stops the
    old worker only once the new one is ready.

    With `prediction_log`, every answer is in the log before it is sent; its schema is
    migrated here, once, before any worker starts.
    """
    import uvicorn

    # migrates the schema once; a database that cannot be reached stops the start here
    opened = None if prediction_log is None else PredictionLog(prediction_log)
    options = {"host": settings.host, "port": settings.port, "log_level": str(settings.log_level)}
    if settings.workers == 1:
        first = bundle if follow is None else first_bundle(follow, bundle, trust=settings)
        app = create_app(
            first, warm="background", options=settings, follow=follow, prediction_log=opened
        )
        uvicorn.run(app, **options)  # type: ignore[arg-type]
        return
    os.environ[LOG_ENV] = "off" if prediction_log is None else prediction_log.to_env()
    os.environ[BUNDLE_ENV] = str(bundle.path)
    os.environ[SERVE_ENV] = options_to_env(settings)
    os.environ.pop(FOLLOW_ENV, None)
    if follow is not None:
        to_env = getattr(follow, "to_env", None)
        if to_env is None:
            raise UserError(
                f"serve.workers={settings.workers} needs a follow its worker processes can "
                "rebuild (a model_versions.Champion); serve.workers=1 takes any"
            )
        os.environ[FOLLOW_ENV] = to_env()
    # Each worker process counts into files in one folder, and `/metrics` adds them up.
    own_dir = not os.environ.get(MULTIPROC_ENV)
    metrics_dir = os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="verticals-metrics-")
    for stale in Path(metrics_dir).glob("*.db"):  # an earlier server's counts must not add up
        stale.unlink()
    os.environ[MULTIPROC_ENV] = metrics_dir
    os.environ[SERVED_ENV] = str(Path(metrics_dir) / "served-version")
    Path(os.environ[SERVED_ENV]).unlink(missing_ok=True)  # an earlier server's note
    try:
        uvicorn.run(
            "verticals.core.serving:app_from_env",
            factory=True,
            workers=settings.workers,
            timeout_worker_healthcheck=WORKER_READY_S,
            **options,  # type: ignore[arg-type]
        )
    finally:
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
