"""How far each server's spool file has been moved into the log; batch rows indexed alone.

Answers of /predict have no batch id: a partial index leaves them out, one index page
fewer written per answer.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


BATCHES = sa.text("batch_id IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "spool_offsets",
        sa.Column("spool", sa.String(255), primary_key=True),
        sa.Column("offset", sa.BigInteger(), nullable=False),
    )
    op.drop_index("ix_predictions_batch_id", table_name="predictions")
    op.create_index(
        "ix_predictions_batch_id", "predictions", ["batch_id"],
        sqlite_where=BATCHES, postgresql_where=BATCHES,
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_predictions_batch_id", table_name="predictions")
    op.create_index("ix_predictions_batch_id", "predictions", ["batch_id"])
    op.drop_table("spool_offsets")
