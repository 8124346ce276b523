"""`POST /predict`, the one route that differs by vertical kind: records or file uploads.

Both kinds share how a request reaches the model: in a thread of `ModelThreads`, or, when
micro-batching is on, through a `MicroBatcher` that scores concurrent requests in one
call. Whether to batch is settled at warm-up, where the vertical can time its model on the
thread it will serve from. Record routes add the fast path (`predict_records`, no pandas)
and send big bodies to a process of their own (`offload.Offload`).

One `RecordPredict` or `FilePredict` object is one model version with everything it
serves with. The route is registered once and answers each request with the version
current when the request starts (`hotswap.Versions`), so a server can swap versions
between two requests; the version's name goes into the `X-Model-Version` header.
"""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import FastAPI, File, Query, UploadFile
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, create_model
from starlette.requests import Request

from verticals.core.batching import MicroBatcher
from verticals.core.bundle import Bundle, io_schema
from verticals.core.config import Batching, ServeConfig
from verticals.core.contract import FileOutput, FileVertical, RecordVertical
from verticals.core.errors import UserError
from verticals.core.examples import EXAMPLES, example_body
from verticals.core.hotswap import Versions
from verticals.core.limits import (
    body_shape_problem,
    clip,
    is_json,
    name_problem,
    unsupported_media,
)
from verticals.core.logs import get_logger
from verticals.core.offload import Offload
from verticals.core.predlog import LogUnavailable
from verticals.core.records import BadRequest, RecordCodec, unprocessable
from verticals.core.request_log import RequestLog

log = get_logger("serving")
# Work below this runs on the event loop: handing it to a thread and back costs about as
# much (~0.1-0.3 ms), and the GIL lets only one of them run at a time anyway.
INLINE_S = 0.001
# The request's `scope["state"]` key under which a route leaves the `X-Model-Version`
# header's value of the version that answered (the server's middleware sends it).
ANSWERED_BY = "model_version_header"


class ModelThreads:
    """The threads that run the model for requests, each limited to `threads` OpenMP
    threads (threadpoolctl): a server's concurrency comes from its requests and workers.

    Measured on 2 cores: a traffic forecast that takes 4.5 ms on the main thread took 10 ms
    on any other thread with torch's 2 OpenMP threads, and 3.5 ms with 1; a medical volume
    119 ms vs 112 ms. Small LightGBM calls already pass `num_threads=1`. Four threads: a
    few requests overlap their I/O and GIL-free model calls; more only queue on the cores.
    """

    def __init__(self, threads: int | None, workers: int = 4) -> None:
        self.threads, self.workers = threads, workers
        self.initializer = self._limit if threads else None
        self._pool: ThreadPoolExecutor | None = None

    def _limit(self) -> None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=self.threads, user_api="openmp")  # this thread's ICV

    def executor(self) -> ThreadPoolExecutor:
        if self._pool is None:  # (again) after `close`: an app may be started twice
            self._pool = ThreadPoolExecutor(
                self.workers, thread_name_prefix="predict", initializer=self.initializer
            )
        return self._pool

    async def run(self, work: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor(), work, *args)

    @property
    def running(self) -> bool:
        """Whether the threads exist (made at first use, gone after `close`)."""
        return self._pool is not None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class ModelVersion:
    """One model version behind `/predict`, and what both kinds share: the model threads
    and the micro-batcher. `scored` counts records per version (label `model_version`);
    `active` counts the requests this version is answering, so a swap closes it only
    once they are answered."""

    def __init__(
        self, bundle: Bundle, scored: Counter, options: ServeConfig, batch_sizes: Histogram
    ) -> None:
        self.bundle, self.vertical, self.model = bundle, bundle.vertical, bundle.model
        self.version = bundle.model_version
        self.header = header_value(self.version)
        self.scored = scored.labels(self.version)  # labels() costs µs: once, not per request
        self.options, self.batch_sizes = options, batch_sizes
        self.active = 0
        self.pool = ModelThreads(options.model_threads)
        self.batcher: MicroBatcher[Any, Any] | None = None
        self._schema: dict[str, Any] | None = None

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON schemas of this version's requests and answers (for `/metadata`)."""
        if self._schema is None:
            self._schema = io_schema(self.vertical, self.model)
        return self._schema

    @property
    def batching(self) -> bool:
        return self.batcher is not None

    def warm(self) -> None:
        """Settle how requests reach the model (after the examples' warm-up)."""
        raise NotImplementedError

    @staticmethod
    def add_route(app: FastAPI, versions: Versions[Any], journal: RequestLog | None) -> None:
        """Register `POST /predict`, answered by `versions.current` of each request, each
        answer logged by `journal` (when the log is on) before it is sent."""
        raise NotImplementedError

    def start_batching(self, run_batch: Callable[[list[Any]], list[Any]], size: Any) -> None:
        """Micro-batch from now on, if `serve.batching` says so (auto: if the vertical says
        its model gains from it, asked on a model thread: where it will serve)."""
        wanted = Batching(self.options.batching)
        if self.options.max_batch < 2 or wanted is Batching.off:
            return
        if wanted is Batching.auto:
            try:
                gains = self.pool.executor().submit(self.vertical.batches_well, self.model)
                if not gains.result():
                    return
            except Exception:  # noqa: BLE001 - a failed measurement: serve one by one
                log.exception("%s: batches_well failed; no micro-batching", self.vertical.name)
                return
        self.batcher = MicroBatcher(
            run_batch, self.options.max_batch, self.options.batch_wait_ms / 1000, size=size,
            observe=self.batch_sizes.observe, initializer=self.pool.initializer,
        )  # fmt: skip
        log.info("%s: micro-batching up to %d inputs", self.vertical.name, self.options.max_batch)

    def close(self) -> None:
        """Release the threads (and the batcher's task): at shutdown, or once retired."""
        if self.batcher is not None:
            self.batcher.close()
            _stop_gathering(self.batcher)
        self.pool.close()


def _stop_gathering(batcher: MicroBatcher[Any, Any]) -> None:
    """Cancel the batcher's gathering task, which `MicroBatcher.close` leaves waiting: when
    the server stops, the event loop's end takes it, but a version retired by a swap on a
    live loop would keep it, and with it the model, for the process's life."""
    task = getattr(batcher, "_task", None)
    try:
        here = asyncio.get_running_loop()
    except RuntimeError:  # not on a loop (an app closed outside a server): nothing runs it
        return
    if task is not None and not task.done() and task.get_loop() is here:
        task.cancel()


def header_value(text: str) -> bytes:
    """`text` as an HTTP header value: printable ASCII as it is, anything else %-escaped."""
    printable = text.isascii() and text.isprintable()
    return (text if printable else quote(text, safe=" !#$&'()*+,-./:;=?@[]^_`{|}~")).encode()


class RecordPredict(ModelVersion):
    """`POST /predict` for record verticals: one JSON record or a list of them."""

    def __init__(
        self, bundle: Bundle, scored: Counter, options: ServeConfig, batch_sizes: Histogram
    ) -> None:
        super().__init__(bundle, scored, options, batch_sizes)
        vertical = self.vertical
        assert isinstance(vertical, RecordVertical)
        self.codec = RecordCodec.of(vertical, self.model)
        self.fast = vertical.predict_records  # checked against the table path in `warm`
        self.inline_bytes = 0  # set in `warm`: bodies this small score on the event loop
        self.big_bytes = None if options.big_request_kib is None else options.big_request_kib << 10
        served = (vertical, self.model, self.codec, bundle.model_version)
        self.offload = None if self.big_bytes is None else Offload(bundle.path, served)
        group = vertical.group_column
        #: model inputs in a request: records, or groups (a traffic window is 1 input)
        self.inputs: Callable[[list[dict]], int] = (
            len if group is None else (lambda records: len({r.get(group) for r in records}))
        )

    def warm(self) -> None:
        """Check the fast path against the table path on the bundle's examples (a vertical's
        bug must not change answers: if they differ, serve the table path), time one
        request to choose between event loop and thread, and settle micro-batching."""
        vertical = self.vertical
        assert isinstance(vertical, RecordVertical)
        own = type(vertical).predict_records is not RecordVertical.predict_records
        body = example_body(self.bundle.path / EXAMPLES) if own else None
        if body is not None:
            try:
                records = self.codec.parse(body)
                fast = self.fast(self.model, [records])[0]
                table = RecordVertical.predict_records(vertical, self.model, [records])[0]
                same = fast == table
            except (BadRequest, UserError) as exc:  # examples a client could not send
                log.warning("%s: examples do not check the fast path (%s)", vertical.name, exc)
                same, records = False, []
            if not same:
                log.warning(
                    "%s: predict_records and predict differ on the bundle's examples (or could "
                    "not be compared); serving through predict (slower)", vertical.name
                )  # fmt: skip
                self.fast = RecordVertical.predict_records.__get__(vertical)
            elif records:
                one = _first_request(records, vertical.group_column)
                if _seconds(lambda: self.fast(self.model, [one])) < INLINE_S:
                    self.inline_bytes = 2 * len(json.dumps(one, default=str))
        where = "on the event loop" if self.inline_bytes else "in threads"
        log.info("%s: small requests are scored %s", vertical.name, where)
        self.start_batching(self._score_batch, self.inputs)

    def _score_batch(self, requests: list[list[dict]]) -> list[list[dict]]:
        return self.fast(self.model, requests)

    def close(self) -> None:
        super().close()
        if self.offload is not None:
            self.offload.close()

    async def answer(
        self, body: bytes, request_id: str | None = None
    ) -> tuple[int, bytes, int, list[dict[str, Any]] | None]:
        """(status, JSON answer, output rows, the validated records) for a request body;
        records are None when another process parsed them (a big body)."""
        if self.offload is not None and self.big_bytes is not None and len(body) > self.big_bytes:
            return (*await self.offload.answer(body, request_id), None)
        records: list[dict[str, Any]] | None = None
        try:
            records = self.codec.parse(body)  # microseconds per record: on the event loop
            if self.batcher is not None:
                rows = await self.batcher.submit(records)
            elif len(body) <= self.inline_bytes:
                rows = self.fast(self.model, [records])[0]
            else:  # off the event loop: requests overlap, and torch releases the GIL
                rows = (await self.pool.run(self.fast, self.model, [records]))[0]
        except (BadRequest, UserError) as exc:
            return 422, unprocessable(exc), 0, None
        return 200, self.codec.encode(self.version, rows, request_id=request_id), len(rows), records

    @staticmethod
    def add_route(
        app: FastAPI, versions: Versions[RecordPredict], journal: RequestLog | None
    ) -> None:
        """`POST /predict`, answered by the version current when the body has arrived (the
        OpenAPI schema is the first version's)."""
        first = versions.current
        single = first.codec.record_schema.model_json_schema()  # type: ignore[attr-defined]
        body_schema = {"anyOf": [single, {"type": "array", "items": single}]}

        @app.post(
            "/predict",
            response_model=first.codec.output_schema,
            responses=_PREDICT_ERRORS,
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body_schema}},
                }
            },
        )
        async def predict(request: Request) -> Response:
            content_type = request.headers.get("content-type")
            if not is_json(content_type):
                return _refusal(415, unsupported_media(content_type))
            body = await request.body()
            refused = await _shape_refusal(body, versions.current.options.max_records)
            if refused is not None:
                return refused
            started = time.perf_counter()
            served = versions.current  # this request's version, whatever swaps meanwhile
            state = request.scope["state"]
            state[ANSWERED_BY] = served.header
            request_id = state.get("request_id")
            served.active += 1
            try:
                status, content, count, records = await served.answer(body, request_id)
            finally:
                served.active -= 1
            if status == 200 and journal is not None and request_id is not None:
                latency = (time.perf_counter() - started) * 1000
                inputs = served.inputs(records) if records else count
                try:
                    await journal.records(
                        served.version, request_id, records, body, content, inputs, latency
                    )
                except LogUnavailable as exc:
                    return log_unavailable(exc, request_id)
            if count:
                served.scored.inc(count)
            return Response(content, status_code=status, media_type="application/json")


async def _shape_refusal(body: bytes, max_records: int) -> JSONResponse | None:
    """A 422 for a body nested too deeply, a 413 for one with too many records, checked
    before any parser recurses into it."""
    problem = await body_shape_problem(body, max_records)
    return None if problem is None else _refusal(*problem)


def _refusal(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"message": message, "detail": []})


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


_PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"description": "the body is over serve.max_body_mb, or holds over serve.max_records"},
    415: {"description": "a JSON body not sent as Content-Type: application/json"},
    422: {"description": "a malformed input: the message names the record and field"},
    503: {"description": "the prediction log could not record the answer; nothing was answered"},
}


#: A file route reads a multipart form (anything else is a missing file: 422, not 415),
#: and `?format=file` answers with the output file itself, in its own media type.
_FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **{status: why for status, why in _PREDICT_ERRORS.items() if status != 415},
    200: {
        "description": "the summary and the output file in JSON; the file itself for format=file",
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
    },
}


def log_unavailable(exc: LogUnavailable, request_id: str) -> JSONResponse:
    """A 503 for a prediction the log could not take: an answer that is not in the log
    would break the promise that every sent prediction is."""
    body = {"message": f"{exc}; try again", "request_id": request_id}
    return JSONResponse(status_code=503, content=body, headers={"Retry-After": "5"})


class OutputFile(BaseModel):
    name: str
    media_type: str
    base64: str


def unprocessable_response(message: str) -> JSONResponse:
    """A 422 naming what is wrong, in the same shape as a bad record's."""
    return JSONResponse(status_code=422, content=BadRequest(clip(message)).body())


class FilePredict(ModelVersion):
    """`POST /predict` for file verticals: a multipart upload in; the summary and the output
    file (base64 in JSON, or the raw file with `?format=file`) out."""

    def __init__(
        self, bundle: Bundle, scored: Counter, options: ServeConfig, batch_sizes: Histogram
    ) -> None:
        super().__init__(bundle, scored, options, batch_sizes)
        vertical = self.vertical
        assert isinstance(vertical, FileVertical)
        self.output: type[BaseModel] = vertical.response_schema(self.model)  # this version's

    def warm(self) -> None:
        """The examples' `predict_path` ran already; settle micro-batching."""
        self.start_batching(self._run, lambda upload: 1)

    def _run(self, uploads: list[tuple[str, bytes]]) -> list[FileOutput]:
        """Outputs for uploads, each written under its own name into a temporary folder."""
        vertical = self.vertical
        assert isinstance(vertical, FileVertical)
        with tempfile.TemporaryDirectory(prefix="verticals-upload-") as tmp:
            paths = []
            for i, (name, data) in enumerate(uploads):
                path = Path(tmp) / str(i) / name  # readers pick the format from the ending
                path.parent.mkdir()
                path.write_bytes(data)
                paths.append(path)
            try:
                return vertical.predict_paths(self.model, paths)
            except UserError as exc:  # the temporary folder means nothing to the client
                if len(paths) > 1:
                    raise  # the batcher retries each upload alone, with its own message
                raise UserError(exc.message.replace(str(paths[0]), uploads[0][0])) from None

    async def predict_upload(self, name: str, data: bytes) -> FileOutput:
        if self.batcher is not None:
            return await self.batcher.submit((name, data))
        return (await self.pool.run(self._run, [(name, data)]))[0]

    @staticmethod
    def add_route(
        app: FastAPI, versions: Versions[FilePredict], journal: RequestLog | None
    ) -> None:
        """`POST /predict`, answered by the version current when the upload has arrived;
        each answer is checked against that version's own output schema (the OpenAPI
        schema is the first version's)."""
        vertical = versions.current.vertical
        assert isinstance(vertical, FileVertical)
        endings = ", ".join(vertical.input_suffixes)
        response = create_model(
            "PredictResponse",
            model_version=(str, ...),
            request_id=(str | None, None),
            input=(str, ...),
            prediction=(versions.current.output, ...),
            output_file=(OutputFile | None, None),
        )

        # Annotations are strings here (postponed evaluation): FastAPI resolves them against
        # the module's globals, so they must not name this function's locals.
        @app.post("/predict", response_model=response, responses=_FILE_RESPONSES)
        async def predict(
            request: Request,
            file: Annotated[UploadFile, File(description="one input file (endings: /metadata)")],
            fmt: Annotated[
                Literal["json", "summary", "file"],
                Query(
                    alias="format",
                    description="json: summary + base64 file; summary: no file; file: raw file",
                ),
            ] = "json",
        ) -> Any:
            name = file.filename or ""
            problem = name_problem(name)
            if problem is not None:
                return unprocessable_response(problem)
            if not vertical.accepts_name(name):
                return unprocessable_response(f"file {name!r} must end with one of: {endings}")
            data = await file.read()
            if not data:
                return unprocessable_response(f"file {name!r} is empty")
            started = time.perf_counter()
            served = versions.current  # this request's version, whatever swaps meanwhile
            state = request.scope["state"]
            state[ANSWERED_BY] = served.header
            request_id = state.get("request_id")
            served.active += 1  # before any await: a swap closes it only once this is done
            try:
                result = await served.predict_upload(name, data)
            except UserError as exc:
                message = str(exc) if name in exc.message else f"{name}: {exc}"
                return unprocessable_response(message)
            finally:
                served.active -= 1
            summary = served.output.model_validate(result.summary).model_dump(
                mode="json", by_alias=True
            )
            out_name = f"{vertical.stem(Path(name))}{result.suffix}"
            if journal is not None and request_id is not None:
                latency = (time.perf_counter() - started) * 1000
                try:
                    await journal.file(served.version, request_id, name, data, result, summary,
                                       out_name, latency)  # fmt: skip
                except LogUnavailable as exc:
                    return log_unavailable(exc, request_id)
            served.scored.inc()
            if fmt == "file":
                ascii_name = out_name.encode("ascii", "replace").decode().replace('"', "_")
                headers = {  # RFC 6266: an ASCII fallback and the UTF-8 name
                    "Content-Disposition": f'attachment; filename="{ascii_name}"; '
                    f"filename*=UTF-8''{quote(out_name)}",
                    "X-Prediction": json.dumps(summary),
                }
                return Response(result.content, media_type=result.media_type, headers=headers)
            answer: dict[str, Any] = {
                "model_version": served.version, "request_id": request_id, "input": name,
                "prediction": summary, "output_file": None,
            }  # fmt: skip
            if fmt == "json":
                encoded = base64.b64encode(result.content).decode("ascii")
                answer["output_file"] = {
                    "name": out_name, "media_type": result.media_type, "base64": encoded
                }  # fmt: skip
            # Sent as it is: FastAPI would check it against the first version's schema.
            return JSONResponse(answer)
