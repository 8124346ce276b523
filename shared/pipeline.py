"""The life of a model, written once: train -> evaluate, for any registered vertical.

The CLI calls these with a Hydra-composed config; notebooks call them with a config from
Hydra's compose API. Neither knows which vertical runs.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from verticals.core import cluster, cluster_fit, reference, registry, run_tracking
from verticals.core.config import require_int
from verticals.core.contract import RunContext, Splits, Vertical
from verticals.core.device import resolve_device
from verticals.core.examples import EXAMPLES, write_examples
from verticals.core.logs import log_to_file
from verticals.core.runs import mark_latest, new_run_dir, timestamp, write_atomic, write_json
from verticals.core.seeding import seed_everything
from verticals.core.tracking import redacted


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, float]
    model: Any
    splits: Splits
    vertical: Vertical


def _context(cfg: DictConfig, out_dir: Path, log: logging.Logger) -> RunContext:
    """Seed everything and resolve the device: what every vertical step starts from."""
    seed = require_int(cfg.seed, "seed")
    seed_everything(seed)
    device = resolve_device(cfg.trainer.device, cfg.trainer.precision)
    return RunContext(run_dir=out_dir, device=device, seed=seed, log=log)


def train(
    cfg: DictConfig,
    run_dir: Path | None = None,
    sweep: str | None = None,
    prepare: Callable[[Splits], Splits] | None = None,
) -> TrainResult:
    """Load data, fit, evaluate on the test split, save, write the card, move LATEST, and
    record the run in the tracking store (`cfg.tracking`; `sweep`: the multirun folder a
    job belongs to, which becomes the parent run). `prepare` changes the loaded splits
    before the fit (a retrain adds the feedback there)."""
    vertical = registry.get(cfg.vertical)
    cfg = vertical.resolve_config(cfg)
    require_int(cfg.seed, "seed")  # a bad seed fails before the run folder and the store
    run_dir = Path(run_dir) if run_dir else new_run_dir(cfg.paths.runs_dir, vertical.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(redacted(cfg), resolve=True))
    with log_to_file(run_dir / "train.log") as log:
        tracker = run_tracking.start(cfg, vertical.name, run_dir, sweep)
        try:
            with _engine(cfg, vertical):
                result = _train(cfg, vertical, run_dir, log, tracker, prepare)
            tracker.finish(vertical, result.model, result.splits, result.metrics)
        except BaseException:
            tracker.failed()
            raise
    return result


def _engine(cfg: DictConfig, vertical: Vertical) -> AbstractContextManager[Any]:
    """One Ray for the whole command (data, fit, evaluation) when the vertical's data is
    read by Ray tasks; otherwise nothing here (a fit on the cluster connects for itself)."""
    return cluster.session(cfg) if vertical.reads_on_cluster(cfg) else nullcontext()


def _train(
    cfg: DictConfig,
    vertical: Vertical,
    run_dir: Path,
    log: logging.Logger,
    tracker: run_tracking.NoTracking,
    prepare: Callable[[Splits], Splits] | None = None,
) -> TrainResult:
    ctx = _context(cfg, run_dir, log)
    device = ctx.device
    log.info("%s: run %s on %s", vertical.name, run_dir, device)

    started = time.perf_counter()
    splits = vertical.load_data(cfg)
    if prepare is not None:
        splits = prepare(splits)
    log.info("data: %s", ", ".join(f"{k}={v}" for k, v in splits.info.items() if k != "schema"))
    tracker.loaded(splits)
    model = cluster_fit.fit(vertical, cfg, splits, ctx)  # vertical.fit, or on Ray
    fit_seconds = time.perf_counter() - started
    metrics = vertical.evaluate(model, splits.test, ctx)
    vertical.save(model, run_dir / "model")
    write_examples(vertical, splits, run_dir / EXAMPLES)
    reference.write(vertical, model, splits, run_dir)  # what the monitor compares with

    write_json(run_dir / "metrics.json", metrics)
    run_info = {
        "vertical": vertical.name,
        "run": run_dir.name,
        "created": datetime.now().isoformat(timespec="seconds"),
        "device": str(device),
        "fit_seconds": round(fit_seconds, 3),
        "data": {k: v for k, v in splits.info.items() if k != "schema"},
        "python": platform.python_version(),
        **({"tracking": tracker.info()} if tracker.info() else {}),
    }
    write_json(run_dir / "run.json", run_info)
    card = model_card(vertical, run_info, metrics, vertical.describe(model, metrics, splits.info))
    write_atomic(run_dir / "model_card.md", card)
    mark_latest(run_dir, Path(cfg.paths.runs_dir) / vertical.name)
    log.info("%s: %s", vertical.name, format_metrics(metrics))
    return TrainResult(run_dir, metrics, model, splits, vertical)


def evaluate(cfg: DictConfig, run_dir: Path, out_dir: Path | None = None) -> dict[str, float]:
    """Re-score a trained run on the test split of `cfg.data`; write metrics and plots."""
    vertical = registry.get(cfg.vertical)
    out_dir = out_dir or run_dir / "evaluations" / timestamp()
    out_dir.mkdir(parents=True, exist_ok=True)
    with log_to_file(out_dir / "evaluate.log") as log:
        ctx = _context(cfg, out_dir, log)
        model = vertical.load(run_dir / "model")
        with _engine(cfg, vertical):
            splits = vertical.load_data(cfg)
            metrics = vertical.evaluate(model, splits.test, ctx)
        write_json(out_dir / "metrics.json", metrics)
        log.info("%s evaluation of %s: %s", vertical.name, run_dir.name, format_metrics(metrics))
    return metrics


def load_run_config(run_dir: Path) -> DictConfig:
    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert isinstance(cfg, DictConfig)
    return cfg


def format_metrics(metrics: dict[str, Any], limit: int = 8) -> str:
    items = [(k, v) for k, v in metrics.items() if isinstance(v, int | float)][:limit]
    return ", ".join(f"{k}={v:.4g}" for k, v in items)


def model_card(
    vertical: Vertical, run_info: dict[str, Any], metrics: dict[str, Any], body: str
) -> str:
    """A short Markdown card: what was trained, on what, how well, and what to watch."""
    rows = "\n".join(
        f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in metrics.items()
    )
    data = "\n".join(f"- {k}: {v}" for k, v in run_info["data"].items())
    return (
        f"# Model card: {vertical.title or vertical.name}\n\n"
        f"- run: `{run_info['run']}`, created {run_info['created']}\n"
        f"- device: {run_info['device']}, fit + data {run_info['fit_seconds']:.1f} s\n\n"
        f"## Data\n\n{data}\n\n"
        f"## Test metrics\n\n| metric | value |\n| --- | --- |\n{rows}\n\n"
        f"{body.strip()}\n\n"
        "## Plots\n\nSee `plots/` beside this card.\n"
    )
