"""Errors as RFC 9457 problem details (application/problem+json): the library's typed errors map to
their 4xx status; request validation to 400; anything unexpected to a bare 500 with no trace, no
value and no secret (the exception's type is logged, never its message). A database that stayed locked
past its busy timeout (SQLite, while a long ingest holds the write lock) is a 503 to retry, not an error.
A request that ran past the service's deadline is a 503 whose outcome is unknown (`deadline_passed`)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from complai.errors import AuthenticationFailed, ComplaiError, RateLimited

PROBLEM = "application/problem+json"
log = logging.getLogger("complai.service")


def problem(status: int, title: str, detail: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    headers = {"WWW-Authenticate": 'Bearer realm="complai"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def validation_detail(exc: RequestValidationError) -> str:
    """One line naming each invalid field and what is wrong with it, never the value given."""
    items = [f"{_where(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in exc.errors()[:5]]
    more = len(exc.errors()) - len(items)
    return "; ".join(items) + (f" (and {more} more)" if more > 0 else "")


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document (or, under a prefix in
    `app.state.html_errors`, a page: [(prefix, render(request, exc) -> Response)])."""
    app.state.html_errors = []

    @app.exception_handler(ComplaiError)
    async def complai_error(request: Request, exc: ComplaiError) -> Response:
        # the console and the portal show errors as pages (each registers its renderer by path prefix)
        for prefix, render in getattr(app.state, "html_errors", ()):
            if request.url.path.startswith(prefix):
                page: Response = render(request, exc)
                return page
        response = problem(exc.http_status, exc.title, exc.message)
        if isinstance(exc, RateLimited):
            response.headers["Retry-After"] = "60"
        if isinstance(exc, AuthenticationFailed):
            response.headers["WWW-Authenticate"] = 'Bearer realm="complai", error="invalid_token"'
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(400, "invalid input", validation_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {
            404: "not found",
            405: "method not allowed",
            408: "request timeout",
            413: "request too large",
            415: "unsupported media type",
        }
        detail = exc.detail if isinstance(exc.detail, str) else None
        response = problem(exc.status_code, titles.get(exc.status_code, "error"), detail)
        for k, v in (exc.headers or {}).items():
            response.headers[k] = v
        return response

    @app.exception_handler(OperationalError)
    async def database_error(request: Request, exc: OperationalError) -> JSONResponse:
        if _locked(exc):
            log.warning("database busy", extra={"complai": {"error": "locked", "path": request.url.path}})
            response = problem(503, "busy", "the workspace is busy with a long write; nothing was changed, try again")
            response.headers["Retry-After"] = "30"
            return response
        return await unexpected(request, exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", extra={"complai": {"error": type(exc).__name__, "path": request.url.path}})
        return problem(500, "internal error", "the server could not complete the request; nothing was changed")


class OutcomeUnknown(ComplaiError):
    """A request ran past the service's deadline: its answer was given up, not its work (a handler in the
    thread pool cannot be stopped; its transaction commits or rolls back on its own)."""

    http_status = 503
    title = "timed out"


def deadline_detail(seconds: float) -> str:
    return (
        f"the request ran past the service's limit of {seconds:g} s and may still be carried out: its outcome "
        "is unknown. Check before trying again: each change is recorded in the ledger (GET "
        "/api/v1/ledger/entries) and long operations run as jobs (GET /api/v1/jobs)"
    )


def deadline_passed(scope: Scope, seconds: float) -> Response:
    """The answer to a request that ran past its deadline: a page under the console or the portal (as
    their errors are), else a problem document; it never says the work was not done."""
    exc = OutcomeUnknown(deadline_detail(seconds))
    app = scope.get("app")
    for prefix, render in getattr(getattr(app, "state", None), "html_errors", ()):
        if str(scope.get("path", "")).startswith(prefix):
            page: Response = render(Request(scope), exc)
            return page
    return problem(exc.http_status, exc.title, exc.message)


def _locked(exc: OperationalError) -> bool:
    """SQLite's `database is locked` / `database table is locked` (its busy timeout ran out)."""
    return "locked" in str(exc.orig).lower() and type(exc.orig).__module__.startswith(("sqlite3", "pysqlite"))
