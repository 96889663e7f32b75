"""Session operations: jobs, the long operations an interface runs in the background (an ingest of
millions of rows, training, an audit, a federated run) and reports on while they run.

A job is operational state, not evidence: the operation it runs records its own ledger event, and the
job's result names that entry. A job is its principal's; only its principal, or an owner or admin of
the workspace, may see or cancel it. Anyone else is told it does not exist (its id reveals nothing).
An owner or admin sees another principal's job without its result: the result (an audit's findings, a
model's card) is what the job's principal may see, and the overseer may not (an admin may not audit).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, select, update

from complai.app.core import ALL, SessionCore
from complai.clock import as_utc, utc_iso
from complai.errors import InvalidInput, NotFound
from complai.store.tables import jobs

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
# a running job whose worker has not reported for this long is taken to have died with its process
STALE_AFTER = timedelta(minutes=2)


@dataclass(frozen=True)
class Job:
    """A job as its principal sees it."""

    id: str
    kind: str
    principal: str
    purpose: str
    state: str
    done: int
    total: int | None
    unit: str | None
    result: dict[str, Any] | None
    problem: dict[str, Any] | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def as_dict(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return utc_iso(t) if t is not None else None

        return {
            "id": self.id,
            "kind": self.kind,
            "principal": self.principal,
            "purpose": self.purpose,
            "state": self.state,
            "progress": {"done": self.done, "total": self.total, "unit": self.unit},
            "result": self.result,
            "problem": self.problem,
            "cancel_requested": self.cancel_requested,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
        }


def _job(row: Row[Any]) -> Job:
    def t(v: datetime | None) -> datetime | None:
        return as_utc(v) if v is not None else None

    return Job(
        id=row.id,
        kind=row.kind,
        principal=row.principal,
        purpose=row.purpose,
        state=row.state,
        done=int(row.done),
        total=int(row.total) if row.total is not None else None,
        unit=row.unit,
        result=json.loads(row.result_json) if row.result_json else None,
        problem=json.loads(row.problem_json) if row.problem_json else None,
        cancel_requested=bool(row.cancel_requested),
        created_at=as_utc(row.created_at),
        started_at=t(row.started_at),
        finished_at=t(row.finished_at),
    )


class JobOps(SessionCore):
    """Create, report on, finish, list and cancel the session principal's jobs."""

    def _oversees(self) -> bool:
        return self._may(ALL, ("admin",), [])

    def _seen(self, row: Row[Any]) -> Job:
        """A job as this principal sees it: another principal's without its result."""
        job = _job(row)
        return job if job.principal == self.principal else replace(job, result=None)

    def _own(self, job_id: str) -> Job:
        with self._svc.store.read() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        if row is None or (row.principal != self.principal and not self._oversees()):
            raise NotFound(f"no job {job_id!r}")
        return self._seen(row)

    def job_create(self, kind: str, *, total: int | None = None, unit: str | None = None) -> Job:
        """A queued job of `kind` for this principal and purpose (the operation it will run is
        authorised when it runs, as it would be in the foreground)."""
        if not kind or len(kind) > 64:
            raise InvalidInput("a job kind is 1-64 characters")
        now = self._svc.clock.now()
        job_id = secrets.token_hex(8)
        with self._svc.store.write() as conn:
            conn.execute(
                jobs.insert().values(
                    id=job_id,
                    kind=kind,
                    principal=self.principal,
                    purpose=self.purpose,
                    state="queued",
                    done=0,
                    total=total,
                    unit=unit,
                    cancel_requested=False,
                    created_at=now,
                    heartbeat_at=now,
                )
            )
        return self._own(job_id)

    def job_progress(self, job_id: str, done: int, total: int | None = None, unit: str | None = None) -> bool:
        """Report progress on a job (the first report marks it running); returns whether its
        principal asked for it to be cancelled, so the operation can stop and roll back."""
        now = self._svc.clock.now()
        values: dict[str, Any] = {"done": int(done), "heartbeat_at": now}
        if total is not None:
            values["total"] = int(total)
        if unit is not None:
            values["unit"] = unit
        with self._svc.store.write() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id, jobs.c.principal == self.principal)).first()
            if row is None:
                raise NotFound(f"no job {job_id!r}")
            if row.state in FINISHED:
                return bool(row.cancel_requested)
            if row.state == "queued":
                values.update(state="running", started_at=now)
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
        return bool(row.cancel_requested)

    def job_cancel_requested(self, job_id: str) -> bool:
        """Whether this principal's job was asked to stop, read without writing: an operation that holds
        the store's write transaction (an ingest on SQLite) asks this, where reporting would wait on itself."""
        with self._svc.store.read() as conn:
            row = conn.execute(
                select(jobs.c.cancel_requested).where(jobs.c.id == job_id, jobs.c.principal == self.principal)
            ).first()
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        return bool(row.cancel_requested)

    def job_finish(
        self, job_id: str, *, result: dict[str, Any] | None = None, problem: dict[str, Any] | None = None
    ) -> Job:
        """Close a job: succeeded with `result`, or failed (cancelled, where its problem says so) with an
        RFC 9457 `problem`. A finished job stays as it ended."""
        now = self._svc.clock.now()
        state = "succeeded" if problem is None else ("cancelled" if problem.get("title") == "cancelled" else "failed")
        with self._svc.store.write() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.principal == self.principal, jobs.c.state.not_in(FINISHED))
                .values(
                    state=state,
                    result_json=json.dumps(result, sort_keys=True, default=str) if result is not None else None,
                    problem_json=json.dumps(problem, sort_keys=True) if problem is not None else None,
                    finished_at=now,
                    heartbeat_at=now,
                )
            )
        return self._own(job_id)

    def job(self, job_id: str, *, stale_after: timedelta = STALE_AFTER, spare: frozenset[str] = frozenset()) -> Job:
        """One job, if it is this principal's (or the caller oversees the workspace). A running job
        whose worker has not reported for `stale_after` is shown as failed: its process died, and its
        operation rolled back with it. Jobs in `spare` are known to be running (in the caller's process)."""
        job = self._own(job_id)
        if job.state in ("running", "queued") and job.id not in spare:
            self._reap(stale_after, spare)
            job = self._own(job_id)
        return job

    def jobs(
        self, *, limit: int = 100, stale_after: timedelta = STALE_AFTER, spare: frozenset[str] = frozenset()
    ) -> list[Job]:
        """This principal's jobs (every principal's for an owner or admin), newest first."""
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000")
        self._reap(stale_after, spare)
        q = select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit)
        if not self._oversees():
            q = q.where(jobs.c.principal == self.principal)
        with self._svc.store.read() as conn:
            return [self._seen(r) for r in conn.execute(q)]

    def job_cancel(self, job_id: str) -> Job:
        """Ask a job to stop: a queued job is cancelled at once; a running one stops at its next
        progress report and rolls back what it did. A finished job is refused."""
        job = self._own(job_id)
        if job.finished:
            raise InvalidInput(f"job {job_id!r} already {job.state}")
        now = self._svc.clock.now()
        problem = {"type": "about:blank", "title": "cancelled", "status": 409, "detail": "cancelled before it started"}
        with self._svc.store.write() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(cancel_requested=True))
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == "queued")
                .values(state="cancelled", problem_json=json.dumps(problem), finished_at=now)
            )
        return self._own(job_id)

    def _reap(self, stale_after: timedelta = STALE_AFTER, spare: frozenset[str] = frozenset()) -> None:
        """Fail unfinished jobs whose worker has not reported within `stale_after` (a killed process).
        Looked for with a read first: reading jobs must not wait for a write transaction (an ingest's, on
        SQLite) when there is nothing to reap."""
        if stale_after <= timedelta(0):
            raise InvalidInput("a job's staleness limit must be positive")
        now = self._svc.clock.now()
        cutoff = now - stale_after
        unfinished = and_(jobs.c.state.in_(("queued", "running")), jobs.c.id.not_in(sorted(spare)))
        with self._svc.store.read() as conn:
            if conn.execute(select(jobs.c.id).where(unfinished, jobs.c.heartbeat_at < cutoff).limit(1)).first() is None:
                return
        problem = {
            "type": "about:blank",
            "title": "interrupted",
            "status": 500,
            "detail": "the server stopped while the job ran; nothing it did was kept",
        }
        with self._svc.store.write() as conn:
            conn.execute(
                update(jobs)
                .where(unfinished, jobs.c.heartbeat_at < cutoff)
                .values(state="failed", problem_json=json.dumps(problem), finished_at=now)
            )
