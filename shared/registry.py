"""Find verticals through the `verticals.verticals` entry-point group.

Only entry-point metadata is read up front; a vertical's module (and its heavy libraries)
is imported when that vertical is asked for, which keeps `verticals --help` fast.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from verticals.core.contract import Vertical
from verticals.core.errors import UserError

GROUP = "verticals.verticals"
_registered: dict[str, Vertical] = {}


def register(vertical: Vertical) -> None:
    """Make `vertical` available in this process without an entry point (tests, notebooks)."""
    _registered[vertical.name] = vertical


def available() -> list[str]:
    """Names of every installed vertical, sorted."""
    return sorted({ep.name for ep in entry_points(group=GROUP)} | _registered.keys())


def distribution(name: str) -> str:
    """The installed distribution that provides vertical `name` (what a bundle pins)."""
    for ep in entry_points(group=GROUP):
        if ep.name == name and ep.dist is not None:
            return ep.dist.name
    return "verticals"


def get(name: str) -> Vertical:
    """The vertical called `name`, instantiated once per process."""
    if name in _registered:
        return _registered[name]
    return _load(name)


@cache
def _load(name: str) -> Vertical:
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not matches:
        names = ", ".join(available()) or "none installed"
        raise UserError(f"unknown vertical {name!r}; expected one of: {names}")
    vertical = matches[0].load()()
    if not isinstance(vertical, Vertical):
        raise TypeError(f"entry point {name!r} does not give a verticals.core.contract.Vertical")
    return vertical
