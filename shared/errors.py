"""The one exception type that means "the user asked for something we cannot do".

The CLI prints a `UserError` as one line and exits 2; anything else is a bug and keeps its
traceback. Messages name the file, column or key and say what was expected.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or a bad setting, explained in one line."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")
