"""`hydra/launcher=ray_jobs`: each job of a sweep (`-m`, any sweeper, Optuna's too) as a Ray
task on the Ray that `cluster=` connects to.

hydra-ray-launcher would do this, but it pins cloudpickle<3, which breaks joblib and dask
here; Hydra's joblib launcher runs jobs only in local processes (its backend is fixed to
loky). This launcher reuses the joblib launcher's job runner (`execute_job`: the job's
config, output folder and logging as Hydra sets them up) and only changes where it runs.
"""

# no `from __future__ import annotations`: Hydra runs this module outside sys.modules while
# it scans, and dataclasses then cannot read string annotations

import atexit
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)


@dataclass
class RayJobsLauncherConf:
    _target_: str = "hydra_plugins.verticals_ray_jobs.ray_jobs.RayJobsLauncher"
    num_cpus: float = 1.0  # Ray resources each job's task holds
    # null: one GPU per job when the cluster has GPUs and trainer.device is not cpu (jobs
    # on one GPU at once would run out of its memory), else none
    num_gpus: Optional[float] = None  # noqa: UP045 - Hydra's scan reads the annotation


ConfigStore.instance().store(
    group="hydra/launcher", name="ray_jobs", node=RayJobsLauncherConf, provider="verticals"
)


class RayJobsLauncher(Launcher):
    def __init__(self, num_cpus: float = 1.0, num_gpus: Optional[float] = None) -> None:  # noqa: UP045
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import ray
        from hydra_plugins.hydra_joblib_launcher._core import execute_job

        setup_globals()
        assert self.config is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        if not ray.is_initialized():  # once per sweep, however many batches a sweeper sends
            from verticals.core import cluster

            if cluster.mode(self.config) == "none":
                raise RuntimeError("hydra/launcher=ray_jobs runs on Ray: add cluster=ray_local")
            if cluster.connect(self.config):
                atexit.register(ray.shutdown)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("Ray: launching %d jobs, sweep output dir %s", len(job_overrides), sweep_dir)
        gpus = self.num_gpus
        if gpus is None:
            on_cpu = str(self.config.get("trainer", {}).get("device", "auto")) == "cpu"
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 and not on_cpu else 0.0
        task = ray.remote(execute_job).options(num_cpus=self.num_cpus, num_gpus=gpus)
        state: Any = Singleton.get_state()
        refs = []
        for idx, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))
            refs.append(
                task.remote(
                    initial_job_idx + idx,
                    list(overrides),
                    self.hydra_context,
                    self.config,
                    self.task_function,
                    state,
                )
            )
        return ray.get(refs)
