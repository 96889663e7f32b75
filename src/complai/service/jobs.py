"""Long operations run as jobs: the request that starts one gets `202 Accepted` and the job; a pool
of threads in the worker process runs it through a session of its own, reporting progress (which is
also where a cancellation is noticed: the operation stops and rolls back) and its result or problem.

The job's state is in the workspace's store (app/ops/jobs.py), so any worker answers for it; a job
whose process dies is reported failed once its heartbeat is stale, and its operation's transaction
died with it."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from complai.app.ops.jobs import Job
from complai.app.session import Session
from complai.app.workspace import Workspace
from complai.errors import Cancelled, ComplaiError

log = logging.getLogger("complai.service")

HEARTBEAT_S = 20.0
REPORT_EVERY_S = 0.5


class JobProgress:
    """Told (done, total) by the operation; writes at most every REPORT_EVERY_S, and raises Cancelled
    when the job's principal has asked it to stop."""

    def __init__(self, session: Session, job_id: str, unit: str | None = None) -> None:
        self.session, self.job_id, self.unit = session, job_id, unit
        self.done: int = 0
        self.total: int | None = None
        self._last = 0.0
        self._lock = threading.Lock()
        self.cancelled = threading.Event()  # set by a cancel answered in this process (JobRunner.cancel_here)

    def cancel_requested(self) -> bool:
        """Whether the job was asked to stop: in this process (no store access), else in the store, read
        without writing (an operation holding SQLite's write transaction must not wait on itself)."""
        stored = self.session.job_cancel_requested(self.job_id)
        return stored or self.cancelled.is_set()

    def __call__(self, done: int, total: int | None = None) -> None:
        self.done, self.total = int(done), total if total is not None else self.total
        now = time.monotonic()
        if now - self._last < REPORT_EVERY_S and (self.total is None or self.done < self.total):
            return
        self.report()

    def report(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled("the job was cancelled; nothing it did was kept")
        with self._lock:
            self._last = time.monotonic()
            cancel = self.session.job_progress(self.job_id, self.done, self.total, self.unit)
        if cancel:
            raise Cancelled("the job was cancelled; nothing it did was kept")


Work = Callable[[Session, JobProgress], dict[str, Any]]


class JobRunner:
    """The worker process's job threads."""

    def __init__(self, ws: Workspace, threads: int = 2, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.ws, self.heartbeat_s = ws, heartbeat_s
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="complai-job")
        self._live: dict[str, JobProgress] = {}
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="complai-job-heartbeat", daemon=True)
        self._beat.start()

    def submit(
        self, session: Session, kind: str, work: Work, *, total: int | None = None, unit: str | None = None
    ) -> Job:
        """Queue `work(session, progress) -> result` as a job of the session's principal and purpose.

        The job runs in a copy of the submitting request's context, so an act-as request's delegation
        holds for it too: the events the job records carry the owner who delegated as `delegated_by`."""
        job = session.job_create(kind, total=total, unit=unit)
        principal, purpose = session.principal, session.purpose

        def run() -> None:
            own = self.ws.session(principal, purpose)
            progress = JobProgress(own, job.id, unit)
            self._live[job.id] = progress
            try:
                progress.report()  # running (or cancelled while queued)
                result = work(own, progress)
                own.job_finish(job.id, result=result)
            except ComplaiError as exc:
                own.job_finish(job.id, problem=exc.problem())
            except Exception as exc:
                log.error("job failed", extra={"complai": {"job": job.id, "kind": kind, "error": type(exc).__name__}})
                own.job_finish(
                    job.id,
                    problem={
                        "type": "about:blank",
                        "title": "internal error",
                        "status": 500,
                        "detail": "the job failed; nothing it did was kept",
                    },
                )
            finally:
                self._live.pop(job.id, None)

        self.pool.submit(contextvars.copy_context().run, run)
        return job

    def live(self) -> frozenset[str]:
        """The jobs running in this process: alive whatever their stored heartbeat says (on SQLite an
        ingest holds the write transaction, so its heartbeat cannot be stored until it commits)."""
        return frozenset(self._live)

    def cancel_here(self, job_id: str) -> bool:
        """Ask a job running in this process to stop, without writing to the store; False when it does
        not run here (the caller then records the cancel in the store for whichever worker runs it)."""
        progress = self._live.get(job_id)
        if progress is None:
            return False
        progress.cancelled.set()
        return True

    def as_seen_here(self, job: Job) -> dict[str, Any]:
        """The job as stored, with the progress and cancel request its thread in this process knows of
        (newer than the store's while an operation holds SQLite's write transaction)."""
        out = job.as_dict()
        progress = self._live.get(job.id)
        if progress is not None and not job.finished:
            out["progress"] = {
                "done": max(progress.done, job.done),
                "total": progress.total if progress.total is not None else job.total,
                "unit": progress.unit or job.unit,
            }
            out["cancel_requested"] = job.cancel_requested or progress.cancelled.is_set()
            if out["state"] == "queued":
                out["state"] = "running"
        return out

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            for job_id, progress in list(self._live.items()):
                try:  # a session of its own: the job's session belongs to the job's thread
                    beat = self.ws.session(progress.session.principal, progress.session.purpose)
                    beat.job_progress(job_id, progress.done, progress.total, progress.unit)
                except Exception:  # noqa: S112 - a failed beat is retried; the job's thread acts on cancels
                    continue

    def shutdown(self) -> None:
        self._stop.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
