"""Train in a fresh interpreter, the result loaded back into the test process.

Torch trained about 1.5x slower late in the suite's long-lived process than in a new one
(measured on 2 cores: manufacturing's planted run 70 s against 43 s, traffic's 26 s against
17 s). The cause: in-process test servers that are never closed keep request threads that
once ran torch with an OpenMP team of their own (torch re-applies its process-wide thread
count on a thread's first call, and its MKL keeps its own), and with more OpenMP threads
than cores libgomp stops spin-waiting in every thread. Until the servers' thread counts are
settled (see the closing note of 2026-12-03), the heaviest training fixture trains in a
spawned process, as `verticals train` does.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from verticals.core import pipeline, registry

from .nonetwork import NoNetwork


def _train_here(plain: dict[str, Any]) -> tuple[str, list[str]]:
    """In the child: train under the no-network guard; the run folder and what it tried."""
    with NoNetwork() as guard:
        result = pipeline.train(OmegaConf.create(plain))
    return str(result.run_dir), guard.attempts


def train_fresh(cfg: DictConfig) -> tuple[pipeline.TrainResult, list[str]]:
    """`pipeline.train(cfg)` in a spawned process, under `NoNetwork`; the result (model and
    splits loaded again here) and every connection the training attempted."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        folder, attempts = pool.apply(_train_here, (plain,))
    run_dir = Path(folder)
    vertical = registry.get(cfg.vertical)
    splits = vertical.load_data(vertical.resolve_config(cfg))  # cached by the child's run
    model = vertical.load(run_dir / "model")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return pipeline.TrainResult(run_dir, metrics, model, splits, vertical), attempts
