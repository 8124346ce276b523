"""Micro-batching: concurrent requests scored by one model call, then answered separately.

The way LitServe and Triton's dynamic batcher do it: the first waiting request opens a
batch; requests arriving within `wait_s` join it, up to `max_batch` inputs; the batch runs
in one thread while the next one gathers. A model that runs much faster per input on
batches (a network on a GPU) gets its throughput; one that does not only pays the wait,
which is why `serve.batching=auto` asks the vertical (`Vertical.batches_well`).

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


class MicroBatcher(Generic[Item, Answer]):
    """Gathers items from concurrent requests into calls of `run_batch(items) -> answers`."""

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
        self.observe = observe  # called with each model call's number of inputs
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.size = size
        self.batches = 0  # how many model calls served how many items: for /metrics, tests
        self.items = 0
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="microbatch", initializer=initializer
        )
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, item: Item) -> Answer:
        """The answer for `item`, once its batch has run (its own exception, if it failed)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new event loop (test clients make one)
            self._loop, self._pending, self._arrived = loop, deque(), asyncio.Event()
            self._task = loop.create_task(self._gather())
        future: asyncio.Future[Answer] = loop.create_future()
        self._pending.append(_Waiting(item, max(self.size(item), 1), future))
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
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(float("inf"))
            assert first is not None
            batch, total = [self._pending.popleft()], first.size
            deadline = loop.time() + self.wait_s
            while total < self.max_batch:
                waiting = await self._next(deadline)
                if waiting is None or total + waiting.size > self.max_batch:
                    break  # too big to join: it opens the next batch
                batch.append(self._pending.popleft())
                total += waiting.size
            batch = [w for w in batch if not w.future.done()]  # clients that went away
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[_Waiting[Item, Answer]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            answers = await loop.run_in_executor(
                self._executor, self.run_batch, [w.item for w in batch]
            )
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
        self.batches, self.items = self.batches + 1, self.items + len(batch)
        if self.observe is not None:
            self.observe(sum(w.size for w in batch))
        for waiting, answer in zip(batch, answers, strict=True):
            _settle(waiting.future, result=answer)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _settle(
    future: asyncio.Future[Any], result: Any = None, exception: BaseException | None = None
) -> None:
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
