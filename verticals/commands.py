"""What each CLI command does with its Hydra-composed config.

These glue the core together (pipeline, bundles, serving, batch prediction); they know the
vertical only by the name in `cfg.vertical`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from verticals.core import pipeline
from verticals.core.bundle import load_bundle, write_bundle
from verticals.core.config import ServeConfig, require_int
from verticals.core.contract import FileVertical
from verticals.core.errors import UserError
from verticals.core.runs import latest, resolve_run


def _hydra_output_dir() -> Path | None:
    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def _user_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _bundle_dir(cfg: DictConfig) -> Path:
    if cfg.bundle:
        return Path(cfg.bundle)
    return latest(Path(cfg.paths.bundles_dir) / cfg.vertical, "bundle")


def train(cfg: DictConfig) -> dict[str, float] | float:
    """Metrics of the run; the one named by `optimized_metric` alone when it is set, since
    a Hydra sweeper (Optuna) optimises the number the task returns."""
    result = pipeline.train(cfg, _hydra_output_dir())
    print(f"{cfg.vertical}: {pipeline.format_metrics(result.metrics)}")
    print(f"run: {result.run_dir}")
    metric = cfg.get("optimized_metric")
    if metric:
        if metric not in result.metrics:
            raise UserError(f"optimized_metric={metric!r} is not one of: {sorted(result.metrics)}")
        return float(result.metrics[metric])
    return result.metrics


def evaluate(cfg: DictConfig) -> dict[str, float]:
    run = resolve_run(cfg.run, cfg.paths.runs_dir, cfg.vertical)
    metrics = pipeline.evaluate(evaluation_config(cfg, pipeline.load_run_config(run)), run)
    print(f"{cfg.vertical} ({run.name}): {pipeline.format_metrics(metrics, limit=20)}")
    return metrics


def evaluation_config(cfg: DictConfig, saved: DictConfig) -> DictConfig:
    """The run's own config (data, seed: so the test split is the run's), with this
    command's device and whatever the user overrode: `data=<option>` takes that option whole,
    `data.<key>=...` and `seed=...` change just that key."""
    merged = OmegaConf.merge(saved, {"trainer": cfg.trainer})
    for override in _user_overrides():
        key = override.lstrip("+~").split("=", 1)[0]
        if key == "data":
            merged.data = cfg.data
        elif key.startswith("data.") or key == "seed":
            OmegaConf.update(merged, key, OmegaConf.select(cfg, key), force_add=True)
    return merged


def package(cfg: DictConfig) -> Path:
    run = resolve_run(cfg.run, cfg.paths.runs_dir, cfg.vertical)
    bundle = write_bundle(run, Path(cfg.paths.bundles_dir), examples=bool(cfg.examples))
    print(f"bundle: {bundle}")
    return bundle


def serve(cfg: DictConfig) -> None:
    import uvicorn

    from verticals.core.serving import (
        BUNDLE_ENV,
        MULTIPROC_ENV,
        SERVE_ENV,
        create_app,
        options_to_env,
    )

    bundle = load_bundle(_bundle_dir(cfg))  # verify once, before any worker starts
    serve = cfg.serve
    require_int(serve.workers, "serve.workers", minimum=1)
    settings = ServeConfig(**OmegaConf.to_container(serve, resolve=True))  # type: ignore[arg-type]
    print(f"serving {cfg.vertical} {bundle.model_version} on http://{serve.host}:{serve.port}/docs")
    options = {"host": serve.host, "port": serve.port, "log_level": serve.log_level}
    if serve.workers == 1:
        uvicorn.run(create_app(bundle, warm="background", options=settings), **options)
        return
    os.environ[BUNDLE_ENV] = str(bundle.path)
    os.environ[SERVE_ENV] = options_to_env(settings)
    # Each worker process counts into files in one folder, and `/metrics` adds them up.
    own_dir = not os.environ.get(MULTIPROC_ENV)
    metrics_dir = os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="verticals-metrics-")
    for stale in Path(metrics_dir).glob("*.db"):  # an earlier server's counts must not add up
        stale.unlink()
    os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn.run(
            "verticals.core.serving:app_from_env", factory=True, workers=serve.workers, **options
        )
    finally:
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def predict(cfg: DictConfig) -> int:
    from verticals.core.batch import predict_file, predict_folder

    source, target = cfg.input, cfg.output  # settings first: cheap to check, no model loaded
    batch_size = require_int(cfg.batch_size, "batch_size", minimum=1)
    bundle = load_bundle(_bundle_dir(cfg))
    if isinstance(bundle.vertical, FileVertical):
        table = predict_folder(bundle, source, target)
        print(f"{cfg.vertical}: {len(table)} inputs with {bundle.model_version} -> {target}")
        return len(table)
    keep = cfg.keep_columns
    keep = [keep] if isinstance(keep, str) else list(keep or [])  # keep_columns=id works too
    rows = predict_file(bundle, source, target, batch_size, keep)
    print(f"{cfg.vertical}: scored {rows} rows with {bundle.model_version} -> {target}")
    return rows


COMMANDS = {
    "train": train,
    "evaluate": evaluate,
    "package": package,
    "serve": serve,
    "predict": predict,
}
