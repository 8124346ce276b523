"""Many writers, one transaction: the prediction log's group commit.

A server must not answer a prediction before it is in the log (a response that was sent is
a prediction that happened, even if the process is killed right after), yet one commit per
request would cost more than scoring a record. So requests put their row on a queue and
wait; one thread takes everything queued, inserts it in one transaction, commits, and wakes
every waiter at once. Under load each commit carries the rows of all the requests that
arrived while the last one was being written; alone, a request waits for one small commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from verticals.core.logs import get_logger

log = get_logger("predlog")
_STOP = object()
MAX_GROUP = 2000  # rows per transaction at most (a burst is written in a few)


class GroupWriter:
    """A thread that writes queued rows with `write(rows)`, many rows per call."""

    def __init__(
        self, write: Callable[[list[dict[str, Any]]], None], name: str = "predlog"
    ) -> None:
        self._write = write
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"{name}-writer", daemon=True)
        self._thread.start()
        self.groups = 0  # transactions committed (tests and benchmarks read it)

    async def put(self, row: dict[str, Any], timeout: float) -> None:
        """Queue `row` and return once its transaction committed; raise what the write
        raised, or `TimeoutError` after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((row, (loop, future)))
        async with asyncio.timeout(timeout):
            await future

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            group = [item]
            stop = False
            while len(group) < MAX_GROUP:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                group.append(more)
            error: BaseException | None = None
            try:
                self._write([row for row, _ in group])
                self.groups += 1
            except BaseException as exc:  # noqa: BLE001 - every waiter learns of it
                log.error("the prediction log could not write %d rows: %s", len(group), exc)
                error = exc
            _wake([waiter for _, waiter in group], error)
            if stop:
                return


def _wake(waiters: list[Any], error: BaseException | None) -> None:
    """Resolve every waiter: one call into each event loop, not one per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = defaultdict(list)
    for loop, future in waiters:
        by_loop[loop].append(future)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(_settle, futures, error)


def _settle(futures: list[asyncio.Future], error: BaseException | None) -> None:
    for future in futures:
        if future.done():  # timed out or cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
