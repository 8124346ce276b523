"""The prediction log: what each deployed model saw and said, and what really happened.

Every `/predict` answer and every `verticals predict` batch is written here, through
SQLAlchemy, to an embedded SQLite database (WAL) in `paths.log_dir`, or to any database
`log.url` names (PostgreSQL: `postgresql+psycopg://...`). Alembic migrates the schema when
a log is opened, so a newer suite upgrades an existing log in place. Feedback (outcomes
keyed by request id) and monitor results live in the same database; kept files (inputs
with `log.keep_files`, output files a vertical needs, corrected outcomes) in a
content-addressed folder beside it.

Servers answer only once their row is safe: with the embedded log, appended to the
server's spool file, which a thread moves into SQLite in batches (`spool`); with a
database server, committed through a `GroupWriter` (one commit for many concurrent
requests). Either way a row survives the server being killed (SQLite runs with
`synchronous=NORMAL` in WAL mode; only a power cut can take the last rows). Readers of the
log move every spool first, a killed server's too.
"""

from __future__ import annotations

import hashlib
import json
import logging

try:
    import fcntl  # processes opening one embedded log take turns to migrate it
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
import os
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from pydantic_core import to_json

from verticals.core import predlog_tables as tables
from verticals.core.content_store import ContentStore
from verticals.core.contract import Logged
from verticals.core.errors import UserError
from verticals.core.group_commit import GroupWriter
from verticals.core.logs import get_logger
from verticals.core.spool import Spool, move_all, spool_folder

log = get_logger("predlog")
LOG_ENV = "VERTICALS_LOG"  # the log settings as JSON, for server worker processes
DB_FILE = "predictions.db"
FILES = "files"
VERSION_TABLE = "predlog_alembic_version"
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class LogUnavailable(Exception):
    """The log could not take a row: the prediction is not answered (it would be unlogged)."""


@dataclass(frozen=True)
class LogSettings:
    """Where the log is and what it keeps (`log.*`, resolved against `paths.log_dir`)."""

    url: str
    files_dir: str
    inputs: str = "full"  # full | hashed | none
    drop: tuple[str, ...] = ()
    keep_files: bool = False
    commit_timeout_s: float = 10.0

    @classmethod
    def of(cls, cfg: Any) -> LogSettings | None:
        """The settings of a composed config; None when `log.enabled=false` or absent."""
        node = cfg.get("log") if hasattr(cfg, "get") else None
        if not node or not node.get("enabled", True):
            return None
        folder = Path(cfg.paths.log_dir).resolve()
        url = str(node.url) if node.get("url") else f"sqlite:///{folder / DB_FILE}"
        return cls(
            url=url,
            files_dir=str(folder / FILES),
            inputs=str(node.get("inputs", "full")),
            drop=tuple(str(f) for f in node.get("drop") or ()),
            keep_files=bool(node.get("keep_files", False)),
            commit_timeout_s=float(node.get("commit_timeout_s", 10.0)),
        )

    @classmethod
    def default(cls, folder: str | Path = "predlog") -> LogSettings:
        """The embedded log in `folder`."""
        folder = Path(folder).resolve()
        return cls(url=f"sqlite:///{folder / DB_FILE}", files_dir=str(folder / FILES))

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str) -> LogSettings:
        given = json.loads(text)
        given["drop"] = tuple(given.get("drop") or ())
        return cls(**given)

    @property
    def embedded_file(self) -> Path | None:
        """The SQLite file of a `sqlite:///` URL (None for a server database)."""
        if not self.url.startswith("sqlite:///"):
            return None
        return Path(self.url.removeprefix("sqlite:///"))

    def describe(self) -> str:
        """The URL without its password, for messages."""
        parts = urlsplit(self.url)
        if parts.password:
            return parts._replace(
                netloc=parts.netloc.replace(f":{parts.password}@", ":***@")
            ).geturl()
        return self.url


def settings_from_env(migrated: bool = False) -> LogSettings | None:
    """The log of a server started without a config (a bundle's `serve.py`, a worker):
    `VERTICALS_LOG` (JSON settings, as `verticals serve` passes them to its workers; `off`:
    no log), else `VERTICALS_LOG_URL` (a database) or the embedded log in
    `VERTICALS_LOG_DIR` (default: ./predlog)."""
    given = os.environ.get(LOG_ENV, "").strip()
    if given.lower() in ("off", "false", "0", "none"):
        return None
    if given:
        return LogSettings.from_env(given)
    folder = Path(os.environ.get("VERTICALS_LOG_DIR") or "predlog").resolve()
    url = os.environ.get("VERTICALS_LOG_URL") or f"sqlite:///{folder / DB_FILE}"
    return LogSettings(url=url, files_dir=str(folder / FILES))


def utcnow() -> datetime:
    """Now in UTC, without a zone: how the log stores times."""
    return datetime.now(UTC).replace(tzinfo=None)


_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any, key: str) -> float:
    """Seconds of a duration (`30s`, `90m`, `12h`, `1d`, `2w`); `UserError` names `key`."""
    match = _SPAN.match(str(value))
    if not match:
        raise UserError(f"{key}={value!r}; expected a duration like 30m, 1h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_since(value: Any, key: str = "since") -> datetime | None:
    """A point in time from a duration back from now (`90m`, `12h`, `7d`, `2w`) or an ISO
    date/time (UTC when it has no zone); None for null/empty. `UserError` names `key`."""
    if value is None or str(value).strip() in ("", "null", "None"):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
    text = str(value)
    match = _SPAN.match(text)
    if match:
        return utcnow() - timedelta(seconds=parse_duration(text, key))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"{key}={text!r}; expected a duration like 90m, 12h, 7d, 2w or a date like 2026-11-01"
        ) from None
    return when if when.tzinfo is None else when.astimezone(UTC).replace(tzinfo=None)


def value_hash(name: str, value: Any) -> str | None:
    """A field value's stand-in under `log.inputs=hashed`: equal values hash equal (joins,
    category counts), the value itself is not kept. None stays None."""
    if value is None:
        return None
    return hashlib.sha256(f"{name}\x00{value}".encode()).hexdigest()[:16]


def private_records(
    records: list[dict[str, Any]], inputs: str, drop: Iterable[str] = ()
) -> list[dict[str, Any]] | None:
    """Records as the log keeps them under `log.inputs` and `log.drop`."""
    if inputs == "none":
        return None
    dropped = set(drop)
    if dropped:
        records = [{k: v for k, v in r.items() if k not in dropped} for r in records]
    if inputs == "hashed":
        records = [{k: value_hash(k, v) for k, v in r.items()} for r in records]
    return records


@cache
def _engine(url: str) -> sa.Engine:
    """One engine per database and process (its pool is shared by every log object)."""
    if url.startswith("sqlite"):
        file = url.removeprefix("sqlite:///")
        if file and file != ":memory:":
            Path(file).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    args = {"connect_timeout": 10} if url.startswith("postgresql") else {}
    return sa.create_engine(url, connect_args=args, pool_pre_ping=True)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    """WAL: readers never block the writer; NORMAL: a commit is durable against a killed
    process (not a power cut) without an fsync per commit; a writer waits for another
    process's commit instead of failing."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _quiet_alembic() -> None:
    """Alembic logs its plugins' set-up at INFO each time it is imported or run."""
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _alembic_config() -> Any:
    _quiet_alembic()
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory.from_config(_alembic_config()).get_current_head())


def current_revision(engine: sa.Engine) -> str | None:
    _quiet_alembic()
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()


def migrate(engine: sa.Engine) -> bool:
    """Bring the log's schema to the newest revision (Alembic); True if anything ran."""
    head = head_revision()
    if current_revision(engine) == head:
        return False
    from alembic import command

    config = _alembic_config()
    with _migration_lock(engine):
        if current_revision(engine) == head:  # another process migrated it meanwhile
            return False
        _upgrade(engine, config, command, head)
    log.info("prediction log %s: schema at revision %s", _masked(engine), head)
    return True


def _upgrade(engine: sa.Engine, config: Any, command: Any, head: str) -> None:
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except sa.exc.DBAPIError:
        if current_revision(engine) != head:  # not another process migrating at once
            raise


@contextmanager
def _migration_lock(engine: sa.Engine) -> Iterator[None]:
    """One process at a time migrates an embedded log (SQLite runs each DDL statement on
    its own: two at once fail with "table already exists"); a server database takes its
    own locks."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or fcntl is None:
        yield
        return
    with open(f"{database}.migrate-lock", "a") as lock:  # noqa: PTH123
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _masked(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


class PredictionLog:
    """One prediction log: write predictions and feedback, read them back, prune, export.

    `migrate=False` (server worker processes) expects the schema to be current, which the
    parent process saw to: workers starting together must not all run migrations.
    """

    def __init__(self, settings: LogSettings, migrate_schema: bool = True) -> None:
        self.settings = settings
        self.engine = _engine(settings.url)
        self.files = ContentStore(settings.files_dir)
        try:
            if migrate_schema:
                migrate(self.engine)
            elif current_revision(self.engine) != head_revision():
                raise UserError(f"the prediction log {settings.describe()} is not migrated")
        except sa.exc.SQLAlchemyError as exc:
            raise UserError(
                f"cannot open the prediction log {settings.describe()}: {_first_line(exc)}",
                hint="check log.url, or turn the log off with log.enabled=false",
            ) from None
        self._writer: GroupWriter | None = None
        self._spool: Spool | None = None
        self._embedded = settings.embedded_file
        self._lock = threading.Lock()

    # -- writing ------------------------------------------------------------------------

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(tables.predictions.insert(), rows)

    @property
    def writer(self) -> GroupWriter:
        with self._lock:
            if self._writer is None:
                self._writer = GroupWriter(self._insert)
            return self._writer

    @property
    def spool(self) -> Spool | None:
        """This process's spool of the embedded log (None for a database server)."""
        if self._spool is not None or self._embedded is None:
            return self._spool
        file = self._embedded
        with self._lock:
            if self._spool is None:
                self._spool = Spool(spool_folder(file), file)
            return self._spool

    def sync(self, wait: bool = True) -> int:
        """Move every server's spool into the log (readers call this first: `wait` for a
        spool another process is moving); rows moved. `LogUnavailable` if it fails."""
        if self._embedded is None or not spool_folder(self._embedded).is_dir():
            return 0
        try:
            raw = self.engine.raw_connection()
            try:
                return move_all(spool_folder(self._embedded), raw.driver_connection, wait)
            finally:
                raw.close()
        except (sa.exc.SQLAlchemyError, OSError, ValueError) as exc:
            raise LogUnavailable(f"the prediction log's spools cannot be moved: {exc}") from None
        except Exception as exc:  # the driver's own errors (sqlite3.OperationalError)
            if type(exc).__module__.startswith("sqlite3"):
                raise LogUnavailable(
                    f"the prediction log's spools cannot be moved: {exc}"
                ) from None
            raise

    async def write(self, row: dict[str, Any]) -> None:
        """Log one prediction and return once it is safe: in the spool (embedded log) or
        committed with other requests' rows (a database server)."""
        spool = self.spool
        try:
            if spool is not None:
                spool.append(row)
                return
            await self.writer.put(row, self.settings.commit_timeout_s)
        except TimeoutError:
            raise LogUnavailable(
                f"the prediction log did not commit within {self.settings.commit_timeout_s:g} s"
            ) from None
        except Exception as exc:  # noqa: BLE001 - the database's own error, said in one line
            raise LogUnavailable(f"the prediction log failed: {_first_line(exc)}") from None

    def write_now(self, rows: list[dict[str, Any]], chunk: int = 20_000) -> None:
        """Log rows from a command (a batch): in transactions of `chunk` rows."""
        for start in range(0, len(rows), chunk):
            self._insert(rows[start : start + chunk])

    def delete_batch(self, batch_id: str) -> None:
        """Remove a batch that failed before its output was written."""
        p = tables.predictions
        with self.engine.begin() as conn:
            conn.execute(p.delete().where(p.c.batch_id == batch_id))

    def inputs_json(self, records: list[dict[str, Any]]) -> bytes | None:
        """A request's records as the log keeps them (`log.inputs`, `log.drop`), as JSON."""
        s = self.settings
        kept = private_records(records, s.inputs, s.drop)
        return None if kept is None else to_json(kept)

    def keep(self, data: bytes, name: str, sha256: str | None = None) -> str:
        """Store a file by content; its sha256."""
        return self.files.put(data, name, sha256)

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            if self._spool is not None:
                raw = self.engine.raw_connection()
                try:
                    self._spool.close(raw.driver_connection)
                finally:
                    raw.close()
                self._spool = None

    # -- feedback -----------------------------------------------------------------------

    def find(self, vertical: str, request_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The newest logged prediction of each request id that exists (answered ones only);
        spools are moved first when one is missing (it may have been answered just now)."""
        ids = sorted(set(request_ids))
        found = self._find(vertical, ids)
        if len(found) < len(ids) and self._embedded is not None:
            self.sync(wait=True)  # an answer still in a spool (this server's or another's)
            found = self._find(vertical, ids)
        return found

    def _find(self, vertical: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        p = tables.predictions
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                query = (
                    sa.select(p)
                    .where(
                        p.c.vertical == vertical, p.c.request_id.in_(part), p.c.source != "batch"
                    )
                    .order_by(p.c.id)
                )
                for row in conn.execute(query).mappings():
                    found[row["request_id"]] = dict(row)  # ordered by id: the newest wins
        return found

    def store_feedback(self, vertical: str, outcomes: list[Outcome]) -> list[bool]:
        """Store outcomes of logged predictions in one transaction; for each, whether it
        replaced an earlier one. Raises `UnknownRequests` (nothing stored) for ids the log
        does not have."""
        found = self.find(vertical, (o.request_id for o in outcomes))
        missing = [o.request_id for o in outcomes if o.request_id not in found]
        if missing:
            raise UnknownRequests(missing)
        received = utcnow()
        replaced: list[bool] = []
        with self.engine.begin() as conn:
            for outcome in outcomes:
                values = {
                    "prediction_id": found[outcome.request_id]["id"],
                    "request_id": outcome.request_id, "vertical": vertical,
                    "received": received, "observed_at": outcome.observed_at,
                    "outcome": to_json(outcome.outcome).decode(),
                    "outcome_sha256": outcome.file_sha256,
                }  # fmt: skip
                replaced.append(_upsert_feedback(conn, values) > 1)
        return replaced

    # -- reading ------------------------------------------------------------------------

    def _window(
        self,
        vertical: str,
        since: datetime | None = None,
        until: datetime | None = None,
        version: str | None = None,
        outcomes_only: bool = False,
    ) -> sa.Select:
        p, f = tables.predictions, tables.feedback
        join = p.join(f, f.c.prediction_id == p.c.id, isouter=not outcomes_only)
        query = sa.select(
            p,
            f.c.received.label("feedback_received"),
            f.c.observed_at,
            f.c.outcome,
            f.c.outcome_sha256,
            f.c.revision.label("feedback_revision"),
        ).select_from(join)
        query = query.where(p.c.vertical == vertical, p.c.source != "batch")
        if since is not None:
            query = query.where(p.c.created >= since)
        if until is not None:
            query = query.where(p.c.created < until)
        if version is not None:
            query = query.where(p.c.model_version == version)
        return query.order_by(p.c.id)

    def entries(
        self,
        vertical: str,
        since: datetime | None = None,
        until: datetime | None = None,
        version: str | None = None,
        outcomes_only: bool = False,
        limit: int | None = None,
    ) -> list[Logged]:
        """The logged predictions of a window as the verticals read them (newest `limit`)."""
        self.sync()
        query = self._window(vertical, since, until, version, outcomes_only)
        if limit is not None:
            p = tables.predictions
            query = query.order_by(None).order_by(p.c.created.desc(), p.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = list(conn.execute(query).mappings())
        if limit is not None:
            rows.reverse()
        return [self._entry(row) for row in rows]

    def _entry(self, row: Any) -> Logged:
        files = {}
        for key, column in (("input", "input_sha256"), ("output", "output_sha256"),
                            ("outcome", "outcome_sha256")):  # fmt: skip
            path = self.files.path(row[column])
            if path is not None:
                files[key] = path
        outputs = json.loads(row["outputs"]) if row["outputs"] else None
        if isinstance(outputs, dict) and "predictions" in outputs and "model_version" in outputs:
            outputs = outputs["predictions"]  # a record answer as it was sent
        return Logged(
            request_id=row["request_id"],
            inputs=json.loads(row["inputs"]) if row["inputs"] else None,
            outputs=outputs,
            outcome=json.loads(row["outcome"]) if row["outcome"] else None,
            observed_at=row["observed_at"],
            files=files,
            created=row["created"],
            model_version=row["model_version"],
        )

    def counts(self, vertical: str, since: datetime | None = None) -> dict[str, int]:
        """Predictions and outcomes of a window."""
        self.sync()
        p, f = tables.predictions, tables.feedback
        where = [p.c.vertical == vertical, p.c.source != "batch"]
        if since is not None:
            where.append(p.c.created >= since)
        with self.engine.connect() as conn:
            predictions = conn.scalar(sa.select(sa.func.count()).select_from(p).where(*where))
            outcomes = conn.scalar(
                sa.select(sa.func.count())
                .select_from(p.join(f, f.c.prediction_id == p.c.id))
                .where(*where)
            )
        return {"predictions": int(predictions or 0), "outcomes": int(outcomes or 0)}

    def table(self, vertical: str, since: datetime | None = None) -> Iterator[Any]:
        """The window's predictions joined with their feedback, as a pandas frame per
        50,000 rows (export writes them one after another)."""
        import pandas as pd

        self.sync()
        query = self._window(vertical, since)
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(query)
            while True:
                part = result.fetchmany(50_000)
                if not part:
                    return
                yield _typed(pd.DataFrame(part, columns=list(result.keys())))

    def prune(self, vertical: str, before: datetime) -> tuple[int, int]:
        """Delete the vertical's predictions (and their feedback) logged before `before`,
        then the kept files no prediction or feedback names any more: (rows, files)."""
        self.sync()
        p, f = tables.predictions, tables.feedback
        old = sa.select(p.c.id).where(p.c.vertical == vertical, p.c.created < before)
        with self.engine.begin() as conn:
            conn.execute(f.delete().where(f.c.prediction_id.in_(old)))
            rows = conn.execute(p.delete().where(p.c.vertical == vertical, p.c.created < before))
            deleted = int(rows.rowcount or 0)
        removed = 0
        if self.files.root.is_dir():
            with self.engine.connect() as conn:
                keep: set[str] = set()
                for column in (p.c.input_sha256, p.c.output_sha256, f.c.outcome_sha256):
                    keep.update(v for v in conn.scalars(sa.select(column).distinct()) if v)
            removed = self.files.remove_except(keep)
        return deleted, removed

    # -- monitor results ----------------------------------------------------------------

    def save_monitor(self, vertical: str, version: str, since: datetime | None, rows: int,
                     ok: bool, figures: dict[str, Any]) -> None:  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(
                tables.monitor_runs.insert().values(
                    vertical=vertical,
                    model_version=version,
                    created=utcnow(),
                    window_start=since,
                    rows=rows,
                    ok=ok,
                    figures=json.dumps(figures, default=str, allow_nan=True),
                )  # fmt: skip
            )

    def latest_monitor(self, vertical: str) -> dict[str, Any] | None:
        m = tables.monitor_runs
        query = sa.select(m).where(m.c.vertical == vertical).order_by(m.c.id.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            return None
        return {**dict(row), "figures": json.loads(row["figures"])}


_WHOLE = ("id", "n_inputs", "input_size", "feedback_revision")
_TIMES = ("created", "feedback_received", "observed_at")
_REAL = ("latency_ms",)


def _typed(frame: Any) -> Any:
    """One type per column in every part of an export (a column empty in the first 50,000
    rows must not be typed "null", which the next part's values cannot be written as)."""
    import pandas as pd

    for column in frame.columns:
        if column in _WHOLE:
            frame[column] = pd.to_numeric(frame[column]).astype("Int64")
        elif column in _TIMES:
            frame[column] = pd.to_datetime(frame[column]).astype("datetime64[us]")
        elif column in _REAL:
            frame[column] = pd.to_numeric(frame[column]).astype(float)
        else:
            frame[column] = frame[column].astype("string")
    return frame


def _upsert_feedback(conn: sa.Connection, values: dict[str, Any]) -> int:
    """Insert an outcome, or replace the one there and count a revision, in one statement
    (two outcomes of one request arriving together must not race); its revision."""
    f = tables.feedback
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(f).values(**values, revision=1)
    update = {k: stmt.excluded[k] for k in values if k != "prediction_id"}
    stmt = stmt.on_conflict_do_update(
        index_elements=[f.c.prediction_id], set_={**update, "revision": f.c.revision + 1}
    ).returning(f.c.revision)
    return int(conn.execute(stmt).scalar_one())


@dataclass
class Outcome:
    """One validated outcome, ready to store."""

    request_id: str
    outcome: dict[str, Any]
    observed_at: datetime | None = None
    file_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class UnknownRequests(UserError):
    """Outcomes for request ids the log does not have (HTTP 404)."""

    def __init__(self, request_ids: list[str]) -> None:
        self.request_ids = request_ids
        shown = ", ".join(repr(r[:64]) for r in request_ids[:5])
        more = f" and {len(request_ids) - 5} more" if len(request_ids) > 5 else ""
        super().__init__(f"no logged prediction has request id {shown}{more}")


def prediction_row(
    request_id: str,
    vertical: str,
    model_version: str,
    *,
    source: str = "api",
    n_inputs: int = 1,
    inputs: str | None = None,
    outputs: str | None = None,
    latency_ms: float | None = None,
    batch_id: str | None = None,
    input_name: str | None = None,
    input_sha256: str | None = None,
    input_size: int | None = None,
    output_sha256: str | None = None,
    created: datetime | None = None,
) -> dict[str, Any]:
    """A `predictions` row with every column (an executemany wants the same keys in each)."""
    return {
        "request_id": request_id, "vertical": vertical, "model_version": model_version,
        "created": created or utcnow(), "latency_ms": latency_ms, "source": source,
        "batch_id": batch_id, "n_inputs": n_inputs, "inputs": inputs, "outputs": outputs,
        "input_name": input_name, "input_sha256": input_sha256, "input_size": input_size,
        "output_sha256": output_sha256,
    }  # fmt: skip


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
