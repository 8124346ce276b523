"""The prediction log's tables, as the newest migration leaves them (SQLAlchemy Core).

The migrations in `migrations/versions/` say how a database gets here; these definitions
are what the code reads and writes. Times are UTC, without a zone (SQLite has none).

- `predictions`: one row per answered `/predict`, per `verticals predict` batch (source
  "batch") and per input of that batch (source "row", `batch_id` naming it). `request_id`
  is what clients and feedback use; a client may reuse one, so the key is `id` and the
  newest row of a request id is the one feedback applies to.
- `feedback`: what really happened after a prediction, one row per prediction; a second
  outcome replaces the first and counts a revision.
- `monitor_runs`: every `verticals monitor` result, which servers expose as gauges.
- `spool_offsets`: how many bytes of each server's spool file (`spool`) are in
  `predictions`, moved in the same transaction as the rows, so a crash never moves a row
  twice or not at all.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

# SQLite makes only an INTEGER PRIMARY KEY an auto-increment rowid
Key = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

predictions = Table(
    "predictions",
    metadata,
    Column("id", Key, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False, index=True),
    Column("vertical", String(64), nullable=False),
    Column("model_version", String(255), nullable=False),
    Column("created", DateTime(), nullable=False),
    Column("latency_ms", Float),
    Column("source", String(16), nullable=False),  # api | batch | row
    Column("batch_id", String(128)),
    Column("n_inputs", Integer, nullable=False),
    Column("inputs", Text),  # JSON: records, or a file's name/size/statistics
    Column("outputs", Text),  # JSON: answer rows, or a file's summary
    Column("input_name", Text),
    Column("input_sha256", String(64)),
    Column("input_size", BigInteger),
    Column("output_sha256", String(64)),
    Index("ix_predictions_vertical_created", "vertical", "created"),
    Index(  # answers of /predict have none: left out, one index page fewer per answer
        "ix_predictions_batch_id",
        "batch_id",
        sqlite_where=text("batch_id IS NOT NULL"),
        postgresql_where=text("batch_id IS NOT NULL"),
    ),  # fmt: skip
)

feedback = Table(
    "feedback",
    metadata,
    Column(
        "prediction_id", Key, ForeignKey("predictions.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("request_id", String(128), nullable=False, index=True),
    Column("vertical", String(64), nullable=False),
    Column("received", DateTime(), nullable=False),
    Column("observed_at", DateTime()),
    Column("outcome", Text, nullable=False),  # JSON, as the vertical's outcome schema dumps it
    Column("outcome_sha256", String(64)),  # a file outcome (a corrected mask), kept by content
    Column("revision", Integer, nullable=False),  # 1, then 2 when a second outcome replaced it
)

monitor_runs = Table(
    "monitor_runs",
    metadata,
    Column("id", Key, primary_key=True, autoincrement=True),
    Column("vertical", String(64), nullable=False),
    Column("model_version", String(255), nullable=False),
    Column("created", DateTime(), nullable=False),
    Column("window_start", DateTime()),
    Column("rows", Integer, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("figures", Text, nullable=False),  # JSON: every figure, threshold and breach
    Index("ix_monitor_runs_vertical_created", "vertical", "created"),
)

spool_offsets = Table(
    "spool_offsets",
    metadata,
    Column("spool", String(255), primary_key=True),
    Column("offset", BigInteger, nullable=False),
)
