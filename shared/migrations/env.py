"""Alembic's entry for the prediction log: run on the connection the suite hands over.

The suite calls Alembic from Python (`predlog.migrate`), never through an alembic.ini, so
there is no URL to read here: `config.attributes["connection"]` is the open connection.
"""

from __future__ import annotations

from alembic import context

from verticals.core.predlog_tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE the SQLite way
    version_table="predlog_alembic_version",
)
with context.begin_transaction():
    context.run_migrations()
