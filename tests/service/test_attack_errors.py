"""What an outsider sees when something goes wrong: a database that stays locked (an ingest holding
SQLite's write lock past the busy timeout) is a 503 with Retry-After, not an internal error; no
problem document carries SQL, a path or a trace."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from complai.app.workspace import Workspace
from complai.service import problems
from complai.service.app import create_app
from tests.service.conftest import settings_for


def app_raising(exc: Exception) -> FastAPI:
    app = FastAPI()
    problems.install(app)

    @app.get("/boom")
    def boom() -> None:
        raise exc

    return app


def test_a_locked_database_is_a_503_to_retry() -> None:
    locked = OperationalError(
        "INSERT INTO login_failures (principal) VALUES (?)", ("x",), sqlite3.OperationalError("database is locked")
    )
    with TestClient(app_raising(locked), raise_server_exceptions=False) as c:
        r = c.get("/boom")
    assert r.status_code == 503
    assert r.headers["retry-after"]
    assert r.headers["content-type"] == "application/problem+json"
    assert "INSERT" not in r.text and "login_failures" not in r.text


def test_any_other_database_error_stays_a_bare_500() -> None:
    other = OperationalError("SELECT secret FROM t", (), sqlite3.OperationalError("disk I/O error"))
    with TestClient(app_raising(other), raise_server_exceptions=False) as c:
        r = c.get("/boom")
    assert r.status_code == 500
    assert "SELECT" not in r.text and "disk" not in r.text


def test_an_unexpected_error_is_answered_and_never_handed_to_the_server_to_log(
    ws: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    """Starlette hands an error it answered with 500 on to the server, which logs its traceback: the
    exception's message and SQL with values (here a subject id) on stderr. The service answers it and
    logs only its type."""
    app = create_app(settings_for(ws), workspace=ws)

    @app.get("/api/v1/boom")
    def boom() -> None:
        raise ValueError("subject C-1001 income 52000 in SELECT * FROM records")

    caplog.set_level(logging.DEBUG)
    with TestClient(app, raise_server_exceptions=True) as c:  # raises if the error escapes the app
        r = c.get("/api/v1/boom")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["x-content-type-options"] == "nosniff" and "content-security-policy" in r.headers
    assert "C-1001" not in r.text and "SELECT" not in r.text
    assert "C-1001" not in caplog.text and "52000" not in caplog.text
    assert any(getattr(rec, "complai", {}).get("error") == "ValueError" for rec in caplog.records)
