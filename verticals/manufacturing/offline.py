"""ultralytics without a network: the one place that says how.

Factories are often air-gapped, so by default nothing downloads weights, fonts or packages
and nothing phones home. Everything ultralytics reads at import time is set here, before
the first import; every module of this vertical imports ultralytics through `ultralytics()`.

What ultralytics reaches for, and what stops it:
- DNS look-ups on import (its "online" probe): ``YOLO_OFFLINE=1``.
- ``Arial.ttf`` for plot labels, fetched on every train/val: matplotlib's DejaVuSans is
  copied under the names it looks for into a config folder the project owns.
- pip installs of missing exporters (onnx, onnxslim): ``YOLO_AUTOINSTALL=false``; they
  are declared dependencies of the manufacturing extra instead.
- ``settings.json`` is written on first import, with ``datasets_dir`` frozen to that
  run's working folder: ``YOLO_CONFIG_DIR`` points at our folder, and data.yaml files
  carry absolute paths.
- Telemetry (``sync``; the event queue itself, in case ultralytics was imported before
  these settings) and experiment-tracker callbacks: switched off. (Ultralytics Platform
  streaming only starts when a user sets ``ULTRALYTICS_API_KEY``: that is an opt-in.)
- Process-wide settings: its import sets ``OMP_NUM_THREADS=1`` and each of its calls sets
  torch's thread count; the process keeps its own (other verticals train after it in one
  process), and `process_state_kept` undoes what training changes.
- The AMP check on CUDA downloads a reference model: replaced by a check on the model
  being trained (see `_amp_check`).
- Official weights by name download on first use: the vertical builds from ``.yaml`` or
  loads a local file; a download only happens with ``model.download=true``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")
_OFF = ("sync", "hub", "clearml", "comet", "dvc", "mlflow", "neptune", "raytune", "wandb")


def config_dir() -> Path:
    """Where ultralytics keeps settings and fonts unless `YOLO_CONFIG_DIR` says otherwise: a
    folder of this suite in the user's cache (not ~/.config/Ultralytics, which another
    ultralytics install may have pointed at some old run's folder)."""
    return Path.home() / ".cache" / "verticals" / "ultralytics"


def _install_fonts(target_dir: Path) -> None:
    """matplotlib's DejaVuSans under the names ultralytics looks for in its config folder."""
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in _FONTS:
        target = target_dir / name
        if not target.exists():
            shutil.copyfile(source, target)


def ultralytics() -> ModuleType:
    """The `ultralytics` module, with the offline settings above in force.

    The environment is set before the first import; when something imported ultralytics
    earlier (a notebook, another library), the same switches are flipped on the loaded
    modules instead, so the order of imports cannot bring the network back."""
    import sys

    import torch  # first: ultralytics' import sets OMP_NUM_THREADS=1 for whatever loads later

    if "ultralytics" not in sys.modules:
        os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir()))
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_AUTOINSTALL", "false")
        omp = os.environ.get("OMP_NUM_THREADS")
        import ultralytics  # noqa: F401 - imported here to undo what its import sets

        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
    import ultralytics as module
    from ultralytics import utils
    from ultralytics.engine import trainer
    from ultralytics.utils import checks, events, torch_utils

    # Every ultralytics call on the CPU sets torch's process-wide thread count to its own
    # choice (cores - 1: one thread on two cores); keep the process's count instead.
    torch_utils.NUM_THREADS = torch.get_num_threads()

    _install_fonts(utils.USER_CONFIG_DIR)
    for loaded in (utils, checks, events):
        if getattr(loaded, "ONLINE", False):
            loaded.ONLINE = False  # type: ignore[attr-defined]
    events.events.enabled = False  # decided when ultralytics was imported; now off for good
    if getattr(checks, "AUTOINSTALL", False):
        checks.AUTOINSTALL = False  # type: ignore[attr-defined]
    wanted = {key: False for key in _OFF if key in utils.SETTINGS}
    if any(utils.SETTINGS.get(k) for k in wanted):
        utils.SETTINGS.update(wanted)
    trainer.check_amp = _amp_check  # the trainer's own name for it, imported at module load
    return module


def _amp_check(model: Any) -> bool:
    """ultralytics' AMP check without its download: one forward pass of the model being
    trained under fp16 autocast; AMP stays on when every output is finite (NaN or inf is
    how AMP fails on the GPUs ultralytics' own check exists for)."""
    import torch

    device = next(model.parameters()).device
    if device.type != "cuda":
        return False
    was_training = model.training
    model.eval()
    try:
        x = torch.rand(2, 3, 256, 256, device=device)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
            outputs = _tensors(model(x))
        ok = bool(outputs) and all(bool(torch.isfinite(t.float()).all()) for t in outputs)
    except RuntimeError:
        ok = False
    finally:
        model.train(was_training)
    return ok


def _tensors(output: Any) -> list[Any]:
    import torch

    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, list | tuple):
        return [t for item in output for t in _tensors(item)]
    return []


@contextmanager
def process_state_kept() -> Iterator[None]:
    """Undo what ultralytics' trainer changes for the whole process (torch threads and
    determinism, OpenMP/OpenCV threads, PYTHONHASHSEED, cuDNN flags): `verticals demo` and
    notebooks go on to train other verticals in the same process. (Its patches of
    `PIL.Image.open` and `torch.save` stay: they change nothing for other callers.)"""
    import cv2
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    cv_threads = cv2.getNumThreads()
    env = {
        k: os.environ.get(k)
        for k in ("OMP_NUM_THREADS", "PYTHONHASHSEED", "CUBLAS_WORKSPACE_CONFIG")
    }
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        cv2.setNumThreads(cv_threads)
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
