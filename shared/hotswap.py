"""Model versions in a running server: the one that answers, and the swap to another
without dropping or failing a request ("servers follow the champion").

A server holds one object per version it serves (`routes.RecordPredict` or `FilePredict`:
the bundle, its model, threads, micro-batcher and big-request process). A request takes the
current one when it starts and counts itself in its `active` until it is answered; a swap
points new requests at the new version at once (one assignment on the event loop, so no
request sees half of it) and closes the old one once the requests it took are answered:
each request finishes on the version that took it.

A `Follower` asks a `follow` callable which bundle folder to serve (the registry's
champion, or anything that returns a folder), every `serve.reload_seconds` and on SIGHUP.
When the answer is another folder, that bundle is loaded (every file's sha256 checked) and
warmed up off the event loop, then swapped in. One that fails is logged and counted, the
server keeps its version, and that folder is not tried again until the answer changes or a
SIGHUP asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import Counter

from verticals.core.bundle import Bundle
from verticals.core.errors import UserError
from verticals.core.logs import get_logger
from verticals.core.signing import enforce

log = get_logger("serving")
Follow = Callable[[], Path | None]  # the bundle folder to serve now; None: keep serving
RETIRE_CAP_S = 600.0  # a replaced version is closed by then, even if a request still runs
_DRAIN_POLL_S = 0.05


class Version(Protocol):
    """What a swap needs of a served version (`routes.RecordPredict`, `FilePredict`)."""

    bundle: Bundle
    version: str
    active: int  # requests it is answering now

    def close(self) -> None: ...


V = TypeVar("V", bound=Version)


class Versions(Generic[V]):
    """The version that takes new requests (`current`), and those retiring after a swap.

    `on_swap(new, old)` runs right after a swap (on the event loop); `on_retired(old)` once
    the old version has answered its last request and been closed.
    """

    def __init__(
        self,
        first: V,
        on_swap: Callable[[V, V], None] | None = None,
        on_retired: Callable[[V], None] | None = None,
        retire_cap_s: float = RETIRE_CAP_S,
    ) -> None:
        _enforce_signature(first)
        self.current = first
        self.on_swap, self.on_retired, self.retire_cap_s = on_swap, on_retired, retire_cap_s
        self._retiring: set[asyncio.Task[None]] = set()

    def swap(self, new: V) -> V:
        """Serve `new` from the next request on and retire the old version (returned):
        it is closed once it has answered the requests it took. Call on the event loop."""
        old, self.current = self.current, new
        if self.on_swap is not None:
            self.on_swap(new, old)
        task = asyncio.get_running_loop().create_task(self._retire(old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return old

    @property
    def retiring(self) -> int:
        """Replaced versions not closed yet (still answering requests they took)."""
        return len(self._retiring)

    async def _retire(self, old: V) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retire_cap_s
        try:
            while old.active and loop.time() < deadline:
                await asyncio.sleep(_DRAIN_POLL_S)
            if old.active:
                log.warning(
                    "%s: closing %s with %d requests still running on it after %.0f s",
                    old.bundle.vertical.name, old.version, old.active, self.retire_cap_s,
                )  # fmt: skip
        finally:  # cancelled at shutdown: closed all the same
            old.close()
        if self.on_retired is not None:
            self.on_retired(old)

    async def close(self) -> None:
        """At shutdown: close the retiring versions at once, and the current one."""
        retiring = list(self._retiring)
        for task in retiring:
            task.cancel()
        await asyncio.gather(*retiring, return_exceptions=True)
        self.current.close()


class Follower(Generic[V]):
    """Keeps `versions` on the bundle that `follow` names.

    `prepare(folder)` loads and warms up a new version (it runs in a thread; it raises if
    the bundle is damaged or fails on its examples). `every`: seconds between checks (None
    or 0: only on SIGHUP or `check`). `reloads` counts outcomes (label: swapped, failed).
    """

    def __init__(
        self,
        follow: Follow,
        versions: Versions[V],
        prepare: Callable[[Path], V],
        reloads: Counter,
        every: float | None,
    ) -> None:
        self.follow, self.versions, self.prepare = follow, versions, prepare
        self.every = every or None
        self.swapped, self.failed = reloads.labels("swapped"), reloads.labels("failed")
        self.checked: datetime | None = None  # when `follow` last answered (or failed)
        self.error: str | None = None  # why the last check could not swap, while it holds
        self._refused: Path | None = None  # a folder that failed: not retried on each tick
        self._follow_error: str | None = None  # logged once while `follow` keeps failing
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._after: asyncio.Future[Any] | None = None  # the first version's warm-up
        self._hangup = False

    @property
    def follows(self) -> str:
        """What is followed, in a word: `champion` for the registry's champion."""
        name = getattr(self.follow, "__name__", None) or type(self.follow).__name__
        return str(name).lower()

    @property
    def name(self) -> str:
        return self.versions.current.bundle.vertical.name

    def _locked(self) -> asyncio.Lock:
        """One check at a time (a SIGHUP during a tick waits for it), per event loop."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def check(self, retry: bool = False) -> bool:
        """Ask `follow` once and swap if it names another bundle; True when it swapped.
        `retry`: try a folder again even if it failed before (SIGHUP)."""
        async with self._locked():
            current = self.versions.current
            target = await self._ask()
            if target is None:
                return False
            if target == current.bundle.path:
                self._refused = self.error = None
                return False
            if target == self._refused and not retry:
                return False
            try:
                new = await asyncio.to_thread(self._prepare, target)
            except Exception as exc:  # noqa: BLE001 - any failure: keep serving, say why
                self._refused, self.error = target, reason(exc)
                self.failed.inc()
                log.error(
                    "%s: cannot serve %s (%s): %s; still serving %s",
                    self.name, target.name, target, self.error, current.version,
                )  # fmt: skip
                log.debug("%s: loading %s failed", self.name, target, exc_info=True)
                return False
            self._refused = self.error = None
            old = self.versions.swap(new)
            self.swapped.inc()
            log.info("%s: now serving %s (was %s)", self.name, new.version, old.version)
            return True

    def _prepare(self, target: Path) -> V:
        """`prepare`, once the bundle's signature is checked (`serve.require_signature`):
        an unsigned champion's model is never loaded."""
        enforce(target, getattr(self.versions.current, "options", None))
        return self.prepare(target)

    async def _ask(self) -> Path | None:
        """The resolved folder `follow` names now (None: none, or `follow` failed)."""
        try:
            given = await asyncio.to_thread(self.follow)
            target = None if given is None else Path(given).resolve()
        except Exception as exc:  # noqa: BLE001 - a registry that is down: ask again later
            why = reason(exc)
            if why != self._follow_error:  # once, not on every tick while it lasts
                self.failed.inc()
                log.error(
                    "%s: cannot ask %s which version to serve: %s; still serving %s",
                    self.name, self.follows, why, self.versions.current.version,
                )  # fmt: skip
                log.debug("%s: asking %s failed", self.name, self.follows, exc_info=True)
            self._follow_error = self.error = why
            return None
        finally:
            self.checked = datetime.now().astimezone()
        if self._follow_error is not None:
            log.info("%s: %s answers again", self.name, self.follows)
            self._follow_error = self.error = None
        return target

    def start(self, after: asyncio.Future[Any] | None = None) -> None:
        """Check every `every` seconds (the first after `after`, a warm-up, is done) and on
        SIGHUP (in the main thread of a process, where the platform has it)."""
        self._after = after
        if self.every:
            self._spawn(self._poll())
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP"):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGHUP, self._on_hangup)
                self._hangup = True

    def _on_hangup(self) -> None:
        log.info("%s: SIGHUP: asking %s which version to serve", self.name, self.follows)
        self._spawn(self._check_when_warm(retry=True))

    async def _poll(self) -> None:
        assert self.every is not None
        while True:
            await asyncio.sleep(self.every)
            await self._check_when_warm()

    async def _check_when_warm(self, retry: bool = False) -> None:
        """`check`, once the first version has warmed up (it must not be swapped out
        halfway); an error is logged, so the polling goes on."""
        if self._after is not None:
            await asyncio.wait([self._after])  # not `await`: cancelling us would cancel it
        try:
            await self.check(retry)
        except Exception:  # a bug here must not stop the following
            log.exception("%s: checking for a new version failed", self.name)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Stop checking (at shutdown): the SIGHUP handler goes, running checks end."""
        if self._hangup:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._hangup = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _enforce_signature(first: Version) -> None:
    """The first version served passes `serve.require_signature` too, whatever loaded it;
    closed (its threads) when refused."""
    try:
        enforce(first.bundle.path, getattr(first, "options", None))
    except BaseException:
        first.close()
        raise


def reason(exc: BaseException) -> str:
    """An exception as one short line: a `UserError`'s message, else its type and text."""
    text = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:500]
