"""`complai job`: the jobs the service runs in the background (an ingest, training, a verification),
read from the workspace's store: list, show, cancel. The same commands with --server ask the service
(cli/remote.py); both print a job the same way."""

from __future__ import annotations

from typing import Any

import typer

from complai.cli.common import open_session
from complai.cli.remote import JobId, JsonOpt, LimitOpt, print_job, print_jobs

app = typer.Typer(help="Jobs: the long operations the service runs in the background.", no_args_is_help=True)


def _doc(job: Any) -> dict[str, Any]:
    out: dict[str, Any] = job.as_dict()
    return out


@app.command("list")
def job_list(limit: LimitOpt = 100, json_out: JsonOpt = False) -> None:
    """The caller's jobs (every principal's for an owner or admin), newest first."""
    with open_session("administration") as (_, session):
        jobs = [_doc(j) for j in session.jobs(limit=limit)]
    print_jobs(jobs, json_out)


@app.command("show")
def job_show(job_id: JobId, json_out: JsonOpt = False) -> None:
    """One job: state, progress, result or problem."""
    with open_session("administration") as (_, session):
        job = _doc(session.job(job_id))
    print_job(job, json_out)


@app.command("cancel")
def job_cancel(job_id: JobId, json_out: JsonOpt = False) -> None:
    """Ask a job to stop: what it did is rolled back."""
    with open_session("administration") as (_, session):
        job = _doc(session.job_cancel(job_id))
    print_job(job, json_out)
