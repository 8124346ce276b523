"""Medical imaging: 3D segmentation of CT/MRI volumes with MONAI, served volume in, mask out.

The vertical's class is `verticals.medical.vertical.MedicalVertical` (the entry point);
importing this package stays cheap.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """`verticals.medical.MedicalVertical`, the entry point of earlier installs, on use."""
    if name == "MedicalVertical":
        from verticals.medical.vertical import MedicalVertical

        return MedicalVertical
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
