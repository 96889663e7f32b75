"""Shared fixtures: a workspace per test on each database backend the run has.

SQLite always; PostgreSQL when COMPLAI_TEST_DATABASE_URL is set (CI sets it). Each PostgreSQL test
gets its own schema in that database (search_path), dropped afterwards, so tests never share state.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, make_url, text

from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.store.engine import normalise_url

PG_URL = os.environ.get("COMPLAI_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def _pg_schema_url(schema: str) -> str:
    assert PG_URL is not None
    base = normalise_url(PG_URL)
    parsed = make_url(base)
    if parsed.password is not None:  # a workspace never stores a password: libpq takes it from PGPASSWORD
        os.environ.setdefault("PGPASSWORD", str(parsed.password))
        base = parsed._replace(password=None).render_as_string(hide_password=False)
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture
def pg_schema_factory() -> Iterator[Callable[[], str]]:
    """Makes fresh PostgreSQL schemas (URLs whose search_path is the schema); drops them afterwards."""
    assert PG_URL is not None
    admin = create_engine(normalise_url(PG_URL), isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def make() -> str:
        schema = f"t_{uuid.uuid4().hex[:16]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        made.append(schema)
        return _pg_schema_url(schema)

    try:
        yield make
    finally:
        with admin.connect() as conn:
            for schema in made:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_schema(pg_schema_factory: Callable[[], str]) -> str:
    """A fresh PostgreSQL schema's URL."""
    return pg_schema_factory()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """None for SQLite (the workspace default), a per-test schema URL for PostgreSQL."""
    if backend == "sqlite":
        return None
    return request.getfixturevalue("pg_schema")


@pytest.fixture
def another_database_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """A second, empty database on the same backend (None: SQLite in the target workspace)."""
    if backend == "sqlite":
        return None
    return request.getfixturevalue("pg_schema_factory")()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new SQLite workspace as Workspace.init leaves it at the test clock's start, made once and never
    opened again. Each test's SQLite workspace is a copy of its files: init writes the keys and applies
    every migration with a disk sync per step, and the copy is the same state, in a folder of its own."""
    path = tmp_path_factory.mktemp("template") / "ws"
    Workspace.init(path, clock=ManualClock()).close()
    return path


def _fresh_workspace(
    path: Path, database_url: str | None, clock: ManualClock, request: pytest.FixtureRequest
) -> Workspace:
    if database_url is not None or clock.now() != ManualClock().now():  # the template was made at the start
        return Workspace.init(path, database_url=database_url, clock=clock)
    shutil.copytree(request.getfixturevalue("sqlite_template"), path)
    return Workspace.open(path, clock=clock)


@pytest.fixture
def ws(
    tmp_path: Path, database_url: str | None, clock: ManualClock, request: pytest.FixtureRequest
) -> Iterator[Workspace]:
    w = _fresh_workspace(tmp_path / "ws", database_url, clock, request)
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def sqlite_ws(tmp_path: Path, clock: ManualClock, request: pytest.FixtureRequest) -> Iterator[Workspace]:
    w = _fresh_workspace(tmp_path / "ws", None, clock, request)
    try:
        yield w
    finally:
        w.close()
