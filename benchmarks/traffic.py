"""Benchmark the traffic vertical: every model's error by horizon, and training speed.

A. quality: masked MAE at 15/30/60 minutes of Graph WaveNet, the per-sensor GRU, the
   historical average (time of week) and the last value, on the same test windows of the
   simulated network (`--sensors`, `--days`), after `--epochs` of training;
B. training throughput (windows/s) of Graph WaveNet and of the GRU through the suite's
   loop, against a bare torch loop (same model, batch, loss and optimiser, tensors already
   on the device, no validation or checkpoints): the suite's overhead as a ratio.

    python benchmarks/traffic.py [--device auto] [--sensors 50] [--days 28] [--epochs 12]
                                 [--channels 16] [--out results.json]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")

import common  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from common import say  # noqa: E402

from verticals.configs import compose  # noqa: E402
from verticals.core import pipeline  # noqa: E402
from verticals.core.device import resolve_device  # noqa: E402
from verticals.traffic.networks import build  # noqa: E402
from verticals.traffic.training import masked_mae  # noqa: E402


def raw_windows_per_s(result: Any, name: str, device: str, batch: int, steps: int = 30) -> float:
    """A bare torch loop over the same windows: forward, masked MAE, backward, Adam step."""
    splits, model = result.splits, result.model
    net = splits.train.net
    dev = torch.device(device)
    module = build(name, model.model_cfg, net.weights, 3, splits.train.output_steps).to(dev)
    optim = torch.optim.Adam(module.parameters(), lr=1e-3)
    x_all = torch.from_numpy(splits.train.inputs()).to(dev)
    y_all = torch.from_numpy(splits.train.targets()).to(dev)
    done, started = 0, 0.0
    for step in range(steps + 3):
        if step == 3:
            started = time.perf_counter()
        i = (step * batch) % max(len(x_all) - batch, 1)
        x, y = x_all[i : i + batch], y_all[i : i + batch]
        loss = masked_mae(module(x) * net.std + net.mean, y)
        optim.zero_grad()
        loss.backward()
        optim.step()
        done += len(x) if step >= 3 else 0
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - started)


def suite_windows_per_s(result: Any, name: str) -> float:
    history = pd.read_csv(result.run_dir / "history.csv")
    part = history[history.model == name]
    seconds = float(part["seconds"].iloc[-1])
    return len(result.splits.train) * len(part) / seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.parser(__doc__)
    parser.add_argument("--sensors", type=int, default=50)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--channels", type=int, default=16, help="Graph WaveNet width")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.getLogger("verticals").setLevel(logging.WARNING)
    dev = resolve_device(args.device)
    say(
        f"traffic benchmark on {dev} ({os.cpu_count()} cores, torch {torch.__version__}, "
        f"python {platform.python_version()}); {args.sensors} simulated sensors, {args.days} days"
    )
    results: dict[str, Any] = {"device": str(dev)}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose("train", "traffic", [
            f"paths.root_dir={tmp}", f"trainer.device={args.device}",
            f"data.n_sensors={args.sensors}", f"data.days={args.days}", "data.stride=2",
            f"training.epochs={args.epochs}", f"training.baseline_epochs={args.epochs}",
            "training.batch_size=64", "training.patience=100", f"model.channels={args.channels}",
            "training.cpu_minutes=null",  # every epoch, however slow the machine
        ])  # fmt: skip
        result = pipeline.train(cfg)
        table = pd.read_csv(result.run_dir / "horizons.csv")
        wide = table.pivot(index="model", columns="horizon_min", values="mae").round(3)
        say("A. masked MAE (mph) by horizon, same test windows:")
        say(wide.to_string())
        results["mae_by_horizon"] = {m: wide.loc[m].to_dict() for m in wide.index}
        training = {}
        for name in ("gwnet", "gru"):
            suite = suite_windows_per_s(result, name)
            raw = raw_windows_per_s(result, name, dev.kind, 64)
            training[name] = {"suite_windows_per_s": round(suite, 1),
                              "raw_windows_per_s": round(raw, 1),
                              "ratio": round(suite / raw, 3)}  # fmt: skip
            say(
                f"B. {name} training: suite {suite:.0f} windows/s (with validation and "
                f"checkpoints each epoch) vs bare torch loop {raw:.0f} -> ratio {suite / raw:.2f}"
            )
        results["training"] = training
        results["train_windows"] = len(result.splits.train)
    common.write_figures(args.out, results)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
