"""A guard that refuses, and records, every DNS look-up and connection in this process."""

from __future__ import annotations

import socket
import traceback


class NoNetwork:
    """Fail any DNS look-up or connection made in this process while active."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def _refuse(self, what: str):
        def refuse(*args, **kwargs):
            caller = "".join(traceback.format_stack(limit=30)[:-1])
            self.attempts.append(f"{what}{args[:2]} from\n{caller}")
            raise OSError(f"network disabled in this test ({what})")

        return refuse

    def __enter__(self) -> NoNetwork:
        self._saved = (socket.getaddrinfo, socket.socket.connect, socket.create_connection)
        socket.getaddrinfo = self._refuse("getaddrinfo")  # type: ignore[assignment]
        socket.socket.connect = self._refuse("connect")  # type: ignore[method-assign]
        socket.create_connection = self._refuse("create_connection")  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        socket.getaddrinfo, socket.socket.connect, socket.create_connection = self._saved
