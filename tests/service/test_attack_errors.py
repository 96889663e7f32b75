"""What an outsider sees when something goes wrong: a database that stays locked (an ingest holding
SQLite's write lock past the busy timeout) is a 503 with Retry-After, not an internal error; no
problem document carries SQL, a path or a trace."""

from __future__ import annotations

import sqlite3

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from complai.service import problems


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
