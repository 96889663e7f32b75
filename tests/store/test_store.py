"""The store on every backend: migrations produce exactly the declared tables; writes are atomic."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.exc import DBAPIError

from complai.app.workspace import Workspace
from complai.errors import InvalidInput
from complai.store import Store, metadata, normalise_url
from complai.store.tables import meta
from tests.conftest import PG_URL


def test_migrated_schema_matches_table_definitions(ws: Workspace) -> None:
    with ws.store.read() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_failed_write_rolls_back(ws: Workspace) -> None:
    with pytest.raises(RuntimeError), ws.store.write() as conn:
        conn.execute(insert(meta).values(key="half", value="written"))
        raise RuntimeError("boom")
    with ws.store.read() as conn:
        assert conn.execute(select(meta.c.value).where(meta.c.key == "half")).first() is None


def test_committed_write_is_visible(ws: Workspace) -> None:
    with ws.store.write() as conn:
        conn.execute(insert(meta).values(key="k", value="v"))
    with ws.store.read() as conn:
        assert conn.execute(select(meta.c.value).where(meta.c.key == "k")).scalar() == "v"


def test_migrate_is_idempotent(ws: Workspace) -> None:
    with ws.store.write() as conn:
        before, after = ws.store.migrate(conn)
    assert before == after == Store.head_revision()


def test_sqlite_pragmas(sqlite_ws: Workspace) -> None:
    with sqlite_ws.store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_normalise_url(url: str, expected: str) -> None:
    assert normalise_url(url) == expected


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url"])
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput):
        normalise_url(url)


@pytest.mark.skipif(PG_URL is None, reason="PostgreSQL tests run when COMPLAI_TEST_DATABASE_URL is set")
def test_a_connection_lost_while_idle_is_replaced_not_failed_on(pg_schema: str) -> None:
    """A pooled PostgreSQL connection idle past `ping_after_idle_s` is pinged at checkout and replaced if
    the server dropped it; one in steady use is handed out without a ping (so a dropped one fails once)."""
    store = Store(pg_schema)
    admin = create_engine(normalise_url(str(PG_URL)), isolation_level="AUTOCOMMIT")

    def backend_pid() -> int:
        with store.read() as conn:
            return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())

    def drop(pid: int) -> None:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()

    try:
        first = backend_pid()
        assert backend_pid() == first  # the pool hands the same connection back
        drop(first)
        store.ping_after_idle_s = 0.0  # every pooled connection counts as idle: pinged, and replaced
        second = backend_pid()
        assert second != first
        store.ping_after_idle_s = 3600.0  # in steady use: no ping, so a dropped connection fails once
        drop(second)
        with pytest.raises(DBAPIError):
            backend_pid()
        assert backend_pid() not in (first, second)  # the pool then replaced it
    finally:
        store.engine.dispose()
        admin.dispose()
