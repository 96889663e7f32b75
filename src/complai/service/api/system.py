"""Who am I, is the service up, and the caller's jobs (long operations started by other routes)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from complai import __version__
from complai.app.session import Session
from complai.config import ServiceSettings
from complai.service.api.common import NOT_FOUND, problems
from complai.service.deps import CallerDep, session_for, settings
from complai.service.jobs import JobRunner

router = APIRouter()

JobSession = Annotated[Session, Depends(session_for("administration"))]
Settings = Annotated[ServiceSettings, Depends(settings)]


def runner_of(request: Request) -> JobRunner:
    jobs: JobRunner = request.app.state.jobs
    return jobs


def stale_after(cfg: ServiceSettings) -> timedelta:
    """How long a running job may go unreported before it is taken to have died with its worker."""
    return timedelta(seconds=cfg.job_stale_after_s)


class Health(BaseModel):
    status: str
    version: str


class Me(BaseModel):
    principal: str
    acting: str
    roles: list[str]
    token_expires: str | None


class Progress(BaseModel):
    done: int
    total: int | None
    unit: str | None


class JobOut(BaseModel):
    id: str
    kind: str
    principal: str
    purpose: str
    state: str
    progress: Progress
    result: dict[str, Any] | None
    problem: dict[str, Any] | None
    cancel_requested: bool
    created_at: str | None
    started_at: str | None
    finished_at: str | None


@router.get("/health", tags=["system"], summary="Whether the service is up (no authentication)")
def health() -> Health:
    return Health(status="ok", version=__version__)


@router.get("/me", tags=["system"], summary="The authenticated caller", responses=problems())
def me(who: CallerDep) -> Me:
    expires = who.token_expires
    return Me(
        principal=who.principal.name,
        acting=who.acting,
        roles=sorted(who.principal.roles),
        token_expires=expires.isoformat().replace("+00:00", "Z") if expires else None,
    )


@router.get("/jobs", tags=["jobs"], summary="The caller's jobs, newest first", responses=problems())
def list_jobs(
    request: Request, session: JobSession, cfg: Settings, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[JobOut]:
    runner = runner_of(request)
    found = session.jobs(limit=limit, stale_after=stale_after(cfg), spare=runner.live())
    return [JobOut.model_validate(runner.as_seen_here(j)) for j in found]


@router.get(
    "/jobs/{job_id}",
    tags=["jobs"],
    summary="One job: state, progress, result or problem",
    responses=problems(NOT_FOUND),
)
def get_job(request: Request, job_id: str, session: JobSession, cfg: Settings) -> JobOut:
    runner = runner_of(request)
    return JobOut.model_validate(
        runner.as_seen_here(session.job(job_id, stale_after=stale_after(cfg), spare=runner.live()))
    )


@router.delete(
    "/jobs/{job_id}", tags=["jobs"], summary="Cancel a job (what it did is rolled back)", responses=problems(NOT_FOUND)
)
def cancel_job(request: Request, job_id: str, session: JobSession, cfg: Settings) -> JobOut:
    """A job running in this process is told directly (an ingest on SQLite holds the write transaction
    the stored request would wait for); any other is cancelled in the store, for whichever worker runs it."""
    runner = runner_of(request)
    job = session.job(job_id, stale_after=stale_after(cfg), spare=runner.live())  # the caller's, or refused
    if not job.finished and runner.cancel_here(job.id):
        return JobOut.model_validate(runner.as_seen_here(job))
    return JobOut.model_validate(session.job_cancel(job_id).as_dict())
