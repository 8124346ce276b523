"""A vertical's fit on a Ray cluster, as its `scale_out` says; the run folder stays the same.

The pipeline calls `fit` where it would call `vertical.fit`: with `cluster=none`, inside a
Ray task already (a sweep job), or for a vertical that trains on one process, it is just
that call. Otherwise:

- "torch": Ray Train's `TorchTrainer` runs `vertical.fit` on `cluster.workers` workers (one
  GPU each when the cluster has GPUs); the core's torch loop sees `ctx.workers` and trains
  in DDP;
- "lightgbm": Ray Train's `LightGBMTrainer` runs `vertical.fit` on every worker with
  LightGBM's network settings in `ctx.workers.params`; the vertical trains its share of
  the rows with the data-parallel learner;
- "node": the whole `vertical.fit` in one Ray task that holds `cluster.workers` GPUs of one
  node (`ctx.workers.params["devices"]`), for libraries with their own multi-GPU training.

The splits travel through Ray's object store, each worker's share of them
(`vertical.share`: finance's workers each get their rows of the training table). The
chief's model comes back as a Ray Train checkpoint under `<run>/ray-train/` (or, from a
task, as the saved model's files), is put in `<run>/ray-train/chief/model` and loaded from
there with `vertical.load`; the pipeline goes on exactly as after a local fit: evaluation,
the saved model, the card, tracking. Checkpoints and history of the torch loop are written
by the chief into the run folder (on one machine, or a shared file system). The pipeline
holds one Ray session for the whole run, so a vertical's data step and evaluation can use
it too (finance reads a Parquet table with Ray tasks, and scores its test split there).
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from verticals.core import cluster, registry
from verticals.core.contract import RunContext, Splits, Vertical, Workers
from verticals.core.device import resolve_device
from verticals.core.errors import UserError
from verticals.core.seeding import seed_everything

TRAIN_DIR = "ray-train"  # Ray Train's own records and the chief's checkpoint, in the run
CHIEF = "chief"  # <run>/ray-train/chief/model: the model the chief trained, as loaded


def fit(vertical: Vertical, cfg: DictConfig, splits: Splits, ctx: RunContext) -> Any:
    """`vertical.fit(cfg, splits, ctx)`, spread over the cluster when `cfg.cluster` asks."""
    how = vertical.scale_out
    if cluster.mode(cfg) == "none" or cluster.in_ray_worker():
        return vertical.fit(cfg, splits, ctx)
    if how == "none":
        ctx.log.info(
            "%s trains on one process (its library has no distributed learner): "
            "cluster= does not change its training",
            vertical.name,
        )
        return vertical.fit(cfg, splits, ctx)
    if how not in ("torch", "lightgbm", "node"):
        raise UserError(f"{vertical.name}: unknown scale_out {how!r}")
    started = time.perf_counter()
    with cluster.session(cfg):
        if how == "node":
            model = _on_node(vertical, cfg, splits, ctx)
        else:
            model = _ray_train(how, vertical, cfg, splits, ctx)
    ctx.log.info("%s: fit on Ray (%s) in %.1f s", vertical.name, how, time.perf_counter() - started)
    return model


def _payload(vertical: Vertical, cfg: DictConfig, splits: Splits, ctx: RunContext) -> Any:
    import ray

    plain = OmegaConf.to_container(cfg, resolve=True)
    return ray.put((vertical.name, plain, splits, str(ctx.run_dir), ctx.seed, os.getcwd()))


def _payloads(
    vertical: Vertical, cfg: DictConfig, splits: Splits, ctx: RunContext, size: int
) -> list[Any]:
    """One object per worker, holding its share of the splits (`vertical.share`)."""
    return [
        _payload(vertical, cfg, vertical.share(splits, Workers(rank, size)), ctx)
        for rank in range(size)
    ]


def _here(folder: str) -> None:
    """Work in the driver's folder, where the config's and the splits' relative paths
    start (Ray starts its workers elsewhere); a node without that folder stays put."""
    if Path(folder).is_dir():
        os.chdir(folder)


def _ray_train(
    how: str, vertical: Vertical, cfg: DictConfig, splits: Splits, ctx: RunContext
) -> Any:
    from ray.train import FailureConfig, RunConfig, ScalingConfig

    workers = int(cfg.cluster.workers)
    gpus = cluster.gpus_per_worker(cfg)
    per_worker = {"CPU": float(cfg.cluster.cpus_per_worker), **({"GPU": gpus} if gpus else {})}
    cluster.check_fits(cfg, vertical.name, workers, per_worker["CPU"], gpus)
    if how == "torch":
        from ray.train.torch import TorchTrainer as RayTrainer
    else:
        from ray.train.lightgbm import LightGBMTrainer as RayTrainer
    ctx.log.info(
        "%s: training on %d Ray Train workers (%s; %s each)",
        vertical.name,
        workers,
        "DDP" if how == "torch" else "LightGBM data-parallel",
        ", ".join(f"{v:g} {k}" for k, v in per_worker.items()),
    )
    trainer = RayTrainer(
        _train_loop,
        train_loop_config={"payloads": _payloads(vertical, cfg, splits, ctx, workers), "how": how},
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=gpus > 0, resources_per_worker=per_worker
        ),
        run_config=RunConfig(
            name=TRAIN_DIR,
            storage_path=str(ctx.run_dir.resolve()),
            failure_config=FailureConfig(max_failures=0, controller_failure_limit=0),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray wraps the worker's error: say what it was, in one line
        raise UserError(f"{vertical.name}: distributed training failed: {_cause(exc)}") from exc
    if result.checkpoint is None:
        raise UserError(f"{vertical.name}: the training workers returned no model")
    # into the run folder to stay: a loaded model may read its files later (the pipeline
    # saves it again from them), and a checkpoint on remote storage comes down here
    folder = result.checkpoint.to_directory(str(ctx.run_dir / TRAIN_DIR / CHIEF))
    return vertical.load(Path(folder) / "model")


def _cause(exc: BaseException) -> str:
    """The innermost error's first line (Ray nests the worker's error in its own)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:400]


def _context(name: str, run_dir: str, seed: int, cfg: DictConfig, workers: Workers) -> RunContext:
    """The RunContext of one worker: its own device (the GPU Ray gave it, if any) and a log
    that only the chief writes at INFO (the others warn), to the driver's console."""
    log = logging.getLogger(f"verticals.{name}.worker{workers.rank}")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"[rank {workers.rank}] %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.INFO if workers.chief else logging.WARNING)
    if workers.chief and Path(run_dir).is_dir():  # the run's train.log, as a local fit's
        file = logging.FileHandler(Path(run_dir) / "train.log")
        file.setFormatter(logging.Formatter("[%(asctime)s %(levelname)s worker 0] %(message)s"))
        log.addHandler(file)
    device = resolve_device(cfg.trainer.device, cfg.trainer.precision)
    seed_everything(seed)
    return RunContext(run_dir=Path(run_dir), device=device, seed=seed, log=log, workers=workers)


def _train_loop(config: dict[str, Any]) -> None:
    """What every Ray Train worker runs: the vertical's own fit, then the chief's model as
    the run's checkpoint (every worker reports: Ray Train waits for all)."""
    import ray
    import ray.train

    here = ray.train.get_context()
    name, plain, splits, run_dir, seed, cwd = ray.get(config["payloads"][here.get_world_rank()])
    _here(cwd)
    cfg = OmegaConf.create(plain)
    vertical = registry.get(name)
    params: dict[str, Any] = {}
    if config["how"] == "lightgbm":
        from ray.train.lightgbm import get_network_params

        params = get_network_params()
    workers = Workers(here.get_world_rank(), here.get_world_size(), params)
    ctx = _context(name, run_dir, seed, cfg, workers)
    model = vertical.fit(cfg, splits, ctx)
    if not workers.chief:
        ray.train.report({"rank": workers.rank})
        return
    folder = Path(tempfile.mkdtemp(prefix="verticals-fit-"))
    try:
        vertical.save(model, folder / "model")
        ray.train.report({"rank": 0}, checkpoint=ray.train.Checkpoint.from_directory(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _on_node(vertical: Vertical, cfg: DictConfig, splits: Splits, ctx: RunContext) -> Any:
    import ray

    workers = int(cfg.cluster.workers)
    gpus = cluster.gpus_per_worker(cfg) * workers
    cpus = float(cfg.cluster.cpus_per_worker) * workers
    ctx.log.info(
        "%s: training in one Ray task with %g GPUs and %g CPUs (its library's own %s)",
        vertical.name,
        gpus,
        cpus,
        "multi-GPU DDP" if gpus > 1 else "single-device training",
    )
    cluster.check_fits(cfg, vertical.name, 1, cpus, gpus)  # one task: on one node
    task = ray.remote(_node_fit).options(num_cpus=cpus, num_gpus=gpus)
    try:
        packed = ray.get(task.remote(_payload(vertical, cfg, splits, ctx)))
    except Exception as exc:
        raise UserError(f"{vertical.name}: training on the Ray node failed: {_cause(exc)}") from exc
    folder = ctx.run_dir / TRAIN_DIR / CHIEF  # to stay, as above
    shutil.rmtree(folder, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
        tar.extractall(folder, filter="data")
    return vertical.load(folder / "model")


def _node_fit(payload: Any) -> bytes:
    """The whole fit in a Ray task; the saved model comes back as a tar of its files."""
    import ray

    name, plain, splits, run_dir, seed, cwd = payload
    _here(cwd)
    cfg = OmegaConf.create(plain)
    vertical = registry.get(name)
    devices = [int(i) for i in ray.get_gpu_ids()]
    ctx = _context(name, run_dir, seed, cfg, Workers(0, 1, {"devices": devices}))
    model = vertical.fit(cfg, splits, ctx)
    folder = Path(tempfile.mkdtemp(prefix="verticals-fit-"))
    try:
        vertical.save(model, folder / "model")
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            tar.add(folder / "model", arcname="model")
        return out.getvalue()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
