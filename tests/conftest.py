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
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, make_url, text

from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.store.engine import normalise_url

# the suite runs one process per core (make test: -n 2 on 2 cores): one thread each for torch's and the
# BLAS libraries' parallel loops, in these processes and in the commands they start, since more threads
# than free cores spin waiting for each other (complai's training honours OMP_NUM_THREADS)
os.environ.setdefault("OMP_NUM_THREADS", "1")

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


# --- order and distribution over xdist workers (make test: -n 2 --dist loadscope) ---
# Each module runs on one worker (its module fixtures are built once), except the documentation pages,
# which are independent and the longest tests of all, and tests/spark, which runs whole on one worker (one
# JVM, its `spark` fixture started once). The longest units start first, so that the run does not end with
# one worker busy on a long test while the other waits: each worker takes the next unit when it is free.
# Longest first, as measured; each entry is a node id prefix.
LONGEST_FIRST = (
    "tests/spark/",
    "tests/docs/test_docs_commands.py::test_page_commands_run[docs/byod.md]",
    "tests/docs/test_docs_commands.py::test_page_commands_run[docs/external.md]",
    "tests/cli/test_cli.py",
    "tests/cli/test_models_cli.py",
    "tests/docs/test_docs_commands.py::test_page_commands_run[docs/access.md]",
    "tests/docs/test_docs_commands.py::test_page_commands_run[docs/dp.md]",
    "tests/docs/test_docs_commands.py::test_page_commands_run[docs/compliance.md]",
    "tests/dp/test_release_cli.py",
    "tests/federated/test_simulation.py",
    "tests/cli/test_exact_output.py",
    "tests/service/test_schemathesis.py",
    "tests/service/test_portal.py",
    "tests/service/test_console_browser.py",
    "tests/service/test_portal_browser.py",
    "tests/service/test_ledger_explorer_browser.py",
    "tests/service/test_console_registry.py",
    "tests/service/test_api_data.py",
    "tests/service/test_service_process.py",
    "tests/service/test_console_pages.py",
    "tests/service/test_api_access_matrix.py",
    "tests/docs/test_docs_commands.py::test_page_commands_run[docs/service.md]",
    "tests/docs/test_docs_commands.py::test_page_commands_run[docs/portal.md]",
    "tests/deid/test_tabular.py",
    "tests/cli/test_ingest_cli.py",
    "tests/federated/test_deployment.py",
    "tests/docs/test_docs_commands.py::test_page_commands_run[docs/vault.md]",
    "tests/docs/test_docs_commands.py::test_page_commands_run[docs/ledger.md]",
    "tests/docs/test_docs_commands.py::test_page_commands_run[docs/federated.md]",
    "tests/cli/test_vault_cli.py",
    "tests/dp/test_release.py",
    "tests/dp/test_audit.py",
    "tests/federated/test_own_dataset.py",
    "tests/docs/test_docs_commands.py::test_page_commands_run[docs/deid.md]",
    "tests/cli/test_deid_cli.py",
    "tests/docs/test_docs_commands.py::test_page_commands_run[README.md]",
    "tests/cli/test_output_files.py",
    "tests/deid/test_table_cli.py",
    "tests/deid/test_schema_draft.py",
    "tests/dp/test_text_training.py",
    "tests/dp/test_training.py",
    "tests/dp/test_queries.py",
    "tests/docs/test_docs_commands.py::test_page_commands_run",
    "tests/cli/test_lazy_start.py",
    "tests/compliance/test_report_browser.py",
)
INDEPENDENT = ("tests/docs/test_docs_commands.py::test_page_commands_run[",)
ONE_SCOPE = ("tests/spark/",)  # directories whose tests share one worker


def _rank(nodeid: str) -> int:
    return next((i for i, prefix in enumerate(LONGEST_FIRST) if nodeid.startswith(prefix)), len(LONGEST_FIRST))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: _rank(item.nodeid))  # stable: the rest keep pytest's order


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """For -n N (--dist load, xdist's default) and --dist loadscope: modules whole, each documentation page
    a unit of its own, tests/spark one unit, in the order above."""
    if config.getvalue("dist") not in ("load", "loadscope"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # keep the longest-first order

    class ModulesAndPages(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith(INDEPENDENT):
                return nodeid
            shared = next((prefix for prefix in ONE_SCOPE if nodeid.startswith(prefix)), None)
            return shared if shared is not None else super()._split_scope(nodeid)

    return ModulesAndPages(config, log)
