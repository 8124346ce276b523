"""Training: cached MONAI datasets, Dice+CE, AdamW with warmup + cosine, mixed precision on
CUDA, sliding-window validation, best/last checkpoints, resume, and an optional time budget."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from verticals.core.config import require_int
from verticals.core.contract import RunContext, Splits
from verticals.core.errors import UserError
from verticals.core.runs import resumed_config
from verticals.medical import networks
from verticals.medical.metrics import dice_per_label
from verticals.medical.model import MedicalModel, autocast, infer
from verticals.medical.transforms import (
    IMAGE,
    LABEL,
    augmentation,
    indexing,
    plan_roi,
    preprocessing,
)


def recipe(cfg: DictConfig, info: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing the model keeps: `intensity=auto` resolved from the modality."""
    data = cfg.data
    intensity = data.intensity
    if intensity == "auto":
        intensity = "window" if info.get("is_ct") else "zscore"
    if intensity not in ("window", "zscore"):
        raise UserError(f"data.intensity={intensity!r} is not one of auto, window, zscore")
    if len(data.window) != 2 or data.window[0] >= data.window[1]:
        raise UserError(f"data.window={list(data.window)} must be [low, high] with low < high")
    if data.spacing is not None and (len(data.spacing) != 3 or min(data.spacing) <= 0):
        raise UserError(f"data.spacing={list(data.spacing)} must be three positive sizes in mm")
    return {
        "orientation": str(data.orientation),
        "spacing": [float(s) for s in data.spacing] if data.spacing else None,
        "intensity": intensity,
        "window": [float(w) for w in data.window],
        "crop_foreground": bool(data.crop_foreground),
    }


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def datasets(
    cfg: DictConfig,
    splits: Splits,
    prep: dict[str, Any],
    divisor: int,
    log: Any,
    roi: list[int] | None = None,
    minimum: int = 16,
    seed: int = 0,
) -> tuple[Any, Any, list[int]]:
    """(train dataset, validation dataset, patch size), cached as `data.cache` says.

    The patch size is `roi`, else `data.roi_size`, else planned from the preprocessed shapes.
    """
    from monai.data import CacheDataset, Dataset, PersistentDataset
    from monai.transforms import Compose

    data = cfg.data
    if data.cache not in ("memory", "disk", "none"):
        raise UserError(f"data.cache={data.cache!r} is not one of memory, disk, none")
    workers = max(1, int(data.num_workers))
    pre = preprocessing(prep)
    if data.cache == "memory":
        staged = CacheDataset(splits.train, Compose(pre), num_workers=workers, progress=False)
        source, head = [staged[i] for i in range(len(staged))], []
        shapes = [tuple(d[IMAGE].shape) for d in source]
        del staged
    else:
        source, head = splits.train, pre
        planned = roi or data.roi_size
        shapes = [] if planned else [tuple(Compose(pre)(d)[IMAGE].shape) for d in source]
    given = roi or data.roi_size
    roi = [int(r) for r in given] if given else plan_roi(shapes, divisor, data.roi_max, minimum)
    if len(roi) != 3 or any(r % divisor for r in roi) or min(roi) < minimum:
        raise UserError(
            f"data.roi_size={roi}: give three sizes, each a multiple of {divisor} and at least "
            f"{minimum} for model.name={cfg.model.name}"
        )
    flips = [0] if data.augment else []
    chain = Compose(
        head
        + indexing(roi)
        + augmentation(
            roi,
            int(data.samples_per_volume),
            float(data.pos_fraction),
            flips,
            bool(data.augment),
            float(data.affine_prob),
        )
    )
    chain.set_random_state(seed)  # MONAI's random transforms draw from their own generators
    val_chain = Compose(pre)
    if data.cache == "memory":
        train = CacheDataset(source, chain, num_workers=workers, progress=False)
        val = CacheDataset(splits.val, val_chain, num_workers=workers, progress=False)
    elif data.cache == "disk":
        root = Path(cfg.paths.cache_dir) / "medical" / f"persistent-{_key(prep, roi)}"
        train = PersistentDataset(source, chain, cache_dir=root / "train")
        val = PersistentDataset(splits.val, val_chain, cache_dir=root / "val")
    else:
        train, val = Dataset(source, chain), Dataset(splits.val, val_chain)
    log.info(
        "patches %s, %d train / %d val volumes, cache=%s", roi, len(train), len(val), data.cache
    )
    return train, val, roi


def train_loader(cfg: DictConfig, dataset: Any, device: str) -> Any:
    """Batches of random patches. Threads, not processes: the cached volumes are shared, not
    pickled to workers, and a background thread prepares the next batch during the step."""
    from monai.data import ThreadDataLoader

    return ThreadDataLoader(
        dataset,
        batch_size=int(cfg.training.batch_size),
        shuffle=True,
        num_workers=max(0, int(cfg.data.num_workers) - 1),
        use_thread_workers=True,
        pin_memory=device == "cuda",
    )


def lr_at(progress: float, base: float, warmup: float) -> float:
    """Linear warmup, then cosine decay to zero; `progress` runs from 0 to 1."""
    if progress < warmup:
        return base * max(progress / warmup, 0.01)
    rest = (progress - warmup) / max(1e-8, 1.0 - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, rest)))


def validate(model: MedicalModel, val: Any) -> float:
    """Mean foreground Dice over the validation volumes (preprocessed space)."""
    model.network.eval()
    scores = []
    for i in range(len(val)):
        item = val[i]
        pred = infer(model, item[IMAGE], mode="constant").argmax(0).cpu().numpy()
        truth = np.asarray(item[LABEL][0]).astype(np.int64)
        scores.append(list(dice_per_label(pred, truth, model.foreground).values()))
    model.network.train()
    return float(np.nanmean(scores)) if scores else float("nan")


def _save(path: Path, state: dict[str, Any]) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _resume_state(spec: str) -> tuple[dict[str, Any], Path]:
    """The `last.pt` state of a run folder (or a checkpoint file), and where it was."""
    import torch

    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise UserError(f"training.resume={spec}: no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UserError(f"training.resume={spec}: {path} is not a checkpoint: {exc}") from None
    if not isinstance(state, dict) or not state.keys() >= RESUME_KEYS:
        raise UserError(
            f"training.resume={spec}: {path.name} is not a training checkpoint "
            "(give the run folder, or its checkpoints/last.pt; best.pt holds weights only)"
        )
    return state, path


RESUME_KEYS = {"network", "optimizer", "epoch", "step", "best", "history", "net", "prep", "roi"}


def resolved_resume(cfg: DictConfig) -> DictConfig:
    """`cfg` with the resumed run's data, model and seed (see `MedicalVertical`)."""
    return resumed_config(cfg, str(cfg.training.resume))


def check_settings(cfg: DictConfig) -> None:
    """Numbers that would otherwise fail deep inside torch or MONAI, or after an epoch."""
    t, data = cfg.training, cfg.data
    for key, value in (
        ("training.epochs", t.epochs),
        ("training.batch_size", t.batch_size),
        ("training.val_every", t.val_every),
        ("training.sw_batch_size", t.sw_batch_size),
        ("data.samples_per_volume", data.samples_per_volume),
    ):
        require_int(value, key, minimum=1)
    if not 0.0 <= float(data.pos_fraction) <= 1.0:
        raise UserError(f"data.pos_fraction={data.pos_fraction} must be between 0 and 1")
    if not 0.0 <= float(t.sw_overlap) < 1.0:
        raise UserError(f"training.sw_overlap={t.sw_overlap} must be in [0, 1)")
    if float(t.lr) <= 0 or (t.max_minutes is not None and float(t.max_minutes) <= 0):
        raise UserError("training.lr and training.max_minutes must be positive")


def fit(cfg: DictConfig, splits: Splits, ctx: RunContext) -> MedicalModel:
    import torch
    from monai.losses import DiceCELoss

    t, log = cfg.training, ctx.log
    check_settings(cfg)
    torch.manual_seed(ctx.seed)  # torch was not imported yet when the core seeded
    labels = {int(k): v for k, v in splits.info["labels"].items()}
    in_channels = len(splits.info["modality"])
    resume, resume_path = _resume_state(t.resume) if t.resume else (None, None)
    net_cfg = resume["net"] if resume else OmegaConf.to_container(cfg.model, resolve=True)
    prep = resume["prep"] if resume else recipe(cfg, splits.info)
    device = ctx.device.kind
    precision = ctx.device.precision
    network = networks.build(net_cfg, in_channels, len(labels))
    if net_cfg.get("weights") and not resume:
        loaded, total = networks.load_weights(network, net_cfg["weights"])
        log.info("weights: %d of %d tensors from %s", loaded, total, net_cfg["weights"])
    roi = resume["roi"] if resume else None  # a resumed run keeps its patch size
    train_ds, val_ds, roi = datasets(
        cfg,
        splits,
        prep,
        networks.divisor(net_cfg),
        log,
        roi,
        networks.min_side(net_cfg),
        ctx.seed,
    )
    channels_last = bool(t.channels_last) and device == "cpu"
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    network.to(device, memory_format=memory_format)
    model = MedicalModel(
        network,
        net_cfg,
        prep,
        labels,
        in_channels,
        roi,
        int(t.sw_batch_size),
        float(t.sw_overlap),
        device,
        precision,
    )
    n_params = sum(p.numel() for p in network.parameters())
    log.info("%s: %.2fM parameters on %s (%s)", net_cfg["name"], n_params / 1e6, device, precision)

    loader = train_loader(cfg, train_ds, device)
    loss_fn = DiceCELoss(
        to_onehot_y=True,
        softmax=True,
        lambda_dice=float(t.lambda_dice),
        lambda_ce=float(t.lambda_ce),
        batch=bool(t.batch_dice),
    )
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=float(t.lr), weight_decay=float(t.weight_decay)
    )
    scaler = torch.amp.GradScaler(enabled=device == "cuda" and precision == "fp16")
    epochs, steps_per_epoch = int(t.epochs), len(loader)
    budget = float(t.max_minutes) * 60 if t.max_minutes else None
    ckpt_dir = ctx.run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    start, step, best, elapsed, history = 0, 0, -1.0, 0.0, []
    if resume:
        network.load_state_dict(resume["network"])
        optimizer.load_state_dict(resume["optimizer"])
        start, step, best = resume["epoch"] + 1, resume["step"], resume["best"]
        elapsed, history = resume["elapsed"], resume["history"]
        if (resume_path.parent / "best.pt").is_file():  # the best so far stays the baseline
            shutil.copy2(resume_path.parent / "best.pt", ckpt_dir / "best.pt")
        if start >= epochs:
            raise UserError(
                f"training.resume={t.resume}: that run finished {start} epochs; "
                f"set training.epochs above {start} to train on"
            )
        log.info("resumed from %s at epoch %d (best val Dice %.4f)", t.resume, start, best)
    total_steps = epochs * steps_per_epoch
    began = time.perf_counter() - elapsed
    network.train()
    for epoch in range(start, epochs):
        losses = []
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False)
        for batch in bar:
            progress = step / total_steps
            if budget:
                progress = max(progress, (time.perf_counter() - began) / budget)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(progress, float(t.lr), float(t.warmup_fraction))
            x = batch[IMAGE].as_tensor().to(device, non_blocking=True)
            y = batch[LABEL].as_tensor().to(device, non_blocking=True)
            x = x.contiguous(memory_format=memory_format)
            with autocast(device, precision):
                loss = loss_fn(network(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(network.parameters(), float(t.grad_clip))
            scaler.step(optimizer)
            scaler.update()
            losses.append(loss.item())
            step += 1
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        seconds = time.perf_counter() - began
        out_of_time = budget is not None and seconds >= budget
        last = epoch == epochs - 1 or out_of_time
        row = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "lr": optimizer.param_groups[0]["lr"],  # the last one used
            "seconds": seconds,
            "val_dice": float("nan"),
        }
        if (epoch + 1) % int(t.val_every) == 0 or last:
            row["val_dice"] = validate(model, val_ds)
            if row["val_dice"] > best:
                best = row["val_dice"]
                _save(ckpt_dir / "best.pt", {"network": network.state_dict(), "epoch": epoch})
        history.append(row)
        checked = f", val Dice {row['val_dice']:.4f}" if row["val_dice"] == row["val_dice"] else ""
        log.info("epoch %d: loss %.4f%s, %.0f s", epoch + 1, row["loss"], checked, seconds)
        _save(
            ckpt_dir / "last.pt",
            {
                "network": network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
                "step": step,
                "best": best,
                "elapsed": seconds,
                "history": history,
                "net": net_cfg,
                "prep": prep,
                "roi": roi,
            },
        )
        if out_of_time:
            log.info("training.max_minutes=%s reached after epoch %d", t.max_minutes, epoch + 1)
            break
    if (ckpt_dir / "best.pt").is_file():
        state = torch.load(ckpt_dir / "best.pt", map_location=device, weights_only=True)
        network.load_state_dict(state["network"])
        log.info("kept the best checkpoint: epoch %d, val Dice %.4f", state["epoch"] + 1, best)
    network.eval()
    model.network = network.to(memory_format=torch.contiguous_format)
    model.history = history
    return model
