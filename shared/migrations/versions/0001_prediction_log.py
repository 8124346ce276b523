"""The prediction log: predictions, feedback and monitor runs.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Key = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", Key, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("vertical", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(255), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("latency_ms", sa.Float()),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("batch_id", sa.String(128)),
        sa.Column("n_inputs", sa.Integer(), nullable=False),
        sa.Column("inputs", sa.Text()),
        sa.Column("outputs", sa.Text()),
        sa.Column("input_name", sa.Text()),
        sa.Column("input_sha256", sa.String(64)),
        sa.Column("input_size", sa.BigInteger()),
        sa.Column("output_sha256", sa.String(64)),
    )
    op.create_index("ix_predictions_request_id", "predictions", ["request_id"])
    op.create_index("ix_predictions_batch_id", "predictions", ["batch_id"])
    op.create_index("ix_predictions_vertical_created", "predictions", ["vertical", "created"])
    op.create_table(
        "feedback",
        sa.Column(
            "prediction_id",
            Key,
            sa.ForeignKey("predictions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("vertical", sa.String(64), nullable=False),
        sa.Column("received", sa.DateTime(), nullable=False),
        sa.Column("observed_at", sa.DateTime()),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("outcome_sha256", sa.String(64)),
        sa.Column("revision", sa.Integer(), nullable=False),
    )
    op.create_index("ix_feedback_request_id", "feedback", ["request_id"])
    op.create_table(
        "monitor_runs",
        sa.Column("id", Key, primary_key=True, autoincrement=True),
        sa.Column("vertical", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(255), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("window_start", sa.DateTime()),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("figures", sa.Text(), nullable=False),
    )
    op.create_index("ix_monitor_runs_vertical_created", "monitor_runs", ["vertical", "created"])


def downgrade() -> None:
    op.drop_table("monitor_runs")
    op.drop_table("feedback")
    op.drop_table("predictions")
