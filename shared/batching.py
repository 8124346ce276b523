"""Micro-batching: concurrent requests scored by one model call, then answered separately.

The way LitServe and Triton's dynamic batcher do it: the first waiting request opens a
batch; requests arriving within `wait_s` of it join it, up to `max_batch` inputs; the batch
runs in one thread, and requests arriving meanwhile form the next one. A model that runs
much faster per input on batches (a network on a GPU) gets its throughput; one that does
not only pays the wait, which is why `serve.batching=auto` asks the vertical
(`Vertical.batches_well`).

If the batch call fails with a `UserError` (one bad input among good ones), each request
is retried alone, so only the bad one gets the error.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from verticals.core.errors import UserError

Item = TypeVar("Item")
Answer = TypeVar("Answer")


@dataclass
class _Waiting(Generic[Item, Answer]):
    item: Item
    size: int
    future: asyncio.Future[Answer] = field(repr=False)
    arrived: float = 0.0  # loop time: the batch it opens closes `wait_s` after this


class MicroBatcher(Generic[Item, Answer]):
    """Gathers items from concurrent requests into calls of `run_batch(items) -> answers`.

    `size(item)` is how many model inputs an item holds (a request of 3 records: 3; a
    traffic window of 360 readings: 1), so `max_batch` bounds what the model sees.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Item]], list[Answer]],
        max_batch: int,
        wait_s: float,
        size: Callable[[Item], int] = lambda item: 1,
        observe: Callable[[int], Any] | None = None,
        initializer: Callable[[], Any] | None = None,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.size = size
        self.observe = observe  # called with each model call's number of inputs
        self._initializer = initializer
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Answer:
        """The answer for `item`, once its batch has run (its own exception, if it failed)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new event loop (test clients make one)
            self._loop, self._pending, self._arrived = loop, deque(), asyncio.Event()
            self._task = None
        if self._task is None or self._task.done():  # (re)start the gatherer
            self._task = loop.create_task(self._gather())
        future: asyncio.Future[Answer] = loop.create_future()
        self._pending.append(_Waiting(item, max(self.size(item), 1), future, loop.time()))
        self._arrived.set()
        return await future

    async def _next(self, deadline: float) -> _Waiting[Item, Answer] | None:
        """The next waiting item, waiting until `deadline` at most."""
        loop = asyncio.get_running_loop()
        while not self._pending:
            self._arrived.clear()
            timeout = deadline - loop.time()
            if timeout <= 0:
                return None
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                return None
        return self._pending[0]

    async def _gather(self) -> None:
        """Form batches for ever: the first waiting item opens one, which closes when full
        or `wait_s` after that item arrived (items that queued while the previous batch ran
        join at once). Whatever goes wrong, each batch's futures are settled."""
        while True:
            first = await self._next(float("inf"))
            assert first is not None
            batch, total = [self._pending.popleft()], first.size
            deadline = first.arrived + self.wait_s
            while total < self.max_batch:
                waiting = await self._next(deadline)
                if waiting is None or total + waiting.size > self.max_batch:
                    break  # too big to join: it opens the next batch
                batch.append(self._pending.popleft())
                total += waiting.size
            batch = [w for w in batch if not w.future.done()]  # clients that went away
            try:
                if batch:
                    await self._run(batch)
            except BaseException as exc:  # noqa: BLE001 - no request may wait for ever
                for waiting in batch:
                    _settle(waiting.future, exception=exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise

    async def _call(self, items: list[Item]) -> list[Answer]:
        if self._executor is None:  # (again) after `close`: an app may be started twice
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="microbatch", initializer=self._initializer
            )
        loop = asyncio.get_running_loop()
        answers = await loop.run_in_executor(self._executor, self.run_batch, items)
        if len(answers) != len(items):
            raise RuntimeError(f"a batch of {len(items)} inputs got {len(answers)} answers")
        return answers

    async def _run(self, batch: list[_Waiting[Item, Answer]]) -> None:
        try:
            answers = await self._call([w.item for w in batch])
        except UserError as exc:
            if len(batch) > 1:  # one bad input among good ones: each alone, each its answer
                for waiting in batch:
                    await self._run([waiting])
            else:
                _settle(batch[0].future, exception=exc)
            return
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
            for waiting in batch:
                _settle(waiting.future, exception=exc)
            return
        if self.observe is not None:
            self.observe(sum(w.size for w in batch))
        for waiting, answer in zip(batch, answers, strict=True):
            _settle(waiting.future, result=answer)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _settle(
    future: asyncio.Future[Any], result: Any = None, exception: BaseException | None = None
) -> None:
    """Answer a waiting request, unless it is answered already or its client went away."""
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
