"""Train the forecasters: masked MAE, Adam, early stopping on validation MAE.

The loop itself (seeding, autocast, clipping, early stopping, the time budget, checkpoints,
resume, history.csv) is the core's `verticals.core.torch_training`; this module supplies the
windows, the loss and the metric. The graph model and the per-sensor GRU baseline go through
the same loop, so the table compares models, not training recipes. Checkpoints:
`checkpoints/<model>.pt` (last), `<model>.previous.pt`, `<model>.best.pt`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from verticals.core import torch_training as tt
from verticals.core.contract import RunContext, Splits
from verticals.core.errors import UserError
from verticals.core.runs import run_of
from verticals.traffic.baselines import HistoricalAverage
from verticals.traffic.data import Windows
from verticals.traffic.model import TrafficModel

#: Of a time budget, the share kept for the GRU baseline after the main model.
BASELINE_SHARE = 0.2


def masked_mae(pred: Any, true: Any) -> Any:
    """Mean absolute error over non-missing (non-zero) targets; 0 when all are missing."""
    mask = (true > 0).float()
    return (abs(pred - true) * mask).sum() / mask.sum().clamp(min=1.0)


def _batches(windows: Windows, batch: int, shuffle: bool, rng: np.random.Generator):
    order = rng.permutation(len(windows)) if shuffle else np.arange(len(windows))
    for i in range(0, len(order), batch):
        yield windows.starts[order[i : i + batch]]


class WindowData:
    """The network's features and speeds on the device, cut into (inputs, targets) windows."""

    def __init__(self, splits: Splits, device: str) -> None:
        import torch

        self.torch, self.splits, self.device = torch, splits, torch.device(device)
        net = splits.train.net
        self.features = torch.from_numpy(net.features()).to(self.device)
        self.speeds = torch.from_numpy(np.array(net.speeds)).to(self.device)
        self.mean, self.std = net.mean, net.std
        self.steps_in, self.steps_out = splits.train.input_steps, splits.train.output_steps

    def window(self, starts: np.ndarray) -> tuple[Any, Any]:
        torch = self.torch
        s = torch.from_numpy(starts).to(self.device)
        x = self.features[s[:, None] + torch.arange(self.steps_in, device=self.device)]
        offsets = s[:, None] + self.steps_in + torch.arange(self.steps_out, device=self.device)
        return x, self.speeds[offsets]

    def speeds_of(self, module: Any, x: Any) -> Any:
        """Forecast speeds (mph) from scaled network outputs."""
        return module(x).float() * self.std + self.mean

    def loss(self, module: Any, starts: np.ndarray) -> Any:
        x, y = self.window(starts)
        return masked_mae(self.speeds_of(module, x), y)

    def val_mae(self, module: Any) -> float:
        """Masked MAE over every validation window and horizon."""
        total, count = 0.0, 0.0
        for starts in _batches(self.splits.val, 256, False, np.random.default_rng(0)):
            x, y = self.window(starts)
            mask = (y > 0).float()
            total += float((abs(self.speeds_of(module, x) - y) * mask).sum())
            count += float(mask.sum())
        return total / max(count, 1.0)


def fit(cfg: DictConfig, splits: Splits, ctx: RunContext) -> TrafficModel:
    import torch

    from verticals.traffic.networks import build

    t, log = cfg.training, ctx.log
    name = str(cfg.model.name)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True)
    assert isinstance(model_cfg, dict)
    net = splits.train.net
    plan = [(name, int(t.epochs))]
    if name != "gru" and t.baseline_epochs:
        plan.append(("gru", int(t.baseline_epochs)))
    folder = ctx.run_dir / "checkpoints"
    resume_dir = run_of(str(t.resume)) / "checkpoints" if t.resume else None
    if resume_dir is not None and not resume_dir.is_dir():
        raise UserError(f"training.resume={t.resume}: no checkpoints/ folder at {resume_dir}")
    started = time.perf_counter()
    end = tt.deadline_after(tt.budget_minutes(t, ctx.device, log), started)
    data = WindowData(splits, ctx.device.kind)
    batch = int(t.batch_size)
    states = {}
    for label, epochs in plan:
        deadline = end
        if end is not None and label == name and len(plan) > 1:  # leave time for the baseline
            deadline = started + (end - started) * (1.0 - BASELINE_SHARE)
        resume = None
        if resume_dir is not None:  # a model whose training had not started starts afresh
            resume = tt.find_resume(
                str(t.resume), tt.Checkpoints(resume_dir, label), log, required=False
            )
        trainer = tt.Trainer(
            ctx,
            label,
            build=lambda label=label: build(
                label, model_cfg, net.weights, 3, splits.train.output_steps
            ),
            optimizer=lambda params: torch.optim.Adam(
                params, lr=float(t.lr), weight_decay=float(t.weight_decay)
            ),
            settings=tt.Settings(
                epochs=epochs,
                grad_clip=float(t.grad_clip),
                patience=int(t.patience),
                min_delta=1e-4,
                mode="min",
                deadline=deadline,
            ),
            files=tt.Checkpoints(folder, label),
            metric="val_mae",
            loss_name="train_mae",
            resume=resume,
        )
        hooks = tt.Hooks(
            # the order of an epoch's windows depends only on the seed and the epoch
            batches=lambda epoch: list(
                _batches(splits.train, batch, True, np.random.default_rng([ctx.seed, epoch]))
            ),
            loss=data.loss,
            validate=data.val_mae,
        )
        result = trainer.fit(hooks, finished_ok=label != name)
        states[label] = {k: v.detach().cpu() for k, v in result.module.state_dict().items()}
    n_train = int(splits.train.starts[-1]) + splits.train.input_steps + splits.train.output_steps
    alerts = OmegaConf.to_container(cfg.alerts, resolve=True, enum_to_str=True)
    assert isinstance(alerts, dict)
    return TrafficModel(
        name=name, sensors=net.sensors, weights=net.weights, mean=net.mean, std=net.std,
        step_min=net.step_min, input_steps=splits.train.input_steps,
        output_steps=splits.train.output_steps, model_cfg=model_cfg, alerts=alerts,
        historical=HistoricalAverage.fit(net, n_train), states=states,
        device=ctx.device.kind, tz=net.extra.get("tz"), positions=net.extra.get("positions"),
    )  # fmt: skip
