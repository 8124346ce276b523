"""The MLflow store behind runs and model versions: where it is, and one client for it.

By default the store is embedded: a SQLite file and an artifact folder under
`paths.tracking_dir` (the runs folder), created on first use, no server. `tracking.uri`
points at any MLflow tracking server (`http://...`) or database (`postgresql+psycopg://...`)
instead, with nothing else changed; `tracking=none` turns tracking off.

MLflow is imported only here, and only when a store is opened: `import mlflow` costs about
two seconds, which `verticals --help` and `verticals list` must not pay. MLflow's usage
telemetry is on by default; it is switched off before the first import, so tracking reaches
the network only when its URI says so.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from verticals.core.errors import UserError
from verticals.core.logs import get_logger

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = get_logger("tracking")
CHAMPION = "champion"
STORE_FILE = "mlflow.db"
ARTIFACTS = "artifacts"
_QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")


def model_name(vertical: str) -> str:
    """The registered model of a vertical's bundles."""
    return f"verticals-{vertical}"


@dataclass(frozen=True)
class Store:
    """Where runs and model versions are kept: an MLflow tracking URI, and for a database
    URI the folder its artifacts go to (a tracking server keeps its own)."""

    uri: str
    artifacts: str | None = None
    #: where bundles registered on a tracking server are downloaded to (`paths.cache_dir`)
    downloads: str | None = None

    @classmethod
    def of(cls, cfg: Any) -> Store | None:
        """The store a composed config names (`tracking.*`, `paths.tracking_dir`); None
        when tracking is off or the config has no `tracking` group (a hand-made config)."""
        tracking = cfg.get("tracking") if hasattr(cfg, "get") else None
        if tracking is None or not tracking.get("enabled", False):
            return None
        folder = Path(str(cfg.paths.tracking_dir)).expanduser().resolve()
        uri = tracking.get("uri") or f"sqlite:///{folder / STORE_FILE}"
        artifacts = tracking.get("artifacts") or (folder / ARTIFACTS).as_uri()
        downloads = Path(str(cfg.paths.cache_dir)).expanduser().resolve() / "registry"
        return cls(str(uri), str(artifacts) if is_database(str(uri)) else None, str(downloads))

    @property
    def embedded_file(self) -> Path | None:
        """The SQLite file of an embedded store (None for a server or another database)."""
        if not self.uri.startswith("sqlite:///"):
            return None
        return Path(self.uri.removeprefix("sqlite:///"))

    @property
    def is_server(self) -> bool:
        """A tracking server (http, Databricks): it keeps artifacts, and a registered
        bundle must be uploaded to it rather than named by a local path."""
        return not (self.uri.startswith("sqlite:") or is_database(self.uri))

    def exists(self) -> bool:
        """False for an embedded store not created yet: nothing to read, and asking must
        not create it (a server that follows a champion polls this)."""
        file = self.embedded_file
        return file is None or file.is_file()

    def client(self) -> MlflowClient:
        """An MLflow client of this store (one per process and store); the embedded
        store's folder is made on first use. A store that cannot be opened is a one-line
        `UserError` naming the URI."""
        return _client(self)

    def describe(self) -> str:
        """The URI without a password, for messages and logs."""
        parts = urlsplit(self.uri)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return parts._replace(netloc=netloc).geturl()
        return self.uri


def redacted(cfg: Any) -> Any:
    """`cfg` with the password in `tracking.uri` masked: runs and bundles carry their config,
    and a store's password must not travel with them."""
    tracking = cfg.get("tracking") if hasattr(cfg, "get") else None
    if not tracking or not tracking.get("uri"):
        return cfg
    copy = cfg.copy()
    copy.tracking.uri = Store(str(tracking.uri)).describe()
    return copy


def current_user() -> str:
    """Who runs the command, for the record of who promoted what."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def is_database(uri: str) -> bool:
    return urlsplit(uri).scheme.split("+")[0] in _DATABASES


def quiet_mlflow() -> None:
    """MLflow's telemetry off (unless the user chose otherwise), before it is imported:
    importing any part of MLflow starts its telemetry client."""
    for key, value in _QUIET.items():
        os.environ.setdefault(key, value)


quiet_mlflow()  # every path into MLflow in the suite imports this module first


@cache
def _client(store: Store) -> MlflowClient:
    quiet_mlflow()
    from mlflow import MlflowClient

    file = store.embedded_file
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
    try:
        if file is None:
            _reach(store.uri)
        with _creating(file):  # MlflowClient() itself opens, and so creates, the store
            client = MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
            client._tracking_client.store  # noqa: B018 - in case a later MLflow defers it
    except Exception as exc:  # noqa: BLE001 - MLflow's, or a driver's own (psycopg)
        raise UserError(
            f"cannot open the tracking store {store.describe()}: {_first_line(exc)}",
            hint="check tracking.uri, or turn tracking off with tracking=none",
        ) from None
    return client


@contextmanager
def _creating(file: Path | None) -> Iterator[None]:
    """One process at a time opens an embedded store: the first creates its tables, and
    the jobs of a sweep that start together (joblib, Ray tasks) must not all try."""
    if file is None:
        yield
        return
    import fcntl

    with open(file.with_name(file.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _reach(uri: str) -> None:
    """Reach a database or tracking server once, with a timeout: MLflow itself retries for
    minutes before it gives up on a server that is down."""
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https"):
        import urllib.request

        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10):
            return
    if not is_database(uri):
        return
    import sqlalchemy

    args = {"connect_timeout": 10} if uri.startswith("postgresql") else {}
    engine = sqlalchemy.create_engine(uri, connect_args=args, poolclass=sqlalchemy.NullPool)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def experiment_id(store: Store, name: str) -> str:
    """The id of experiment `name`, created when missing (its artifacts under the store's
    artifact folder, so nothing lands in the working directory's `mlruns/`)."""
    client = store.client()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = f"{store.artifacts.rstrip('/')}/{name}" if store.artifacts else None
    from mlflow.exceptions import MlflowException

    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:  # another process made it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)
