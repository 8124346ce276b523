"""Finance: credit-default (PD) scoring with LightGBM, scorecard points and reason codes.

The vertical's class is `verticals.finance.vertical.FinanceVertical` (the entry point);
importing this package stays cheap.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """`verticals.finance.FinanceVertical`, the entry point of earlier installs, on use."""
    if name == "FinanceVertical":
        from verticals.finance.vertical import FinanceVertical

        return FinanceVertical
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
