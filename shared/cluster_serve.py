"""`verticals serve cluster=ray*`: the same FastAPI app, as Ray Serve replicas.

Why this way: there is one way to build the app. Each replica builds it with
`serving.app_from_env` from the same environment variables `run_server` gives its uvicorn
workers (bundle, `serve.*` settings, the followed champion, the prediction log, a shared
Prometheus folder), passed through the deployment's `runtime_env`. So every replica has
the same authentication, limits, prediction log and champion following, warms up in its
lifespan before it takes a request, and `/metrics` adds up the replicas on one machine.

Ray Serve's HTTP proxy listens on `serve.host:serve.port` (loopback unless told) on the
head node, and spreads requests over `serve.replicas` replicas, or between
`serve.autoscaling.min` and `max` on the requests each one is working on. The log's
schema is migrated here, once, before any replica starts. SIGINT or SIGTERM stops it.

Under Ray Serve, a request's id is the one its proxy gives it (a random UUID) unless the
client sends `X-Request-ID`: the proxy, Serve's logs and the prediction log share it, and
the answer carries it once (`OneRequestId`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from verticals.core.auth import ENV as TOKENS_ENV
from verticals.core.bundle import Bundle
from verticals.core.config import ServeConfig
from verticals.core.errors import UserError
from verticals.core.hotswap import Follow
from verticals.core.logs import get_logger
from verticals.core.predlog import LOG_ENV, LogSettings, PredictionLog
from verticals.core.serving import (
    BUNDLE_ENV,
    FOLLOW_ENV,
    MULTIPROC_ENV,
    SERVE_ENV,
    SERVED_ENV,
    app_from_env,
    options_to_env,
)

log = get_logger("cluster_serve")
QUIET = {"log_level": "WARNING", "enable_access_log": False}  # Ray Serve's own logs
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: a replica that cannot start (an unreadable bundle) fails the start after this many tries
CONSTRUCTOR_RETRIES = 2
DRAIN_S = 10.0  # a stopping replica's in-flight requests get this long to finish
_CONTROLLER = ("SERVE_CONTROLLER_ACTOR", "serve")  # Serve's controller actor, by name


class VerticalsReplica:
    """One copy of the app; `serve.ingress(build_app)` builds it in the replica."""


SECRETS_ENV = "VERTICALS_REPLICA_SECRETS"  # a 0600 file with what must not be in Ray's logs
SECRET_KEYS = (TOKENS_ENV, LOG_ENV)  # raw tokens; a database URL may hold a password


def build_app() -> ASGIApp:
    """The replica's app: `app_from_env`'s, its `X-Request-ID` left to Serve's proxy."""
    given = os.environ.get(SECRETS_ENV)
    if given:  # Ray logs a replica's runtime_env: secrets come through a file of ours
        os.environ.update(json.loads(Path(given).read_text()))
    return OneRequestId(app_from_env())


def _keep_secrets(env: dict[str, str], folder: Path) -> dict[str, str]:
    """`env` with its secrets moved into a file only this user reads (`folder` is a
    temporary folder of the server's, removed when it stops): Ray's runtime-env agent logs
    every variable of a runtime_env, and its logs stay on disk."""
    hidden = {k: env.pop(k) for k in SECRET_KEYS if k in env}
    path = folder / "replica-secrets.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(hidden, out)
    return {**env, SECRETS_ENV: str(path)}


class OneRequestId:
    """Drop the app's `X-Request-ID` answer header where Serve's proxy adds the same one.

    The proxy gives every request an `X-Request-ID` (the client's, or a new one) before
    the app sees it, and adds it to the answer; the app, which takes that id, adds it too:
    clients would read "id, id". Where the app chose another id (the client's was not
    one it accepts), both stay."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = None
        if scope["type"] == "http":
            given = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        if given is None:  # the lifespan, or no proxy in front
            await self.app(scope, receive, send)
            return

        async def send_once(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ())
                           if k.lower() != b"x-request-id" or v != given]  # fmt: skip
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_once)


def run_on_ray(
    bundle: Bundle,
    settings: ServeConfig,
    follow: Follow | None = None,
    prediction_log: LogSettings | None = None,
) -> None:
    """Serve `bundle` with Ray Serve on the connected Ray until SIGINT or SIGTERM, then
    shut Serve down (or only this app, on a cluster whose Serve was running already)."""
    from ray import serve

    if prediction_log is not None:  # migrated once; an unreachable database stops it here
        PredictionLog(prediction_log).close()
    port = free_port(settings.host, settings.port)
    name = f"verticals-{bundle.vertical.name}"
    ours = not _serve_running()
    metrics_dir = Path(tempfile.mkdtemp(prefix="verticals-metrics-"))  # 0700
    try:
        env = replica_env(bundle, settings, follow, prediction_log, metrics_dir)
    except BaseException:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        raise
    _quiet_driver()
    if settings.workers != 1:
        log.warning("serve.workers=%d is for cluster=none; on Ray, serve.replicas or "
                    "serve.autoscaling sets the copies of the app", settings.workers)  # fmt: skip
    try:
        with StopSignals() as stop:  # from here on, even while the replicas start
            serve.start(
                proxy_location="HeadOnly",  # one HTTP address
                http_options={"host": settings.host, "port": port},
                logging_config=QUIET,
            )
            if _deployed(serve, name, settings, env, stop):
                print(f"Ray Serve: {_scale(settings)} of {bundle.vertical.name} "
                      f"{bundle.model_version} on http://{settings.host}:{port} "
                      "(Ctrl-C or SIGTERM stops)", flush=True)  # fmt: skip
                stop.wait()
            print(f"{stop.name}: stopping the replicas", flush=True)
    finally:
        _stop(serve, name, ours)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def replica_env(
    bundle: Bundle,
    settings: ServeConfig,
    follow: Follow | None,
    prediction_log: LogSettings | None,
    metrics_dir: Path,
) -> dict[str, str]:
    """The environment `app_from_env` builds each replica's app from: what `run_server`
    gives its worker processes."""
    env = {
        BUNDLE_ENV: str(bundle.path),
        SERVE_ENV: options_to_env(settings),
        LOG_ENV: "off" if prediction_log is None else prediction_log.to_env(),
        MULTIPROC_ENV: str(metrics_dir),  # each replica counts into files there
        SERVED_ENV: str(metrics_dir / "served-version"),  # a restarted replica's fallback
        FOLLOW_ENV: "",  # nothing followed (an empty value reads as unset)
    }
    if follow is not None:
        to_env: Callable[[], str] | None = getattr(follow, "to_env", None)
        if to_env is None:
            raise UserError(
                "cluster=ray* needs a follow its replicas can rebuild (a model_versions.Champion)"
            )
        env[FOLLOW_ENV] = to_env()
    if os.environ.get(TOKENS_ENV):  # tokens given in the environment, as workers inherit
        env[TOKENS_ENV] = os.environ[TOKENS_ENV]
    return _keep_secrets(env, metrics_dir)


def deployment_options(settings: ServeConfig, env: dict[str, str]) -> dict[str, Any]:
    """`serve.deployment` options: fixed replicas or autoscaling bounds, requests per
    replica capped at `serve.max_inflight` (Serve queues the rest rather than sending a
    replica more than its limits accept), and the replicas' environment."""
    scaling = settings.autoscaling
    options: dict[str, Any] = {
        "max_ongoing_requests": settings.max_inflight,
        # beyond what the replicas take at once, as many again wait; then 503 (Serve's
        # backpressure), where one server would answer 503 with Retry-After
        "max_queued_requests": settings.max_inflight
        * max(settings.replicas, settings.autoscaling.max or 1),
        "ray_actor_options": {
            "num_cpus": _cpus_per_replica(settings),
            "runtime_env": {"env_vars": env},
        },
        "max_constructor_retry_count": CONSTRUCTOR_RETRIES,
        "graceful_shutdown_timeout_s": DRAIN_S,
        "logging_config": QUIET,
    }
    if scaling.min is None or scaling.max is None:
        options["num_replicas"] = settings.replicas
    else:
        options["autoscaling_config"] = {
            "min_replicas": scaling.min,
            "max_replicas": scaling.max,
            "initial_replicas": max(scaling.min, 1),
            "target_ongoing_requests": min(scaling.target_ongoing_requests,
                                           settings.max_inflight),
        }  # fmt: skip
    return options


def _deployed(
    serve: Any, name: str, settings: ServeConfig, env: dict[str, str], stop: StopSignals
) -> bool:
    """Deploy in a thread, so that a signal meanwhile is answered at once: True once every
    first replica is warm, False when stopped first (the thread ends with Serve)."""
    failed: list[BaseException] = []

    def deploy() -> None:
        try:
            _deploy(serve, name, settings, env)
        except BaseException as exc:  # noqa: BLE001 - raised in the main thread below
            failed.append(exc)

    thread = threading.Thread(target=deploy, name="serve-deploy", daemon=True)
    thread.start()
    while thread.is_alive():
        if stop.wait(0.5):
            return False
    if failed:
        raise failed[0]
    return True


def _deploy(serve: Any, name: str, settings: ServeConfig, env: dict[str, str]) -> None:
    """Deploy the app and wait until every first replica is warm (a `UserError` when the
    replicas cannot start: the replicas' log has the traceback)."""
    ingress = serve.ingress(build_app)(VerticalsReplica)
    deployment = serve.deployment(ingress, name=name, **deployment_options(settings, env))
    try:
        serve.run(deployment.bind(), name=name, route_prefix="/", logging_config=QUIET)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise UserError(
            f"Ray Serve could not start {name}: {lines[-1] if lines else exc!r} "
            "(the replicas' log, under the Ray session's logs/serve, has the traceback)"
        ) from None


def _cpus_per_replica(settings: ServeConfig) -> float:
    """CPUs Ray reserves for each replica: `serve.model_threads` (1 when unset), shared
    out when the cluster has fewer for the replicas asked for, as uvicorn's workers share
    the cores, rather than leaving replicas waiting for cores forever."""
    import ray

    wanted = float(settings.model_threads or 1)
    most = settings.autoscaling.max or settings.replicas
    cpus = float(ray.cluster_resources().get("CPU", 0))
    if cpus <= 0 or wanted * most <= cpus:
        return wanted
    return math.floor(cpus / most * 100) / 100 or 0.01


def _scale(settings: ServeConfig) -> str:
    scaling = settings.autoscaling
    if scaling.min is None:
        return f"{settings.replicas} replica{'s' if settings.replicas != 1 else ''}"
    return (f"{scaling.min} to {scaling.max} replicas "
            f"(~{scaling.target_ongoing_requests:g} requests each)")  # fmt: skip


class StopSignals:
    """SIGINT and SIGTERM, while the block runs, note their name and set an event; the
    main thread only waits meanwhile (a handler that raised could land inside Ray's
    compiled code: a SystemError). After the block a second one acts as before: SIGINT a
    KeyboardInterrupt, SIGTERM the end of the process (Ray's own SIGTERM handler, replaced
    here, aborts with a stack dump)."""

    def __init__(self) -> None:
        self.name = ""
        self._event = threading.Event()
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)

    def _handle(self, signum: int, frame: object) -> None:
        self.name = self.name or signal.Signals(signum).name
        self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Whether a signal came, waiting up to `timeout` seconds (None: until one does)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._event.is_set():  # short waits: the main thread runs the handler
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                break
            self._event.wait(min(left, 1.0))
        return self._event.is_set()


def _stop(serve: Any, name: str, ours: bool) -> None:
    """Shut Serve down if this command started it, else delete only this app."""
    try:
        if ours:
            serve.shutdown()
        else:
            serve.delete(name)
    except Exception as exc:  # noqa: BLE001 - stopping anyway: Ray goes down after this
        log.warning("stopping Ray Serve: %s: %s", type(exc).__name__, exc)


def _serve_running() -> bool:
    """Whether Serve runs on this Ray already (a shared cluster's): then only this app
    is deleted at the end."""
    from ray.util import list_named_actors

    named = list_named_actors(all_namespaces=True)
    return any((a.get("name"), a.get("namespace")) == _CONTROLLER for a in named)


def _quiet_driver() -> None:
    """Ray Serve's messages in this process (started, deployed, shut down) at WARNING."""
    for name in ("ray.serve", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)


def free_port(host: str, port: int) -> int:
    """`port` once it is free on `host` (a `UserError` if taken, before Ray Serve's proxy
    fails with a wall of tracebacks), or a free one for `serve.port=0` (Serve needs a
    number)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the proxy binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(f"serve.host={host} serve.port={port}: {exc.strerror}") from None
        return int(sock.getsockname()[1])
