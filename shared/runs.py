"""Run directories: one folder per training run, and a stable pointer to the latest.

Layout of a run: `config.yaml` (resolved), `metrics.json`, `model/`, `plots/*.png`,
`model_card.md`, `train.log`. `<runs_dir>/<vertical>/LATEST` names the newest run and is
replaced atomically, so `evaluate`, `package` and `serve` work without a path.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from verticals.core.errors import UserError

LATEST = "LATEST"


def timestamp() -> str:
    """Folder names that sort by time and do not collide (to the microsecond)."""
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")


def new_run_dir(runs_dir: str | Path, vertical: str) -> Path:
    """A fresh, timestamped run directory under `<runs_dir>/<vertical>/`."""
    base = Path(runs_dir) / vertical
    stamp = timestamp()
    path = base / stamp
    n = 1
    while path.exists():
        path = base / f"{stamp}_{n}"
        n += 1
    path.mkdir(parents=True)
    return path


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write `content` to `path` so a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as fh:
            fh.write(content)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; runs and bundles are shared artefacts
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def mark_latest(target: Path, base: Path | None = None) -> None:
    """Point `base/LATEST` (default: the parent of `target`) at `target`."""
    base = target.parent if base is None else base
    write_atomic(base / LATEST, os.path.relpath(target.resolve(), base.resolve()) + "\n")


def latest(base: Path, what: str = "run") -> Path:
    """The directory that `base/LATEST` names; a clear error when there is none."""
    pointer = base / LATEST
    if not pointer.is_file():
        raise UserError(
            f"no {what} found under {base}/", hint=f"create one first, or pass {what}=PATH"
        )
    target = (base / pointer.read_text().strip()).resolve()
    if not target.is_dir():
        raise UserError(f"{pointer} points to {target}, which no longer exists")
    return target


def resolve_run(path: str | None, runs_dir: str | Path, vertical: str) -> Path:
    """An explicit run directory, or the latest run of `vertical`."""
    if path:
        run = Path(path)
        if (run / "manifest.json").is_file():
            raise UserError(f"run={path} is a bundle, not a run; give the run it was made from")
        if not (run / "config.yaml").is_file():
            raise UserError(f"run={path} is not a run directory (no config.yaml in it)")
        return run.resolve()
    return latest(Path(runs_dir) / vertical, "run")


def _clean(value: Any) -> Any:
    """JSON-safe metrics: NaN/inf become null instead of invalid JSON."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _clean(value.item())
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(_clean(data), indent=2, sort_keys=True) + "\n")


def save_figure(fig: Any, path: Path) -> Path:
    """Save a matplotlib figure as PNG; a pyplot-managed one is closed to free its memory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    if getattr(fig, "number", None) is not None:  # created through pyplot
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def run_of(spec: str) -> Path:
    """The run folder of a `training.resume` value (a run folder, or a checkpoint file in
    its `checkpoints/` folder)."""
    path = Path(spec).expanduser()
    return path if path.is_dir() else path.parent.parent


def resumed_config(cfg: Any, spec: str, keys: tuple[str, ...] = ("data", "model", "seed")) -> Any:
    """`cfg` with `keys` taken from the config.yaml of the run `spec` names, so a resumed
    run trains the same network on the same split; the rest (`training.*`) is `cfg`'s."""
    from omegaconf import OmegaConf

    if not Path(spec).expanduser().exists():
        raise UserError(f"training.resume={spec} does not exist (give a run folder)")
    saved_path = run_of(spec) / "config.yaml"
    if not saved_path.is_file():
        raise UserError(f"training.resume={spec}: {saved_path} is missing")
    saved = OmegaConf.load(saved_path)
    merged = cfg.copy()
    for key in keys:
        merged[key] = saved[key]
    return merged


def resume_training(cfg: Any) -> Any:
    """`cfg` as a training run with `training.resume=<run>` really uses it: that run's data,
    split seed and network, and this command's `training.*` (more epochs, a budget). The
    `Vertical.resolve_config` of every vertical that resumes (medical, traffic)."""
    spec = cfg.get("training", {}).get("resume")
    return resumed_config(cfg, str(spec)) if spec else cfg
