"""Logging: one logger tree (`verticals`), echoed to the console and to a run's log file."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOGGER = "verticals"
_FORMAT = "[%(asctime)s %(levelname)s %(name)s] %(message)s"


def get_logger(name: str | None = None) -> logging.Logger:
    return logging.getLogger(LOGGER if name is None else f"{LOGGER}.{name}")


def ensure_console() -> None:
    """Log INFO to stderr when nothing (Hydra, a notebook) has configured logging."""
    log = get_logger()
    log.setLevel(logging.INFO)
    if not logging.getLogger().handlers and not log.handlers:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
        log.addHandler(handler)


class _Stderr(logging.StreamHandler):
    """A handler that writes to `sys.stderr` as it is when a record is logged, not as it
    was when the handler was made (a test's captured stream, closed since)."""

    @property  # type: ignore[override]
    def stream(self) -> object:
        import sys

        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


@contextmanager
def log_to_file(path: Path) -> Iterator[logging.Logger]:
    """Copy everything the `verticals` loggers say into `path` while the block runs."""
    ensure_console()
    log = get_logger()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(_FORMAT))
    log.addHandler(handler)
    try:
        yield log
    finally:
        log.removeHandler(handler)
        handler.close()
