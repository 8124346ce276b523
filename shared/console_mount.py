"""How the console reaches the served app: mounted at `/ui`, built on the first visit, and
calling the app's own routes in process.

The console is a Gradio app mounted on a private FastAPI app, which this middleware hands
every `/ui` request to; Gradio is imported and the page built on the first such request
(seconds), so a server that nobody opens the console of starts and runs as before. The
page's own requests (its scripts, its event calls) pass no bearer token, since a browser
cannot send one: the token typed into the page travels with each action instead, and the
console sends it on to `/predict`, `/feedback` and `/log/summary` through `Caller`, in
process, so the one authentication, limit and prediction log apply to the page too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import httpx
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from verticals.core.auth import route_path
from verticals.core.logs import get_logger

log = get_logger("console")
CONSOLE_PATH = "/ui"
NO_GRADIO = (
    "this server was installed without its console: pip install 'verticals[console]' "
    "(Gradio), or serve.console=false"
)


def is_console(path: str) -> bool:
    return path == CONSOLE_PATH or path.startswith(CONSOLE_PATH + "/")


class LazyConsole:
    """Builds the console app once, on the first request for it, and closes it with the
    server (`close`)."""

    def __init__(self, build: Callable[[], ASGIApp]) -> None:
        self._build = build
        self._app: Any = None
        self._lock = asyncio.Lock()
        self._stack = contextlib.AsyncExitStack()

    async def app(self) -> Any:
        if self._app is None:
            async with self._lock:
                if self._app is None:
                    built: Any = await asyncio.to_thread(self._build)  # imports Gradio
                    # the Gradio app's own start-up (its queue, its event loop tasks)
                    await self._stack.enter_async_context(built.router.lifespan_context(built))
                    self._app = built
        return self._app

    async def close(self) -> None:
        await self._stack.aclose()


class ConsoleMount:
    """ASGI middleware: `/ui` requests to the console, the rest to the app."""

    def __init__(self, app: ASGIApp, console: LazyConsole) -> None:
        self.app, self.console = app, console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and is_console(route_path(scope)):
            try:
                console = await self.console.app()
            except ImportError as exc:  # installed without the console's extra
                log.warning("no console at %s: %s", CONSOLE_PATH, exc)
                if scope["type"] == "http":
                    await JSONResponse(status_code=404, content={"message": NO_GRADIO})(
                        scope, receive, send
                    )
                return
            await console(scope, receive, send)
            return
        await self.app(scope, receive, send)


class Caller:
    """The served app's routes, called in process with the token typed into the page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._client: httpx.AsyncClient | None = None

    async def call(
        self, method: str, path: str, token: str | None, **kwargs: Any
    ) -> httpx.Response:
        if self._client is None:  # created in the server's event loop, on first use
            transport = httpx.ASGITransport(app=self.app)  # type: ignore[arg-type]
            self._client = httpx.AsyncClient(
                transport=transport, base_url="http://console", timeout=None
            )
        token = (token or "").strip()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self._client.request(method, path, headers=headers, **kwargs)


def message_of(response: httpx.Response) -> str:
    """A refusal's message (our JSON errors say `message`), with its status."""
    try:
        body = response.json()
        text = body.get("message") or body.get("detail") or response.text
    except ValueError:
        text = response.text
    return f"{response.status_code}: {str(text)[:500]}"
