"""Train the forecasters: masked MAE, Adam, early stopping on validation MAE, checkpoints.

The graph model and the per-sensor GRU baseline go through the same loop, so the table
compares models, not training recipes. Mixed precision (bf16/fp16 autocast) on CUDA.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from verticals.core.config import require_int
from verticals.core.contract import RunContext, Splits
from verticals.core.errors import UserError
from verticals.core.runs import run_of
from verticals.traffic.baselines import HistoricalAverage
from verticals.traffic.data import Windows
from verticals.traffic.model import TrafficModel


def masked_mae(pred: Any, true: Any) -> Any:
    """Mean absolute error over non-missing (non-zero) targets; 0 when all are missing."""
    mask = (true > 0).float()
    return (abs(pred - true) * mask).sum() / mask.sum().clamp(min=1.0)


def _batches(windows: Windows, batch: int, shuffle: bool, rng: np.random.Generator):
    order = rng.permutation(len(windows)) if shuffle else np.arange(len(windows))
    for i in range(0, len(order), batch):
        yield windows.starts[order[i : i + batch]]


class Loop:
    """One model's training: state, optimiser, history, checkpoint."""

    def __init__(self, module: Any, cfg: DictConfig, splits: Splits, ctx: RunContext, label: str):
        import torch

        self.torch = torch
        self.cfg, self.splits, self.ctx, self.label = cfg.training, splits, ctx, label
        self.device = torch.device("cuda" if ctx.device.is_cuda else "cpu")
        self.module = module.to(self.device)
        self.optim = torch.optim.Adam(
            module.parameters(), lr=float(self.cfg.lr), weight_decay=float(self.cfg.weight_decay)
        )
        precision = ctx.device.precision
        self.autocast = ctx.device.is_cuda and precision in ("bf16", "fp16")
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast and precision == "fp16")
        net = splits.train.net
        self.features = torch.from_numpy(net.features()).to(self.device)
        self.speeds = torch.from_numpy(np.array(net.speeds)).to(self.device)
        self.mean, self.std = net.mean, net.std
        self.steps_in, self.steps_out = splits.train.input_steps, splits.train.output_steps
        self.history: list[dict[str, float]] = []
        self.best = float("inf")
        self.best_state: dict[str, Any] | None = None
        self.stale = 0

    def _window(self, starts: np.ndarray) -> tuple[Any, Any]:
        s = self.torch.from_numpy(starts).to(self.device)
        x = self.features[s[:, None] + self.torch.arange(self.steps_in, device=self.device)]
        offsets = s[:, None] + self.steps_in + self.torch.arange(self.steps_out, device=self.device)
        return x, self.speeds[offsets]

    def _forward(self, x: Any) -> Any:
        with self.torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
            return self.module(x).float() * self.std + self.mean

    def validate(self) -> float:
        self.module.eval()
        total, count = 0.0, 0.0
        with self.torch.inference_mode():
            for starts in _batches(self.splits.val, 256, False, np.random.default_rng(0)):
                x, y = self._window(starts)
                pred = self._forward(x)
                mask = (y > 0).float()
                total += float((abs(pred - y) * mask).sum())
                count += float(mask.sum())
        return total / max(count, 1.0)

    def restore(self, path: Path) -> int:
        """Continue from a checkpoint this loop wrote; returns the last finished epoch."""
        try:
            state = self.torch.load(path, map_location=self.device, weights_only=True)
            self.module.load_state_dict(state["model"])
            self.optim.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, OSError) as exc:
            raise UserError(f"training.resume: {path} does not fit this model ({exc})") from None
        self.best, self.best_state = float(state["best"]), state["best_state"]
        self.history = list(state["history"])
        self.stale = int(state.get("stale", 0))
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        return int(state["epoch"])

    def run(self, epochs: int, deadline: float | None, first: int = 1) -> None:
        from tqdm.auto import tqdm

        rng = np.random.default_rng(self.ctx.seed + first)
        batch = require_int(self.cfg.batch_size, "training.batch_size", minimum=1)
        patience = require_int(self.cfg.patience, "training.patience", minimum=1)
        stale = getattr(self, "stale", 0)
        started = time.perf_counter() - (self.history[-1]["seconds"] if self.history else 0.0)
        for epoch in range(first, epochs + 1):
            self.module.train()
            losses = []
            bar = tqdm(
                list(_batches(self.splits.train, batch, True, rng)),
                desc=f"{self.label} {epoch}/{epochs}", unit="batch", leave=False,
            )  # fmt: skip
            for starts in bar:
                x, y = self._window(starts)
                loss = masked_mae(self._forward(x), y)
                self.optim.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optim)
                self.torch.nn.utils.clip_grad_norm_(
                    self.module.parameters(), float(self.cfg.grad_clip)
                )
                self.scaler.step(self.optim)
                self.scaler.update()
                losses.append(loss.item())
                bar.set_postfix(mae=f"{losses[-1]:.2f}")
            val = self.validate()
            elapsed = time.perf_counter() - started
            train_mae = float(np.mean(losses))
            self.history.append({"model": self.label, "epoch": epoch, "train_mae": train_mae,
                                 "val_mae": val, "seconds": round(elapsed, 2)})  # fmt: skip
            self.ctx.log.info("%s epoch %d: train MAE %.3f, val MAE %.3f, %.0f s",
                              self.label, epoch, np.mean(losses), val, elapsed)  # fmt: skip
            if val < self.best - 1e-4:
                self.best, stale = val, 0
                self.best_state = {
                    k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()
                }
            else:
                stale += 1
            self.stale = stale
            self.checkpoint(epoch)
            if stale >= patience:
                self.ctx.log.info(
                    "%s: no better validation MAE for %d epochs; stopping", self.label, stale
                )
                break
            if deadline is not None and time.perf_counter() > deadline:
                self.ctx.log.info(
                    "%s: training.max_minutes reached after epoch %d", self.label, epoch
                )
                break

    def checkpoint(self, epoch: int) -> Path:
        path = self.ctx.run_dir / "checkpoints" / f"{self.label}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.torch.save(
            {"epoch": epoch, "model": self.module.state_dict(),
             "optimizer": self.optim.state_dict(), "best": self.best,
             "best_state": self.best_state, "history": self.history, "stale": self.stale,
             "scaler": self.scaler.state_dict()},
            path,
        )  # fmt: skip
        return path


def fit(cfg: DictConfig, splits: Splits, ctx: RunContext) -> TrafficModel:
    from verticals.traffic.networks import build

    name = str(cfg.model.name)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model_cfg, dict)
    net = splits.train.net
    epochs = require_int(cfg.training.epochs, "training.epochs", minimum=1)
    baseline_epochs = require_int(
        cfg.training.baseline_epochs, "training.baseline_epochs", minimum=0
    )
    minutes = cfg.training.max_minutes
    deadline = time.perf_counter() + float(minutes) * 60 if minutes else None
    if minutes is not None and float(minutes) <= 0:
        raise UserError(f"training.max_minutes={minutes}; expected a positive number of minutes")
    states, history = {}, []
    plan = [(name, epochs)] + (
        [("gru", baseline_epochs)] if name != "gru" and baseline_epochs else []
    )
    resume = run_of(str(cfg.training.resume)) / "checkpoints" if cfg.training.resume else None
    if resume is not None and not resume.is_dir():
        raise UserError(
            f"training.resume={cfg.training.resume}: no checkpoints/ folder at {resume}"
        )
    for label, n_epochs in plan:
        module = build(label, model_cfg, net.weights, 3, splits.train.output_steps)
        loop = Loop(module, cfg, splits, ctx, label)
        first = 1
        checkpoint = resume / f"{label}.pt" if resume is not None else None
        if checkpoint is not None and checkpoint.is_file():  # else: this model starts afresh
            first = loop.restore(checkpoint) + 1
            loop.stale = 0  # asked to go on: early stopping counts afresh
            if label == name and first > n_epochs:
                raise UserError(
                    f"training.resume: that run finished {first - 1} epochs of {label}; set "
                    f"training.epochs above {first - 1}"
                )
            ctx.log.info("%s: resuming after epoch %d", label, first - 1)
        loop.run(n_epochs, deadline if label == name else None, first)
        states[label] = loop.best_state or {k: v.cpu() for k, v in module.state_dict().items()}
        history += loop.history
    n_train = int(splits.train.starts[-1]) + splits.train.input_steps + splits.train.output_steps
    alerts = OmegaConf.to_container(cfg.alerts, resolve=True)
    assert isinstance(alerts, dict)
    model = TrafficModel(
        name=name, sensors=net.sensors, weights=net.weights, mean=net.mean, std=net.std,
        step_min=net.step_min, input_steps=splits.train.input_steps,
        output_steps=splits.train.output_steps, model_cfg=model_cfg, alerts=alerts,
        historical=HistoricalAverage.fit(net, n_train), states=states,
        device="cuda" if ctx.device.is_cuda else "cpu", tz=net.extra.get("tz"),
    )  # fmt: skip
    import pandas as pd

    pd.DataFrame(history).to_csv(ctx.run_dir / "history.csv", index=False)
    return model
