"""Ray behind `cluster=`: connect to it quietly and offline, and stop what was started.

`cluster=none` (the default) never imports Ray. `cluster=ray_local` starts an embedded Ray
for one command and stops it after; `cluster=ray` joins a running cluster by address. The
commands that scale out (train, predict, serve, sweeps) enter `session(cfg)` and then use
Ray's own libraries: Ray Train (`cluster_fit`), Ray actors (`cluster_batch`), Ray Serve
(`cluster_serve`) and the suite's Hydra launcher for sweep jobs (`hydra/launcher=ray_jobs`).

What an embedded Ray would otherwise do on its own, and what stops it here:

- usage statistics: `RAY_USAGE_STATS_ENABLED=0`;
- a cloud-metadata probe (169.254.169.254) from its dashboard process, which the variable
  does not stop: Ray skips it when `~/ray_bootstrap_config.yaml` names a provider, so Ray's
  own processes start with a home folder under the session folder that holds one
  (`provider: local`), while every task and actor gets the user's real home back;
- addresses: with `cluster.host` on loopback (the default), Ray runs in its single-machine
  mode, in which every Ray process listens on 127.0.0.1 only and advertises it, so no Ray
  connection leaves the machine; the dashboard is off; calls need the session's token,
  kept beside the session files (`auth_token`, mode 600), not in `~/.ray`;
- files: sessions, logs and spilled objects under `<paths.cache_dir>/ray` (through a short
  link under the system temporary folder when that path is too long for Ray's sockets).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from verticals.core.errors import UserError
from verticals.core.logs import get_logger

log = get_logger("cluster")

QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_USAGE_STATS_PROMPT_ENABLED": "0",
    "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",  # never re-run workers through `uv run`
}
_SOCKET_ROOM = 42  # 107 bytes less Ray's /session_<date>_<time>_<us>_<pid>/sockets/plasma_store
_BOOTSTRAP = "ray_bootstrap_config.yaml"


def mode(cfg: DictConfig) -> str:
    """`cfg.cluster.mode` as a word ("none" when the command has no cluster group)."""
    cluster = cfg.get("cluster")
    return "none" if cluster is None else str(cluster.mode)


def import_ray() -> Any:
    """Ray, or a `UserError` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(
            "cluster=ray_local and cluster=ray need Ray: pip install 'verticals[cluster]'"
        ) from None
    return ray


def _connected() -> bool:
    """Whether this process is connected to a Ray already (without importing Ray)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def in_ray_worker() -> bool:
    """Whether this process is one of Ray's workers (a task or actor), not a driver."""
    import sys

    if "ray" not in sys.modules:  # a Ray worker has imported Ray; importing it here would
        return False  # fix Ray's settings before `session` could set them
    from ray._private import worker

    return sys.modules["ray"].is_initialized() and worker.global_worker.mode == worker.WORKER_MODE


def temp_root(cfg: DictConfig) -> Path:
    """Where an embedded Ray keeps its session files: `cluster.temp_dir`, by default
    `<paths.cache_dir>/ray`, as an absolute path."""
    given = cfg.cluster.get("temp_dir") or Path(cfg.paths.cache_dir) / "ray"
    return Path(given).expanduser().resolve()


def _short(folder: Path) -> Path:
    """`folder`, or a short link to it: Ray's unix sockets live inside it, and their paths
    may not exceed 107 bytes."""
    if len(str(folder)) <= _SOCKET_ROOM:
        return folder
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:10]
    temp = Path(tempfile.gettempdir())  # or /tmp, when TMPDIR is itself a long path
    base = temp if len(str(temp)) + len(digest) + 15 <= _SOCKET_ROOM else Path("/tmp")
    link = base / f"verticals-ray-{digest}"
    if link.is_symlink() and link.resolve() == folder:
        return link
    link.unlink(missing_ok=True)
    link.symlink_to(folder, target_is_directory=True)
    return link


def _ray_home(root: Path) -> Path:
    """The home folder Ray's own processes start with: it names a provider, so Ray's
    dashboard does not probe cloud metadata addresses."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    (home / _BOOTSTRAP).write_text("# written by verticals: no cloud provider to probe\n"
                                   "provider:\n  type: local\n")  # fmt: skip
    return home


def _own_token(root: Path) -> None:
    """Token authentication for the embedded Ray with a token of its own, kept beside its
    session files (mode 600): every Ray process and task reads it from there, whatever
    home it runs with, and the user's `~/.ray` is left alone."""
    path = root / "auth_token"
    if not path.is_file():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    path.chmod(0o600)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    os.environ.pop("RAY_AUTH_TOKEN", None)
    if "ray" in sys.modules:  # imported already: Ray read its settings (and an earlier
        from ray._raylet import AuthenticationTokenLoader, Config  # session's token) then

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


def _on_loopback(host: str) -> None:
    """An embedded Ray on loopback: Ray's single-machine mode (its default on macOS and
    Windows), in which every Ray process binds and advertises 127.0.0.1 (on Linux Ray
    otherwise listens on all interfaces and turns a loopback `_node_ip_address` into the
    machine's address). Another `cluster.host` is advertised as given, for nodes to join."""
    import ipaddress

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0" if loopback else "1"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # imported already: the module read the variable then
        constants.ENABLE_RAY_CLUSTER = not loopback


def quiet_environment() -> None:
    """Turn off Ray's usage statistics and prompts in this process and its children."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


@contextmanager
def session(cfg: DictConfig) -> Iterator[bool]:
    """Ray connected as `cfg.cluster` says while the block runs; yields whether it is on.

    `cluster=none`: nothing happens (False). Already connected (a task of a sweep, or a
    caller's own `ray.init`): that connection is used and left open.
    """
    started = connect(cfg)
    try:
        yield mode(cfg) != "none"
    finally:
        if started:
            import ray

            ray.shutdown()


def connect(cfg: DictConfig) -> bool:
    """Connect to Ray as `cfg.cluster` says, unless this process is connected already or
    the mode is none; whether this call connected (the caller then shuts Ray down)."""
    chosen = mode(cfg)
    if chosen == "none":
        return False
    c = cfg.cluster
    root = temp_root(cfg)
    if chosen == "ray_local" and not _connected():
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)  # Ray's logs and sockets: this user's only
        _own_token(root)  # before Ray reads its settings
        _on_loopback(str(c.host))
    ray = import_ray()
    if ray.is_initialized():
        return False
    quiet_environment()
    # tasks get the user's home back (Ray's own processes start with ours, on this machine)
    home = {"HOME": os.path.expanduser("~")} if chosen == "ray_local" else {}
    runtime_env = {"env_vars": {**home, **QUIET_ENV}}
    common: dict[str, Any] = {
        "logging_level": logging.WARNING,
        "log_to_driver": bool(c.log_to_driver),
        "runtime_env": runtime_env,
    }
    started = time.perf_counter()
    if chosen == "ray_local":
        home, saved = _ray_home(root), os.environ.get("HOME")
        os.environ["HOME"] = str(home)  # Ray's own processes inherit it; tasks get runtime_env's
        try:
            ray.init(
                address="local",  # a Ray of its own, whatever RAY_ADDRESS says
                num_cpus=c.num_cpus,
                num_gpus=c.num_gpus,
                include_dashboard=False,
                _node_ip_address=str(c.host),
                _temp_dir=str(_short(root)),
                **common,
            )
        except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
            raise UserError(f"cluster=ray_local: Ray did not start ({_first_line(exc)})") from None
        finally:
            if saved is None:
                os.environ.pop("HOME", None)
            else:
                os.environ["HOME"] = saved
        where = f"an embedded Ray on {c.host} (files in {root})"
    else:
        try:
            ray.init(address=str(c.address), **common)
        except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
            raise UserError(
                f"cluster.address={c.address}: cannot join that Ray cluster ({_first_line(exc)})"
            ) from None
        where = f"the Ray cluster at {c.address}"
    resources = ray.cluster_resources()
    log.info(
        "Ray: %s, %d CPUs and %d GPUs, ready in %.1f s",
        where,
        int(resources.get("CPU", 0)),
        int(resources.get("GPU", 0)),
        time.perf_counter() - started,
    )
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def gpus_per_worker(cfg: DictConfig) -> float:
    """GPUs for each training worker or actor: `cluster.gpus_per_worker`, else one when
    the connected cluster has any."""
    given = cfg.cluster.get("gpus_per_worker")
    if given is not None:
        return float(given)
    trainer = cfg.get("trainer")
    if trainer is not None and str(trainer.device) == "cpu":
        return 0.0  # asked for the CPU: no GPU held (and gloo, not NCCL)
    import ray

    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def check_fits(cfg: DictConfig, what: str, workers: int, cpus: float, gpus: float) -> None:
    """A `UserError` naming the settings when `workers` of `cpus` and `gpus` each can never
    be placed on an embedded Ray (Ray would wait for them forever); a warning on a cluster,
    which may grow. `workers=1` with the sums: one task holding a node's GPUs."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    free_cpu = sum(int(n.get("CPU", 0)) // cpus if cpus else workers for n in nodes)
    free_gpu = sum(int(n.get("GPU", 0) // gpus) if gpus else workers for n in nodes)
    if min(free_cpu, free_gpu) >= workers:
        return
    if mode(cfg) == "ray":  # a cluster may grow (an autoscaler): Ray waits for room
        log.warning("%s: %d workers do not fit on the cluster as it is now; waiting for "
                    "room", what, workers)  # fmt: skip
        return
    total_cpu = sum(n.get("CPU", 0) for n in nodes)
    total_gpu = sum(n.get("GPU", 0) for n in nodes)
    raise UserError(
        f"{what}: {workers} workers of {cpus:g} CPUs and {gpus:g} GPUs each do not fit on "
        f"this Ray ({total_cpu:g} CPUs, {total_gpu:g} GPUs): lower cluster.workers, "
        "cluster.cpus_per_worker or cluster.gpus_per_worker (or give Ray more with "
        "cluster.num_cpus / cluster.num_gpus)"
    )
