"""Pick the compute device and precision once, in one place, for every vertical.

`auto` means CUDA when a GPU is visible, else CPU. The cheap checks run first so that a
CPU-only vertical (LightGBM) never pays torch's import cost on a machine without a GPU.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from verticals.core.errors import UserError

DeviceKind = Literal["cpu", "cuda"]
_DEVICES = ("auto", "cpu", "cuda")
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Device:
    """The resolved device: what a vertical actually runs on."""

    kind: DeviceKind
    name: str
    precision: str

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    def __str__(self) -> str:
        return f"{self.kind} ({self.name}, {self.precision})"


def _nvidia_present() -> bool:
    if Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/version").exists():
        return True
    return shutil.which("nvidia-smi") is not None


def _cuda_name() -> str | None:
    """Name of the first CUDA device, or None when there is none we can use."""
    if not _nvidia_present():
        return None
    if importlib.util.find_spec("torch") is not None:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    names = out.stdout.strip().splitlines()
    return names[0] if names else None


def _bf16_supported() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve_device(requested: str = "auto", precision: str = "auto") -> Device:
    """Turn `trainer.device` / `trainer.precision` into a concrete `Device`."""
    if requested not in _DEVICES:
        raise UserError(f"trainer.device={requested!r} is not one of {', '.join(_DEVICES)}")
    if precision not in _PRECISIONS:
        raise UserError(f"trainer.precision={precision!r} is not one of {', '.join(_PRECISIONS)}")
    cuda = _cuda_name() if requested in ("auto", "cuda") else None
    if requested == "cuda" and cuda is None:
        raise UserError(
            "trainer.device=cuda but no CUDA device is visible",
            hint="use trainer.device=auto or trainer.device=cpu",
        )
    if cuda is None:
        if precision == "fp16":
            raise UserError("trainer.precision=fp16 needs a CUDA device; use fp32 or bf16 on CPU")
        # bf16 on CPU is opt-in: torch autocasts it, and it pays on CPUs with AVX-512 BF16/AMX.
        return Device("cpu", "cpu", "bf16" if precision == "bf16" else "fp32")
    if precision == "auto":
        precision = "bf16" if _bf16_supported() else "fp16"
    return Device("cuda", cuda, precision)
