"""The HTTP service: one FastAPI application with three surfaces, each built on the session.

- `/api/v1`: every session operation, as JSON (the OpenAPI schema at /api/v1/openapi.json);
- `/console`: the web console, server-rendered pages for officers and auditors;
- `/portal`: the data-subject portal, public, where a person exercises their rights;
- `/tlog`: the ledger as a C2SP tlog-tiles log, for outside auditors and witnesses.

Each worker process opens the workspace once, at start-up, and closes it at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from complai import __version__
from complai.app.workspace import Workspace
from complai.config import ServiceSettings, service_settings
from complai.service import problems
from complai.service.api import router as api_router
from complai.service.api.data import sweep_uploads
from complai.service.console import router as console_router
from complai.service.console import web as console_web
from complai.service.deps import TokenRefusals
from complai.service.jobs import HEARTBEAT_S, JobRunner
from complai.service.middleware import BodyLimit, RequestDeadline, SecurityHeaders, Unexpected
from complai.service.portal import router as portal_router
from complai.service.portal import web as portal_web
from complai.service.tlog import router as tlog_router

STATIC = Path(__file__).resolve().parent / "static"
LOOK_EVERY_S = 5.0  # how often an idle worker looks at the ledger for changes to the records it keeps
log = logging.getLogger(__name__)


async def _look_for_changes(ws: Workspace) -> None:
    """Every few seconds, even with no request coming: an erasure (or any change) empties the opened
    records this worker keeps, so that an erased subject's values leave its memory within that time."""
    while True:
        await asyncio.sleep(LOOK_EVERY_S)
        try:
            await asyncio.to_thread(ws.look_for_changes)
        except Exception as exc:  # the store unreachable, say: hold nothing that was not looked at
            ws.forget_opened_records()
            log.warning("looking at the ledger failed (%s); the kept records were dropped", type(exc).__name__)


# routes that take a file upload get the upload limit, not the small body limit
UPLOAD_PATHS = ("/ingest",)


def create_app(settings: ServiceSettings, *, workspace: Workspace | None = None) -> FastAPI:
    """The service for `settings.workspace`. Tests may hand in an open workspace (closed by its owner)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ws = workspace if workspace is not None else Workspace.open(settings.workspace)
        sweep_uploads(settings.workspace)  # a killed server's uploads, with the personal data in them
        # a live job beats several times within the time after which a silent one is reported failed
        runner = JobRunner(ws, settings.job_threads, heartbeat_s=min(HEARTBEAT_S, settings.job_stale_after_s / 4))
        app.state.ws, app.state.jobs = ws, runner
        ws.keep_opened_records(settings.read_cache_records)
        await asyncio.to_thread(ws.warm_up)  # before the first request, not during it
        await asyncio.to_thread(importlib.import_module, "polars")  # the pages' writer (0.3 s to load)
        # a few threads per worker: with dozens, a request holding a row lock (a budget, the ledger's
        # head) waits its turn for the interpreter while every other request queues on that lock
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.request_threads
        watch = asyncio.create_task(_look_for_changes(ws)) if settings.read_cache_records > 0 else None
        try:
            yield
        finally:
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            ws.keep_opened_records(0)
            runner.shutdown()
            if workspace is None:
                ws.close()

    app = FastAPI(
        title="complai",
        version=__version__,
        summary="Governed personal data: vault, privacy engines, verifiable ledger, audits.",
        lifespan=lifespan,
        # no interactive docs page: FastAPI's loads its scripts from a CDN, beside a bearer token
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
    )
    app.state.settings = settings
    app.state.token_refusals = TokenRefusals(settings.login_failures_per_address, settings.login_window_s)
    problems.install(app)
    console_web.install(app)
    portal_web.install(app)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.include_router(api_router, prefix="/api/v1")
    app.include_router(console_router, prefix="/console")
    app.include_router(portal_router, prefix="/portal")
    app.include_router(tlog_router, prefix="/tlog")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=303)

    app.add_middleware(Unexpected)  # innermost: an unexpected error's 500 still gets the headers
    app.add_middleware(
        BodyLimit, max_body=settings.max_body_bytes, max_upload=settings.max_upload_bytes, upload_paths=UPLOAD_PATHS
    )
    # inside SecurityHeaders: its 503 (and a body's 408) carry the same headers as every other answer
    app.add_middleware(
        RequestDeadline,
        seconds=settings.request_timeout_s,
        upload_seconds=settings.upload_timeout_s,
        upload_paths=UPLOAD_PATHS,
    )
    app.add_middleware(SecurityHeaders, tls=settings.tls)
    return app


def factory() -> FastAPI:
    """What each uvicorn worker imports (`complai serve` passes the settings in the environment)."""
    return create_app(service_settings())
