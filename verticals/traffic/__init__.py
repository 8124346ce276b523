"""Traffic: spatio-temporal speed forecasting on a road-sensor graph (Graph WaveNet, torch).

The vertical's class is `verticals.traffic.vertical.TrafficVertical` (the entry point);
importing this package stays cheap.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """`verticals.traffic.TrafficVertical`, the entry point of earlier installs, on use."""
    if name == "TrafficVertical":
        from verticals.traffic.vertical import TrafficVertical

        return TrafficVertical
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
