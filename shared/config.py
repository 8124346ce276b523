"""Structured configs for the parts of the Hydra tree that the core owns.

Each schema is stored in Hydra's ConfigStore as `<group>/schema`; the YAML options in
`conf/` extend it and list only what differs from it, so a default lives in one place.
An override with a typo or a value of the wrong type fails at once with Hydra's own message:
settings that take one of a few words are `StrEnum` fields (`trainer.device=cuad` is refused
while composing). Numeric ranges are checked by each schema's `__post_init__`, which
`check_config` runs on the composed config before any work starts.

OmegaConf hands enum fields over as enum members. They are `StrEnum`s, so they compare equal
to their words and print as them, but code that gives a setting to a library or to YAML/JSON
should pass `str(value)` (a run's saved config.yaml, read back, holds plain strings).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from verticals.core.errors import UserError


class Device(StrEnum):
    auto = "auto"  # CUDA when a GPU is visible, else CPU
    cpu = "cpu"
    cuda = "cuda"


class Precision(StrEnum):
    auto = "auto"  # bf16 (or fp16) on CUDA, fp32 on CPU; bf16 on CPU is opt-in
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class LogLevel(StrEnum):
    """uvicorn's log levels."""

    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"
    trace = "trace"


class Batching(StrEnum):
    """Whether a server gathers concurrent requests into one model call."""

    auto = "auto"  # when the vertical says its model runs much faster on batches (a GPU)
    on = "on"
    off = "off"


class LogInputs(StrEnum):
    """How much of each request's inputs the prediction log keeps."""

    full = "full"  # the records as sent
    hashed = "hashed"  # a hash per field value: joins and category drift, not the values
    none = "none"  # outputs only


class ConfigValueError(UserError, ValueError):
    """A setting outside its range. A `ValueError`, as `__post_init__` raises, and a
    `UserError`, so the CLI prints it as one line and exits 2."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"{key}={value!r}; expected {expected}")

    def under(self, prefix: str) -> ConfigValueError:
        """The same error with the group's path in front of the key (`model.learning_rate`)."""
        key = f"{prefix}.{self.key}" if prefix else self.key
        return ConfigValueError(key, self.value, self.expected)


def check_range(
    obj: Any,
    name: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> None:
    """Raise `ConfigValueError` unless `obj.<name>` is None or a number within the bounds."""
    value = getattr(obj, name)
    if value is None:
        return
    whole = isinstance(value, int) and not isinstance(value, bool)
    limits = ((">=", ge), (">", gt), ("<=", le), ("<", lt))
    bounds = " and ".join(f"{op} {bound:g}" for op, bound in limits if bound is not None)
    expected = f"{'a whole number' if whole else 'a number'} {bounds}".strip()
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigValueError(name, value, expected)
    if (
        (ge is not None and not value >= ge)
        or (gt is not None and not value > gt)
        or (le is not None and not value <= le)
        or (lt is not None and not value < lt)
        or value != value  # NaN passes no bound
    ):
        raise ConfigValueError(name, value, expected)


def check_ranges(obj: Any, names: str, **bounds: float) -> None:
    """`check_range` for each space-separated name in `names`, with the same bounds."""
    for name in names.split():
        check_range(obj, name, **bounds)


@dataclass
class TrainerConfig:
    device: Device = Device.auto
    precision: Precision = Precision.auto


@dataclass
class PathsConfig:
    """Relative paths resolve against the directory you run `verticals` from."""

    root_dir: str = "."
    runs_dir: str = "${paths.root_dir}/runs"
    bundles_dir: str = "${paths.root_dir}/bundles"
    cache_dir: str = "${paths.root_dir}/cache"  # generated demo data, preprocessing caches
    # the embedded tracking store: mlflow.db (runs, model versions) and artifacts/
    tracking_dir: str = "${paths.runs_dir}/mlflow"
    # the embedded prediction log: predictions.db (requests, feedback, monitor figures) and
    # files/ (kept input, output and outcome files, named by their sha256)
    log_dir: str = "${paths.root_dir}/predlog"
    # monitor reports: <vertical>/<time>/summary.md, report.html, figures.json, plots/
    monitor_dir: str = "${paths.root_dir}/monitoring"
    # hashed bearer tokens per vertical (`verticals token create <vertical>`)
    tokens_dir: str = "${paths.root_dir}/tokens"


@dataclass
class TrackingConfig:
    """Where runs and model versions are recorded (MLflow); `tracking=none` turns it off."""

    enabled: bool = True
    # null: the embedded SQLite store in paths.tracking_dir; or any MLflow tracking URI:
    # http://mlflow.example:5000, postgresql+psycopg://user@host/db, sqlite:////abs/path.db
    uri: str | None = None
    # where a database store puts run artifacts; null: paths.tracking_dir/artifacts
    artifacts: str | None = None
    experiment: str | None = None  # null: the vertical's name


@dataclass
class LogConfig:
    """The prediction log: every /predict and batch prediction, and the feedback on them."""

    enabled: bool = True
    # null: the embedded SQLite database paths.log_dir/predictions.db (WAL); or any
    # SQLAlchemy URL: postgresql+psycopg://user@host/db, sqlite:////abs/path.db
    url: str | None = None
    inputs: LogInputs = LogInputs.full
    drop: list[str] = field(default_factory=list)  # input fields never written
    # keep uploaded input files (content-addressed under paths.log_dir/files); their sha256
    # and size are logged either way
    keep_files: bool = False
    # how long a request may wait for its group's commit before the server answers 503
    commit_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        check_range(self, "commit_timeout_s", gt=0)


@dataclass
class LiveBound:
    """Bounds of one monitored figure (a live metric, a rate): outside them is a breach."""

    min: float | None = None
    max: float | None = None


@dataclass
class MonitorConfig:
    """What `verticals monitor` compares and where it draws the line (per vertical)."""

    since: str = "7d"  # the window: a duration (90m, 12h, 7d, 2w) or an ISO date
    psi_watch: float = 0.10
    psi_alert: float = 0.25  # above this a column has drifted: exit code 1
    # columns with a threshold of their own (name -> psi_alert), and columns not judged
    psi_alert_by_column: dict[str, float] = field(default_factory=dict)
    ignore: list[str] = field(default_factory=list)
    # fewer logged requests (or outcomes, for live metrics): figures shown, not judged
    min_rows: int = 30
    # a training reference of fewer rows: drift shown, not judged (PSI against a handful of
    # cases reads every new case as a shift)
    min_reference_rows: int = 10
    live: dict[str, LiveBound] = field(default_factory=dict)  # live metric -> bounds
    # columns judged by their live mean (a share, for a flag) instead of by PSI: a flag that
    # is never set in the reference (a customer the model never saw) has an unbounded PSI
    rates: dict[str, LiveBound] = field(default_factory=dict)
    max_rows: int = 200_000  # the newest requests of the window that are compared

    def __post_init__(self) -> None:
        check_ranges(self, "psi_watch psi_alert", gt=0)
        check_ranges(self, "min_rows min_reference_rows max_rows", ge=1)


class Goal(StrEnum):
    """Which way a metric is better."""

    max = "max"  # higher is better (AUC, NDCG, Dice)
    min = "min"  # lower is better (an error, Brier, a rate of misses)


@dataclass
class GuardConfig:
    """A metric a challenger may not be worse on by more than `tolerance`."""

    tolerance: float = 0.0
    goal: Goal = Goal.max

    def __post_init__(self) -> None:
        check_range(self, "tolerance", ge=0)


@dataclass
class RetrainConfig:
    """When `verticals retrain` builds a challenger, and when the challenger may take over
    (per vertical: conf/<vertical>/retrain/default.yaml)."""

    since: str | None = None  # feedback from this window only (90m, 7d, a date); null: all
    min_feedback: int = 50  # fewer usable outcomes: refuse, with a one-line message
    # the challenger must beat the champion's primary metric by this much on the holdout
    margin: float = 0.0
    guards: dict[str, GuardConfig] = field(default_factory=dict)  # metric -> tolerance
    promote: bool = True  # false: register the challenger and record the decision only
    # the newest share of fresh feedback goes to the holdout (never into training), so a
    # changed world is scored too; 0: the champion's holdout as it is
    holdout_share: float = 0.0
    bootstrap: int = 1000  # paired bootstrap resamples of the holdout; 0: no interval
    confidence: float = 0.95

    def __post_init__(self) -> None:
        check_range(self, "min_feedback", ge=1)
        check_range(self, "margin", ge=0)
        check_range(self, "holdout_share", ge=0, lt=1)
        check_range(self, "bootstrap", ge=0)
        check_range(self, "confidence", gt=0, lt=1)


@dataclass
class AutoscalingConfig:
    """Ray Serve's replica bounds (`cluster=ray*`): set `min` and `max` to scale between
    them on the requests each replica is working on; null: `serve.replicas`, fixed."""

    min: int | None = None
    max: int | None = None
    target_ongoing_requests: float = 2.0

    def __post_init__(self) -> None:
        check_ranges(self, "min", ge=0)
        check_ranges(self, "max", ge=1)
        check_range(self, "target_ongoing_requests", gt=0)
        if (self.min is None) != (self.max is None):
            raise ConfigValueError("max" if self.max is None else "min", None, "both bounds")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ConfigValueError("min", self.min, f"at most max ({self.max})")


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    # server processes: more requests/s (each loads the model; /metrics adds them all up)
    workers: int = 1
    log_level: LogLevel = LogLevel.info
    # micro-batching: requests arriving within batch_wait_ms share one model call, up to
    # max_batch inputs; auto: on where the vertical's model gains from it (a GPU)
    batching: Batching = Batching.auto
    max_batch: int = 16
    batch_wait_ms: float = 2.0
    # record bodies above this many KiB are scored in a process of their own (the table
    # path), so that /health and small requests keep answering; null: all in the server
    big_request_kib: int | None = 1024
    # OpenMP/BLAS threads per model call while serving (concurrent requests and workers use
    # the other cores); null: the libraries' own defaults (every core)
    model_threads: int | None = 1
    # a server that follows a model version (the registry's champion) asks for it this
    # often, and on SIGHUP, and swaps to it without dropping a request; null or 0: on SIGHUP
    reload_seconds: float | None = 5.0
    # -- security: who may call, and what one request may cost --
    # hashed bearer tokens, one per line (`verticals token create`); null: the vertical's
    # default file, paths.tokens_dir/<vertical>.tokens, when it exists
    tokens_file: str | None = None
    # serve without tokens on an address other than loopback (warned at start, in /metadata)
    allow_unauthenticated: bool = False
    max_body_mb: float = 256.0  # a request body (JSON or upload) larger than this: 413
    max_records: int = 200_000  # records in one request
    max_inflight: int = 64  # requests worked on at once; beyond: 503 with Retry-After
    require_signature: bool = False  # refuse a bundle whose manifest is not signed
    # the trusted public key (PEM) signatures are checked with; needed by require_signature
    public_key: str | None = None
    # the web console at /ui (Gradio, imported on the first visit): a page per vertical and
    # an operations tab, with the same tokens (README: The console)
    console: bool = True
    # -- on a Ray cluster (cluster=ray_local or ray): Ray Serve runs the same app --
    replicas: int = 1  # copies of the app behind one HTTP address
    autoscaling: AutoscalingConfig = field(default_factory=AutoscalingConfig)

    def __post_init__(self) -> None:
        if isinstance(self.autoscaling, dict):  # from JSON (a worker's environment)
            self.autoscaling = AutoscalingConfig(**self.autoscaling)
        check_range(self, "port", ge=0, le=65535)  # 0: any free port
        check_range(self, "replicas", ge=1)
        check_ranges(self, "workers max_batch big_request_kib model_threads", ge=1)
        check_ranges(self, "max_records max_inflight", ge=1)
        check_range(self, "max_body_mb", gt=0)
        check_range(self, "batch_wait_ms", ge=0, le=1000)
        check_range(self, "reload_seconds", ge=0)


class ClusterMode(StrEnum):
    none = "none"  # this process (and serve.workers processes): no Ray
    ray_local = "ray_local"  # an embedded Ray on this machine, started and stopped here
    ray = "ray"  # join a running Ray cluster at cluster.address


@dataclass
class ClusterConfig:
    """Where the heavy work runs: here, an embedded Ray, or a Ray cluster (`cluster=`)."""

    mode: ClusterMode = ClusterMode.none
    # ray: the cluster to join, "ray://head:10001" (Ray Client) or "head:6379" (GCS)
    address: str | None = None
    num_cpus: int | None = None  # ray_local: cores Ray may use; null: all of them
    num_gpus: int | None = None  # ray_local: GPUs Ray may use; null: all visible
    # ray_local: the address this Ray advertises and listens on; loopback (the default)
    # keeps every Ray process and connection on this machine; another address lets nodes
    # join it (`ray start --address=<host>:<port>`)
    host: str = "127.0.0.1"
    # training workers (Ray Train), batch-prediction actors
    workers: int = 2
    cpus_per_worker: float = 1.0
    # GPUs per training worker or actor; null: 1 when the cluster has GPUs, else 0
    gpus_per_worker: float | None = None
    # Ray's session files (logs, sockets, spilled objects); null: <paths.cache_dir>/ray
    temp_dir: str | None = None
    log_to_driver: bool = True  # workers' output shown here (Ray's own logs stay in files)

    def __post_init__(self) -> None:
        check_ranges(self, "workers num_cpus", ge=1)
        check_range(self, "num_gpus", ge=0)
        check_range(self, "cpus_per_worker", gt=0)
        check_range(self, "gpus_per_worker", ge=0)
        if self.mode == ClusterMode.ray and not self.address:
            raise ConfigValueError(
                "address", self.address, "the Ray cluster to join with cluster=ray, e.g. "
                "cluster.address=ray://head:10001 (or cluster=ray_local for one on this machine)"
            )  # fmt: skip


def store_schema(group: str, node: Any, name: str = "schema") -> None:
    """Register `node` as `<group>/<name>` so YAML options can extend it."""
    ConfigStore.instance().store(group=group, name=name, node=node)


def register_core_configs() -> None:
    store_schema("trainer", TrainerConfig)
    store_schema("paths", PathsConfig)
    store_schema("serve", ServeConfig)
    store_schema("tracking", TrackingConfig)
    store_schema("log", LogConfig)
    store_schema("monitor", MonitorConfig)
    store_schema("retrain", RetrainConfig)
    store_schema("cluster", ClusterConfig)


def check_config(cfg: DictConfig, prefix: str = "") -> None:
    """Run the range checks (`__post_init__`) of every structured node in `cfg`.

    OmegaConf checks types and enum words on every merge, but never builds the dataclass,
    so its `__post_init__` would not run: this builds each one from the composed values.
    A `ConfigValueError` comes out naming the full key (`model.learning_rate`). Values still
    missing (`???`) are left to the code that needs them, which says what to set.
    """
    for key in cfg:
        node = cfg._get_node(key)
        if not isinstance(node, DictConfig) or node._is_missing() or node._is_none():
            continue
        path = f"{prefix}.{key}" if prefix else str(key)
        cls = OmegaConf.get_type(node)
        if cls is not None and is_dataclass(cls) and hasattr(cls, "__post_init__"):
            values = {}
            for f in fields(cls):
                if f.init and f.name in node and not OmegaConf.is_missing(node, f.name):
                    try:
                        values[f.name] = _plain(node[f.name])
                    except OmegaConfBaseException:  # an interpolation to a value still missing
                        continue
            try:
                cls(**values)
            except ConfigValueError as exc:
                raise exc.under(path) from None
            except ValueError as exc:  # a schema's own check, without `check_range`
                raise UserError(f"{path}: {exc}") from None
        check_config(node, path)


def _plain(value: Any) -> Any:
    """Lists and dicts as Python's own, so `__post_init__` sees what a dataclass user would."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def require_int(value: Any, key: str, minimum: int | None = None) -> int:
    """`value` of a top-level key (seed, batch_size) as an int, or a `UserError` naming it."""
    try:
        number = int(value)
        if isinstance(value, float | bool) or (isinstance(value, str) and not value.strip()):
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"{key}={value!r}; expected a whole number") from None
    if minimum is not None and number < minimum:
        raise UserError(f"{key}={number}; expected at least {minimum}")
    return number
