"""Manufacturing: visual defect detection with ultralytics YOLO, image in, pass/fail out.

The vertical's class is `verticals.manufacturing.vertical.ManufacturingVertical` (the entry
point); importing this package stays cheap.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """`verticals.manufacturing.ManufacturingVertical`, the entry point of earlier installs."""
    if name == "ManufacturingVertical":
        from verticals.manufacturing.vertical import ManufacturingVertical

        return ManufacturingVertical
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
