"""The PostgreSQL fixture itself: a fresh database per test, a server on loopback only."""

from __future__ import annotations

import os

import pytest

from .postgres import URL_ENV, postgres_db, postgres_url  # noqa: F401  (fixtures)

sa = pytest.importorskip("sqlalchemy")


def test_fresh_database_round_trip(postgres_db: str) -> None:  # noqa: F811
    engine = sa.create_engine(postgres_db)
    try:
        with engine.begin() as conn:
            assert not sa.inspect(conn).get_table_names()  # nothing left by another test
            conn.execute(sa.text("CREATE TABLE runs (id serial PRIMARY KEY, name text NOT NULL)"))
            insert = sa.text("INSERT INTO runs (name) VALUES (:a), (:b)")
            conn.execute(insert, {"a": "alpha", "b": "béta"})
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, name FROM runs ORDER BY id")).all()
            assert [tuple(row) for row in rows] == [(1, "alpha"), (2, "béta")]
            database = conn.execute(sa.text("SELECT current_database()")).scalar_one()
            assert database == engine.url.database
    finally:
        engine.dispose()


def test_separate_databases_on_a_loopback_only_server(
    postgres_url: str,  # noqa: F811
    postgres_db: str,  # noqa: F811
) -> None:
    assert sa.engine.make_url(postgres_db).database != sa.engine.make_url(postgres_url).database
    engine = sa.create_engine(postgres_db)
    try:
        with engine.connect() as conn:
            assert not sa.inspect(conn).get_table_names()  # the other test's table is not here
            if not os.environ.get(URL_ENV):  # the fixture started this server
                assert engine.url.host == "127.0.0.1"
                listen = conn.execute(sa.text("SHOW listen_addresses")).scalar_one()
                assert listen == "127.0.0.1"
    finally:
        engine.dispose()
