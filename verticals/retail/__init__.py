"""Retail: implicit-feedback product recommendation with `implicit` (ALS, BPR, LMF).

The vertical's class is `verticals.retail.vertical.RetailVertical` (the entry point);
importing this package stays cheap.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """`verticals.retail.RetailVertical`, the entry point of earlier installs, on use."""
    if name == "RetailVertical":
        from verticals.retail.vertical import RetailVertical

        return RetailVertical
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
