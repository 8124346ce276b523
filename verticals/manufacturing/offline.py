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
- Telemetry (``sync``), hub and experiment-tracker callbacks: switched off in settings.
- The AMP check on CUDA downloads a reference model: replaced by a check on the model
  being trained (see `_amp_check`).
- Official weights by name (``yolo11n.pt``): the vertical builds from ``.yaml`` or loads a
  local file; a download only happens with ``model.download=true``.
"""

from __future__ import annotations

import os
import shutil
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

    if "ultralytics" not in sys.modules:
        os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir()))
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    import ultralytics as module
    from ultralytics import utils
    from ultralytics.engine import trainer
    from ultralytics.utils import checks, events

    _install_fonts(utils.USER_CONFIG_DIR)
    for loaded in (utils, checks, events):
        if getattr(loaded, "ONLINE", False):
            loaded.ONLINE = False  # type: ignore[attr-defined]
    if getattr(checks, "AUTOINSTALL", False):
        checks.AUTOINSTALL = False  # type: ignore[attr-defined]
    wanted = {key: False for key in _OFF if key in utils.SETTINGS}
    if any(utils.SETTINGS.get(k) for k in wanted):
        utils.SETTINGS.update(wanted)
    trainer.check_amp = _amp_check  # the trainer's own name for it, imported at module load
    return module


def _amp_check(model: Any) -> bool:
    """ultralytics' AMP check without its download: one forward pass of the model being
    trained, in float32 and under autocast; AMP stays on when both give finite, close
    outputs (the reference check compares detections of a downloaded model instead)."""
    import torch

    device = next(model.parameters()).device
    if device.type != "cuda":
        return False
    was_training = model.training
    model.eval()
    try:
        x = torch.rand(2, 3, 256, 256, device=device)
        with torch.no_grad():
            ref = _first_tensor(model(x)).float()
            with torch.autocast("cuda", dtype=torch.float16):
                half = _first_tensor(model(x)).float()
        scale = ref.abs().max().clamp(min=1.0)
        ok = bool(torch.isfinite(half).all() and ((ref - half).abs().max() / scale) < 0.05)
    except RuntimeError:
        ok = False
    finally:
        model.train(was_training)
    return ok


def _first_tensor(output: Any) -> Any:
    while isinstance(output, list | tuple):
        output = output[0]
    return output
