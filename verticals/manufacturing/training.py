"""Train a YOLO detector with ultralytics, from the vertical's config, offline.

`training.*` are ultralytics' train arguments under their own names; this module adds what
the suite decides (data, device, AMP, seed, where outputs go) and turns ultralytics'
argument errors into one-line messages.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from verticals.core.contract import RunContext, Splits
from verticals.core.errors import UserError
from verticals.manufacturing.model import DefectModel
from verticals.manufacturing.offline import process_state_kept, ultralytics

_OURS = ("data", "device", "amp", "seed", "project", "name", "exist_ok", "model", "resume",
         "pretrained", "deterministic")  # fmt: skip


def model_yaml(model: DictConfig) -> str:
    """The ultralytics model yaml to build: `model.cfg`, or `<arch><scale>.yaml`."""
    if model.cfg:
        path = Path(model.cfg).expanduser()
        if not path.is_file():
            raise UserError(f"model.cfg={model.cfg} is not a file")
        return str(path.resolve())
    return f"{model.arch}{model.scale}.yaml"


def build(model: DictConfig) -> Any:
    """A YOLO detector from its yaml, with local (or, opted in, official) weights loaded."""
    yolo_class = ultralytics().YOLO
    name = model_yaml(model)
    try:
        net = yolo_class(name, task="detect")
    except FileNotFoundError:
        raise UserError(
            f"model.arch={model.arch} model.scale={model.scale}: ultralytics has no {name}; "
            "try arch yolov8, yolo11 or yolo26 with scale n, s, m, l or x"
        ) from None
    if model.weights:
        weights = Path(model.weights).expanduser()
        if not weights.is_file() and not model.download:
            raise UserError(
                f"model.weights={model.weights} is not a local file",
                hint="give a path to a .pt file; to fetch official weights by name, "
                "add model.download=true (needs network access)",
            )
        net.load(str(weights) if weights.is_file() else str(model.weights))
    return net


def train_args(cfg: DictConfig, splits: Splits, ctx: RunContext) -> dict[str, Any]:
    """ultralytics train(**args): the user's `training.*` plus what the suite fixes."""
    # plain words, not enum members: ultralytics saves its arguments as YAML
    training = OmegaConf.to_container(cfg.training, resolve=True, enum_to_str=True)
    assert isinstance(training, dict)
    cpu_minutes = training.pop("cpu_minutes", None)
    extra = training.pop("extra") or {}
    clash = sorted(set(extra) & set(_OURS))
    if clash:
        raise UserError(f"training.extra sets {', '.join(clash)}, which the suite sets itself")
    args = {k: v for k, v in {**training, **extra}.items() if v is not None}
    args["imgsz"] = image_size(cfg)
    device = ctx.device
    if cpu_minutes and not device.is_cuda and not args.get("time"):
        args["time"] = float(cpu_minutes) / 60  # hours, ultralytics' unit
        ctx.log.info(
            "CPU: training capped at %g minutes or %d epochs, whichever comes first; set "
            "training.cpu_minutes=null for the full recipe",
            cpu_minutes,
            args["epochs"],
        )
    amp: bool | str = device.is_cuda and device.precision != "fp32"
    if amp and device.precision == "bf16":
        amp = "bf16"  # ultralytics' own bf16 autocast (no loss scaling)
    args.update(
        data=str(Path(splits.train.yaml).resolve()),
        device=_devices(ctx) if device.is_cuda else "cpu",
        amp=amp,
        seed=ctx.seed,
        deterministic=True,
        # absolute: ultralytics puts a relative project under its settings' runs_dir
        project=str(Path(ctx.run_dir).resolve()),
        name="train",
        exist_ok=True,
    )
    return args


def epochs_at_most(cap: int) -> Callable[[Any], None]:
    """An ultralytics callback that keeps a timed run to at most `cap` epochs.

    With `time` set, ultralytics re-plans the epochs after each one to fill the time, and
    may plan more than `training.epochs`; a cap should only ever shorten the recipe. This
    puts the plan back to `cap` and rebuilds the learning-rate schedule as ultralytics does
    after its own re-plan, so a fast machine trains exactly the configured epochs."""

    def on_fit_epoch_end(trainer: Any) -> None:
        if trainer.epochs > cap:
            trainer.epochs = trainer.args.epochs = cap
            trainer._setup_scheduler()
            trainer.scheduler.last_epoch = trainer.epoch

    return on_fit_epoch_end


def image_size(cfg: DictConfig) -> int:
    """`training.imgsz` (rounded up to YOLO's stride, 32, as ultralytics would), or the
    synthetic surfaces' size, or ultralytics' 640."""
    if cfg.training.imgsz:
        return -(-int(cfg.training.imgsz) // 32) * 32
    return int(cfg.data.image_size) if cfg.data.source == "synthetic" else 640


def check_args(args: dict[str, Any], log: Any) -> None:
    """ultralytics' own validation of the arguments, before any work starts."""
    from ultralytics.cfg import get_cfg

    try:
        get_cfg(overrides=args)
    except (SyntaxError, ValueError, TypeError) as exc:  # unknown key, wrong type or range
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        raise UserError(f"training: {lines[0] if lines else exc}") from None
    if args.get("optimizer", "auto") == "auto" and float(args.get("lr0", 0.01)) != 0.01:
        log.warning(
            "training.lr0=%s is ignored with training.optimizer=auto (ultralytics then picks "
            "the optimizer and its learning rate); set training.optimizer=SGD or AdamW",
            args["lr0"],
        )


def check_inspection(inspection: DictConfig, names: list[str]) -> None:
    """Per-class thresholds must name classes of the data (their ranges, and the runtime's
    name, InspectionConfig checks when the config is composed)."""
    for name in inspection.thresholds or {}:
        if name not in names:
            raise UserError(
                f"inspection.thresholds names {name!r}, which is not a class of the data "
                f"({', '.join(names)})"
            )


def fit(cfg: DictConfig, splits: Splits, ctx: RunContext) -> DefectModel:
    check_inspection(cfg.inspection, list(splits.train.names))
    args = train_args(cfg, splits, ctx)
    net = build(cfg.model)
    check_args(args, ctx.log)
    if args.get("time") and not cfg.training.time:  # the CPU cap, not the user's own budget
        net.add_callback("on_fit_epoch_end", epochs_at_most(int(args["epochs"])))
    ctx.log.info("ultralytics train: %s", ", ".join(f"{k}={v}" for k, v in sorted(args.items())))
    with process_state_kept():
        net.train(**args)
    out = ctx.run_dir / "train"
    if (out / "results.csv").is_file():
        shutil.copy2(out / "results.csv", ctx.run_dir / "history.csv")
    inspection = OmegaConf.to_container(cfg.inspection, resolve=True, enum_to_str=True)
    assert isinstance(inspection, dict)  # saved as JSON with the model: plain words
    best = out / "weights" / "best.pt"
    if not best.is_file():
        best = out / "weights" / "last.pt"
    return DefectModel(
        weights=best,
        names=list(splits.train.names),
        imgsz=args["imgsz"],
        inspection=inspection,
        device="cuda" if ctx.device.is_cuda else "cpu",
        onnx_simplify=bool(cfg.model.onnx_simplify),
    )


def _devices(ctx: RunContext) -> int | list[int]:
    """The GPU ultralytics trains on, or all of a node's (cluster=: ultralytics' own DDP
    over them, in the Ray task that holds them; Ray numbers them from 0 in the task)."""
    workers = getattr(ctx, "workers", None)
    given = (workers.params.get("devices") or []) if workers is not None else []
    return list(range(len(given))) if len(given) > 1 else 0
