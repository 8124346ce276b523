"""Training: cached MONAI datasets, Dice+CE, AdamW with warmup + cosine, sliding-window
validation.

The loop itself (seeding, mixed precision on CUDA, clipping, best/last checkpoints, resume,
the time budget, history.csv) is the core's `verticals.core.torch_training`; this module
supplies the network, the patches, the loss, the Dice metric and the learning-rate shape.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from verticals.core import torch_training as tt
from verticals.core.contract import RunContext, Splits
from verticals.core.errors import UserError
from verticals.medical import networks
from verticals.medical.metrics import dice_per_label
from verticals.medical.model import MedicalModel, infer
from verticals.medical.transforms import (
    IMAGE,
    LABEL,
    augmentation,
    indexing,
    plan_roi,
    preprocessing,
)


def recipe(cfg: DictConfig, info: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing the model keeps (plain words and numbers: it is saved as JSON):
    `intensity=auto` resolved from the modality. The schema checked the values."""
    data = cfg.data
    intensity = str(data.intensity)
    if intensity == "auto":
        intensity = "window" if info.get("is_ct") else "zscore"
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


def train_loader(cfg: DictConfig, dataset: Any, device: str, generator: Any = None) -> Any:
    """Batches of random patches. Threads, not processes: the cached volumes are shared, not
    pickled to workers, and a background thread prepares the next batch during the step.

    `generator` (a torch.Generator) draws the shuffle and the workers' seeds, from which
    MONAI seeds the random transforms: seeded per epoch, an epoch's patches are repeatable
    with one worker thread (data.num_workers <= 2); more threads share the transforms'
    random state and draw from it in a varying order."""
    from monai.data import ThreadDataLoader

    return ThreadDataLoader(
        dataset,
        batch_size=int(cfg.training.batch_size),
        shuffle=True,
        num_workers=max(0, int(cfg.data.num_workers) - 1),
        use_thread_workers=True,
        pin_memory=device == "cuda",
        generator=generator,
    )


def lr_at(progress: float, base: float, warmup: float) -> float:
    """Linear warmup, then cosine decay to zero; `progress` runs from 0 to 1."""
    if progress < warmup:
        return base * max(progress / warmup, 0.01)
    rest = (progress - warmup) / max(1e-8, 1.0 - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, rest)))


def validate(model: MedicalModel, val: Any) -> float:
    """Mean foreground Dice over the validation volumes (preprocessed space)."""
    scores = []
    for i in range(len(val)):
        item = val[i]
        pred = infer(model, item[IMAGE], mode="constant").argmax(0).cpu().numpy()
        truth = np.asarray(item[LABEL][0]).astype(np.int64)
        scores.append(list(dice_per_label(pred, truth, model.foreground).values()))
    return float(np.nanmean(scores)) if scores else float("nan")


def find_resume(spec: str, log: Any) -> tt.Resume:
    """The last complete checkpoint of a run folder, or of a given `last.pt`."""
    path = Path(spec).expanduser()
    if path.is_dir():
        found = tt.find_resume(spec, tt.Checkpoints(path / "checkpoints"), log)
    elif path.is_file():
        found = tt.find_resume(spec, tt.Checkpoints(path.parent), log, file=path)
    else:
        raise UserError(f"training.resume={spec}: no run folder or checkpoint there")
    assert found is not None  # required: a missing checkpoint is a UserError
    return found


def fit(cfg: DictConfig, splits: Splits, ctx: RunContext) -> MedicalModel:
    import torch
    from monai.losses import DiceCELoss

    t, log = cfg.training, ctx.log
    labels = {int(k): v for k, v in splits.info["labels"].items()}
    in_channels = len(splits.info["modality"])
    resume = find_resume(str(t.resume), log) if t.resume else None
    meta = resume.meta if resume else {}  # a resumed run keeps its network, recipe, patches
    net_cfg = meta.get("net") or OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True)
    assert isinstance(net_cfg, dict)
    prep = meta.get("prep") or recipe(cfg, splits.info)
    device = ctx.device.kind
    train_ds, val_ds, roi = datasets(
        cfg,
        splits,
        prep,
        networks.divisor(net_cfg),
        log,
        meta.get("roi"),
        networks.min_side(net_cfg),
        ctx.seed,
    )
    channels_last = bool(t.channels_last) and device == "cpu"
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format

    def build() -> Any:
        network = networks.build(net_cfg, in_channels, len(labels))
        if net_cfg.get("weights") and not resume:
            loaded, total = networks.load_weights(network, net_cfg["weights"])
            log.info("weights: %d of %d tensors from %s", loaded, total, net_cfg["weights"])
        return network.to(memory_format=memory_format)

    minutes = tt.budget_minutes(t, ctx.device, log)
    trainer = tt.Trainer(
        ctx,
        str(net_cfg["name"]),
        build=build,
        optimizer=lambda params: torch.optim.AdamW(
            params, lr=float(t.lr), weight_decay=float(t.weight_decay)
        ),
        settings=tt.Settings(
            epochs=int(t.epochs),
            grad_clip=float(t.grad_clip),
            val_every=int(t.val_every),
            patience=None if t.patience is None else int(t.patience),
            mode="max",
            deadline=tt.deadline_after(minutes),
        ),
        files=tt.Checkpoints(ctx.run_dir / "checkpoints"),
        metric="val_dice",
        loss_name="loss",
        meta={"net": net_cfg, "prep": prep, "roi": roi},
        resume=resume,
    )
    model = MedicalModel(
        trainer.module,
        net_cfg,
        prep,
        labels,
        in_channels,
        roi,
        int(t.sw_batch_size),
        float(t.sw_overlap),
        device,
        ctx.device.precision,
    )
    n_params = sum(p.numel() for p in trainer.module.parameters())
    log.info("%s: %.2fM parameters on %s", net_cfg["name"], n_params / 1e6, ctx.device)

    draws = torch.Generator()
    loader = train_loader(cfg, train_ds, device, draws)

    def batches(epoch: int) -> Any:
        draws.manual_seed(ctx.seed * 100_003 + epoch)  # an epoch's patches: seed and epoch
        return loader

    dice_ce = DiceCELoss(
        to_onehot_y=True,
        softmax=True,
        lambda_dice=float(t.lambda_dice),
        lambda_ce=float(t.lambda_ce),
        batch=bool(t.batch_dice),
    )

    def loss(network: Any, batch: Any) -> Any:
        x = batch[IMAGE].as_tensor().to(device, non_blocking=True)
        y = batch[LABEL].as_tensor().to(device, non_blocking=True)
        return dice_ce(network(x.contiguous(memory_format=memory_format)).float(), y)

    warmup = float(t.warmup_fraction)
    result = trainer.fit(
        tt.Hooks(
            batches=batches,
            loss=loss,
            validate=lambda network: validate(model, val_ds),
            lr_factor=lambda progress: lr_at(progress, 1.0, warmup),
        )
    )
    model.network = result.module.to(memory_format=torch.contiguous_format)
    model.history = result.history
    return model
