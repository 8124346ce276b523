"""Big record requests scored in a process of their own, so small ones never wait on them.

A 100,000-record body takes seconds to parse, validate, score and write back, and most of
that holds Python's interpreter lock: in a thread it would stall the event loop, and with
it `/health` and every single-record request, for the whole time. A child process with
its own copy of the model takes that work, on the table (pandas) path, which is the
fast one for big inputs. The child starts at the first big request (a few seconds: it
loads the bundle) and answers with the response bytes, so the server only moves bytes.
If it cannot start, big requests are answered in a thread of the server, as before.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from verticals.core.contract import RecordVertical
from verticals.core.errors import UserError
from verticals.core.logs import get_logger
from verticals.core.records import BadRequest, RecordCodec, unprocessable

log = get_logger("offload")
START_TIMEOUT_S = 300  # a child that has not loaded the model by then never will
CHECKED_ROWS = 1000  # a big answer's rows checked against the response schema (all: slow)
Served = tuple[RecordVertical, Any, RecordCodec, str]  # vertical, model, codec, version
_served: Served | None = None  # set in the child


class Offload:
    """One child process holding the bundle's model, for request bodies over a size."""

    def __init__(self, bundle_path: Path, served: Served) -> None:
        self.bundle_path = bundle_path
        self.served = served  # the server's own model: the fallback when no child starts
        self._pool: ProcessPoolExecutor | None = None
        self.pid: int | None = None  # the child's, once started
        self._failed = False
        self._starting: asyncio.Lock | None = None  # made on the serving loop, at first use

    def _start(self) -> None:
        """Start the child and load the model there (seconds; run off the event loop)."""
        pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),  # fork would copy threads
            initializer=_load,
            initargs=(str(self.bundle_path), os.getpid()),
        )
        try:  # returns once the child has loaded the model
            self.pid = pool.submit(os.getpid).result(timeout=START_TIMEOUT_S)
        except Exception:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        self._pool = pool

    async def answer(self, body: bytes, request_id: str | None = None) -> tuple[int, bytes, int]:
        """(200 or 422, the JSON answer, output rows) for a request `body`.

        Big requests wait for one child to start (under a lock: two at once would start
        two). A child that cannot start, or dies (out of memory on a huge body, killed),
        leaves this request and the next ones to a thread of the server until a new child
        starts at the following big request.
        """
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._pool is None and not self._failed:
                try:
                    await asyncio.to_thread(self._start)
                except Exception:  # noqa: BLE001 - serve anyway, in this process
                    log.exception("no process for big requests; they run in the server")
                    self._failed = True
        pool = self._pool
        if pool is not None:
            try:
                return await asyncio.wrap_future(pool.submit(answer_table, body, None, request_id))
            except BrokenProcessPool:
                log.error("the big-request process died; starting a new one at the next")
                pool.shutdown(wait=False, cancel_futures=True)
                if self._pool is pool:
                    self._pool = None
        return await asyncio.to_thread(answer_table, body, self.served, request_id)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _load(bundle_path: str, parent: int) -> None:
    from verticals.core.bundle import load_bundle

    global _served
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    bundle = load_bundle(bundle_path)
    assert isinstance(bundle.vertical, RecordVertical)
    codec = RecordCodec.of(bundle.vertical, bundle.model)
    _served = (bundle.vertical, bundle.model, codec, bundle.model_version)


def _exit_with(parent: int) -> None:
    """End this child when the server that started it is gone (killed, or stopped before
    it could shut the pool down): an orphan would hold a model's memory for ever."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def answer_table(
    body: bytes, served: Served | None = None, request_id: str | None = None
) -> tuple[int, bytes, int]:
    """A whole request through the table path: parse, one `predict`, the JSON answer."""
    served = served or _served
    assert served is not None, "the offload process has no model"
    vertical, model, codec, version = served
    try:
        records = codec.parse(body)
        rows = RecordVertical.predict_records(vertical, model, [records])[0]  # the table path
    except (BadRequest, UserError) as exc:
        return 422, unprocessable(exc), 0
    return 200, codec.encode(version, rows, sample=CHECKED_ROWS, request_id=request_id), len(rows)
