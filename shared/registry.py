"""Find verticals through the `verticals.verticals` entry-point group.

Only entry-point metadata is read up front; a vertical's module (and its heavy libraries)
is imported when that vertical is asked for, which keeps `verticals --help` and
`verticals list` fast. So an entry point should name a module that the vertical's package
imports on its own (`verticals.finance.vertical:FinanceVertical`): that module may import
everything the vertical runs with at the top.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points

from verticals.core.contract import FileVertical, RecordVertical, Vertical
from verticals.core.errors import UserError

GROUP = "verticals.verticals"
_registered: dict[str, Vertical] = {}


def register(vertical: Vertical) -> None:
    """Make `vertical` available in this process without an entry point (tests, notebooks)."""
    _registered[vertical.name] = _checked(vertical, vertical.name)


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
    return _checked(_import(matches[0])(), name)


def _import(ep: EntryPoint) -> type[Vertical]:
    """The class `ep` names; a library the vertical needs but lacks is a one-line error."""
    try:
        return ep.load()
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if not missing or missing == ep.module.split(".")[0]:
            raise  # the vertical's own module is missing: a broken install, keep the trace
        dist = ep.dist.name if ep.dist is not None else None
        hint = f"verticals[{ep.name}]" if dist == "verticals" else dist
        how = f" (pip install '{hint}')" if hint else ""
        raise UserError(
            f"the {ep.name} vertical needs {missing!r}, which is not installed{how}"
        ) from exc


def _checked(vertical: object, name: str) -> Vertical:
    if not isinstance(vertical, RecordVertical | FileVertical):
        raise TypeError(
            f"vertical {name!r} is not a verticals.core.contract.RecordVertical or FileVertical"
        )
    return vertical
