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
import base64
import dataclasses
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import Body, FastAPI, File, Query, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from pydantic import BaseModel, create_model
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from verticals.core.batching import MicroBatcher
from verticals.core.bundle import Bundle, io_schema, load_bundle
from verticals.core.config import Batching, ServeConfig
from verticals.core.contract import FileOutput, FileVertical, RecordVertical
from verticals.core.errors import UserError
from verticals.core.examples import EXAMPLES, example_body, warm_up
from verticals.core.logs import get_logger
from verticals.core.offload import Offload
from verticals.core.records import BadRequest, RecordCodec

log = get_logger("serving")
BUNDLE_ENV = "VERTICALS_BUNDLE"  # read by `app_from_env` in each server worker process
SERVE_ENV = "VERTICALS_SERVE"  # the serve.* settings as JSON, for the worker processes
FEEDBACK_ENV = "VERTICALS_FEEDBACK_DIR"  # where /feedback writes (the bundle's image sets it)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # set for N > 1 workers: metrics add up
Warm = Literal["now", "background", "startup"]
# Work below this runs on the event loop: handing it to a thread and back costs about as
# much (~0.1-0.3 ms), and the GIL lets only one of them run at a time anyway.
INLINE_S = 0.001


def _unprocessable(message: str, errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    return JSONResponse(status_code=422, content=BadRequest(message, errors).body())


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

    batching = _batching(options, vertical, model)
    if isinstance(vertical, FileVertical):
        route = _FilePredict(bundle, scored, options, batching, batch_sizes)
    else:
        route = _RecordPredict(bundle, scored, options, batching, batch_sizes)
    state.batching = batching

    def warm_now() -> None:
        state.phase = "warming up"
        seconds = warm_up(vertical, model, bundle.path / EXAMPLES)
        if seconds is None:
            log.info("%s: no example inputs in the bundle; no warm-up", vertical.name)
        else:
            log.info("%s: warmed up on the bundle's examples in %.2f s", vertical.name, seconds)
        route.warm()
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
        elif warm == "startup":  # this worker takes no request until it is warm
            await asyncio.to_thread(warm_now)
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
            "serving": {"batching": batching, "max_batch": options.max_batch,
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
                return _unprocessable(f"feedback[{i}] holds NaN or Infinity; send null instead")
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
    batching: bool = False


def _batching(options: ServeConfig, vertical: Any, model: Any) -> bool:
    """Whether to micro-batch: as set, or (auto) where the vertical's model gains from it."""
    if Batching(options.batching) is Batching.auto:
        return options.max_batch > 1 and bool(vertical.batches_well(model))
    return Batching(options.batching) is Batching.on and options.max_batch > 1


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
            path = scope["path"] if scope["path"] in self.known() else "other"
            self.latency.labels(path).observe(time.perf_counter() - started)
            self.requests.labels(path, str(status)).inc()


def _exposition_registry(own: CollectorRegistry) -> CollectorRegistry:
    """The registry `/metrics` reads: this process's, or, when several server processes
    share `PROMETHEUS_MULTIPROC_DIR`, one that adds up every process's files."""
    if not os.environ.get(MULTIPROC_ENV):
        return own
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)
    return combined


class _RecordPredict:
    """`POST /predict` for record verticals: one JSON record or a list of them."""

    def __init__(
        self,
        bundle: Bundle,
        scored: Counter,
        options: ServeConfig,
        batching: bool,
        batch_sizes: Histogram,
    ) -> None:
        vertical, model = bundle.vertical, bundle.model
        assert isinstance(vertical, RecordVertical)
        self.bundle, self.vertical, self.model, self.scored = bundle, vertical, model, scored
        self.codec = RecordCodec.of(vertical, model)
        self.fast = vertical.predict_records  # checked against the table path in `warm`
        self.inline = False  # set in `warm`: one request takes less than a thread hop
        self.inline_records = 0  # ... of this many records
        self.batcher: MicroBatcher[list[dict], list[dict]] | None = None
        self.pool = ModelThreads(options.model_threads)
        if batching:
            self.batcher = MicroBatcher(
                self._score_batch, options.max_batch, options.batch_wait_ms / 1000, size=len,
                observe=batch_sizes.observe, initializer=self.pool.initializer,
            )  # fmt: skip
        kib = options.big_request_kib
        self.big_bytes = None if kib is None else kib * 1024
        served = (vertical, model, self.codec, bundle.model_version)
        self.offload = None if kib is None else Offload(bundle.path, served)

    def _score_batch(self, requests: list[list[dict]]) -> list[list[dict]]:
        return self.fast(self.model, requests)

    def warm(self) -> None:
        """Score the examples through the fast path too, and serve the table path if the
        two disagree (a vertical's bug must not change answers)."""
        own = type(self.vertical).predict_records is not RecordVertical.predict_records
        body = example_body(self.bundle.path / EXAMPLES) if own else None
        if body is not None:
            records = self.codec.parse(body)
            fast = self.fast(self.model, [records])[0]
            table = RecordVertical.predict_records(self.vertical, self.model, [records])[0]
            if fast != table:
                log.warning(
                    "%s: predict_records differs from predict on the bundle's examples; "
                    "serving through predict (slower)", self.vertical.name
                )  # fmt: skip
                self.fast = RecordVertical.predict_records.__get__(self.vertical)
            one = _first_request(records, self.vertical.group_column)
            self.inline = _seconds(lambda: self.fast(self.model, [one])) < INLINE_S
            self.inline_records = len(one)
            log.info(
                "%s: small requests are scored %s", self.vertical.name,
                "on the event loop" if self.inline else "in threads",
            )  # fmt: skip

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        if self.offload is not None:
            self.offload.close()
        self.pool.close()

    async def answer(self, body: bytes) -> tuple[int, bytes, int]:
        """(status, JSON answer, records scored) for a request body."""
        if self.offload is not None and self.big_bytes is not None and len(body) > self.big_bytes:
            return await self.offload.answer(body)
        try:
            records = self.codec.parse(body)  # microseconds per record: on the event loop
            if self.batcher is not None:
                rows = await self.batcher.submit(records)
            elif self.inline and len(records) <= self.inline_records:
                rows = self.fast(self.model, [records])[0]
            else:  # off the event loop: requests overlap, and torch releases the GIL
                rows = (await self.pool.run(self.fast, self.model, [records]))[0]
        except BadRequest as exc:
            return 422, json.dumps(exc.body()).encode(), 0
        except UserError as exc:
            return 422, json.dumps(BadRequest(exc.message).body()).encode(), 0
        return 200, self.codec.encode(self.bundle.model_version, rows), len(records)

    def add_to(self, app: FastAPI) -> None:
        single = self.codec.record_schema.model_json_schema()  # type: ignore[attr-defined]
        body_schema = {"anyOf": [single, {"type": "array", "items": single}]}

        @app.post(
            "/predict",
            response_model=self.codec.output_schema,
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body_schema}},
                }
            },
        )
        async def predict(request: Request) -> Response:
            status, content, count = await self.answer(await request.body())
            if count:
                self.scored.inc(count)
            return Response(content, status_code=status, media_type="application/json")


class ModelThreads:
    """The threads that run the model for requests, each limited to `threads` OpenMP/BLAS
    threads (threadpoolctl): a server's concurrency comes from its requests and workers.

    Measured on 2 cores: a traffic forecast that takes 4.5 ms on the main thread took 10 ms
    on any other thread with torch's 2 OpenMP threads, and 3.5 ms with 1; a medical volume
    119 ms vs 112 ms. Small LightGBM calls already pass `num_threads=1`.
    """

    def __init__(self, threads: int | None, workers: int = 4) -> None:
        self.threads = threads
        self.initializer = self._limit if threads else None
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="predict", initializer=self.initializer
        )

    def _limit(self) -> None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=self.threads)  # OpenMP: this thread; BLAS: the process

    async def run(self, work: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, work, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _first_request(records: list[dict[str, Any]], group: str | None) -> list[dict[str, Any]]:
    """One request as a client sends it: a record, or every record of the first group (a
    traffic window is all its readings)."""
    if group is None:
        return records[:1]
    return [r for r in records if r.get(group) == records[0].get(group)]


def _seconds(work: Callable[[], Any], repeats: int = 5) -> float:
    """The fastest of a few runs of `work`: what it costs when nothing else is running."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


class OutputFile(BaseModel):
    name: str
    media_type: str
    base64: str


class _FilePredict:
    """`POST /predict` for file verticals: a multipart upload in; the summary and the output
    file (base64 in JSON, or the raw file with `?format=file`) out."""

    def __init__(
        self,
        bundle: Bundle,
        scored: Counter,
        options: ServeConfig,
        batching: bool,
        batch_sizes: Histogram,
    ) -> None:
        vertical = bundle.vertical
        assert isinstance(vertical, FileVertical)
        self.bundle, self.vertical, self.model, self.scored = bundle, vertical, bundle.model, scored
        self.batcher: MicroBatcher[tuple[str, bytes], FileOutput] | None = None
        self.pool = ModelThreads(options.model_threads)
        if batching:
            self.batcher = MicroBatcher(
                self._run, options.max_batch, options.batch_wait_ms / 1000,
                observe=batch_sizes.observe, initializer=self.pool.initializer,
            )  # fmt: skip

    def warm(self) -> None:
        """Nothing beyond the examples' `predict_path`: uploads take no other path."""

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        self.pool.close()

    def _run(self, uploads: list[tuple[str, bytes]]) -> list[FileOutput]:
        """Outputs for uploads, each written under its own name into a temporary folder."""
        with tempfile.TemporaryDirectory(prefix="verticals-upload-") as tmp:
            paths = []
            for i, (name, data) in enumerate(uploads):
                path = Path(tmp) / str(i) / name  # readers pick the format from the ending
                path.parent.mkdir()
                path.write_bytes(data)
                paths.append(path)
            try:
                return self.vertical.predict_paths(self.model, paths)
            except UserError as exc:  # the temporary folder means nothing to the client
                if len(paths) > 1:
                    raise  # the batcher retries each upload alone, with its own message
                raise UserError(exc.message.replace(str(paths[0]), uploads[0][0])) from None

    async def _predict(self, name: str, data: bytes) -> FileOutput:
        if self.batcher is not None:
            return await self.batcher.submit((name, data))
        return (await self.pool.run(self._run, [(name, data)]))[0]

    def add_to(self, app: FastAPI) -> None:
        vertical = self.vertical
        output = vertical.response_schema(self.model)
        endings = ", ".join(vertical.input_suffixes)
        response = create_model(
            "PredictResponse",
            model_version=(str, ...),
            input=(str, ...),
            prediction=(output, ...),
            output_file=(OutputFile | None, None),
        )
        version = self.bundle.model_version

        # Annotations are strings here (postponed evaluation): FastAPI resolves them against
        # the module's globals, so they must not name this function's locals.
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
                result = await self._predict(name, data)
            except UserError as exc:
                message = exc.message if name in exc.message else f"{name}: {exc.message}"
                return _unprocessable(message)
            summary = output.model_validate(result.summary).model_dump(mode="json", by_alias=True)
            self.scored.inc()
            out_name = f"{vertical.stem(Path(name))}{result.suffix}"
            if fmt == "file":
                ascii_name = out_name.encode("ascii", "replace").decode().replace('"', "_")
                headers = {  # RFC 6266: an ASCII fallback and the UTF-8 name
                    "Content-Disposition": f'attachment; filename="{ascii_name}"; '
                    f"filename*=UTF-8''{quote(out_name)}",
                    "X-Prediction": json.dumps(summary),
                }
                return Response(result.content, media_type=result.media_type, headers=headers)
            answer = {"model_version": version, "input": name, "prediction": summary}
            if fmt == "json":
                encoded = base64.b64encode(result.content).decode("ascii")
                answer["output_file"] = {
                    "name": out_name, "media_type": result.media_type, "base64": encoded
                }  # fmt: skip
            return answer


def options_from_env() -> ServeConfig:
    """The `serve.*` settings a worker process was started with (defaults when unset)."""
    given = os.environ.get(SERVE_ENV)
    return ServeConfig(**json.loads(given)) if given else ServeConfig()


def options_to_env(options: Any) -> str:
    """`serve.*` settings as the JSON `options_from_env` reads."""
    if dataclasses.is_dataclass(options):
        options = dataclasses.asdict(options)  # type: ignore[arg-type]
    return json.dumps({k: str(v) if hasattr(v, "value") else v for k, v in dict(options).items()})


def app_from_env() -> FastAPI:
    """App factory for multi-process servers (`uvicorn --factory`): bundle path from env;
    each worker warms up before it accepts a request."""
    path = os.environ.get(BUNDLE_ENV)
    if not path:
        raise UserError(f"set {BUNDLE_ENV} to the bundle folder to serve")
    return create_app(path, warm="startup", options=options_from_env())
