"""Subject rights over HTTP: export, erase, rectify, restrict, object; consents; the subject-request
register; and the vault's housekeeping (retention sweep, key status and rotation, backups).

The same operations and purposes as `complai subject|consent|request|retention|keys|backup`
(cli/vault.py, cli/requests.py). A subject's id is personal data: it travels in the JSON body, never in
a URL or a query string (which servers and proxies log). Long operations (retention sweep, key
rotation) run as jobs: the route authorises the operation first, so a refusal is a 403 and not a
failed job, then answers 202 with the job and its Location.

A backup is streamed to the caller as the encrypted archive (keys/backup.key, which decrypts it, stays
with the workspace: keep a copy apart from the backups). Restoring is not offered over HTTP: it
creates a new workspace directory on the server, needs the backup key sent over the wire, reads newer
ledgers from server paths to re-apply later erasures, and the running service keeps serving the
workspace it opened, not the restored one. The operator restores on the machine with
`complai backup restore`; the route says so with a 405 problem.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from complai.app.session import Session
from complai.errors import InvalidInput
from complai.service.api.common import NOT_FOUND, Strict, _doc, problems
from complai.service.api.system import JobOut
from complai.service.deps import AdminSession, AuditSession, CallerDep, RequestSession, SecuritySession, session_for
from complai.service.jobs import JobProgress
from complai.service.problems import problem

router = APIRouter()

RetentionSession = Annotated[Session, Depends(session_for("legal_obligation"))]

SubjectId = Annotated[str, Field(min_length=1, max_length=256, description="The subject's external id")]
Text = Annotated[str, Field(max_length=2000)]
Purpose = Annotated[str, Field(min_length=1, max_length=200)]
Value = str | int | float | bool | None
ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"model": JobOut, "description": "Accepted: the job, at its Location (/api/v1/jobs/{id})"}
}
REFUSED_HERE: dict[int | str, dict[str, Any]] = {405: _doc("Not offered over HTTP (the detail says where instead)")}


class Recorded(BaseModel):
    """A change to a subject's data or governance, recorded: its ledger entry."""

    ledger_seq: int


class SubjectIn(Strict):
    subject: SubjectId


class RectifyIn(Strict):
    subject: SubjectId
    dataset: Purpose
    field: Purpose
    value: Value = Field(description="The correct value (checked against the dataset's schema)")


class RestrictIn(Strict):
    subject: SubjectId
    reason: Text = ""
    lift: bool = False


class ObjectIn(Strict):
    subject: SubjectId
    purpose: Purpose = Field(description="The purpose objected to, or * for all")
    opt_out: bool = Field(default=False, description="A CCPA opt-out rather than a GDPR objection")


class ConsentIn(Strict):
    subject: SubjectId
    purpose: Purpose
    basis: Purpose = "gdpr.consent"
    notice_version: Annotated[str, Field(min_length=1, max_length=200)] = "unspecified"
    source: Annotated[str, Field(min_length=1, max_length=200)] = "api"


class WithdrawIn(Strict):
    subject: SubjectId
    purpose: Purpose


class RequestIn(Strict):
    type: Literal["access", "portability", "erasure", "rectification", "restriction", "objection", "opt-out"]
    subject: SubjectId
    jurisdiction: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class VerifyIn(Strict):
    method: Annotated[str, Field(min_length=1, max_length=64, description="account|document|email|in-person|...")]


class ReasonIn(Strict):
    reason: Annotated[str, Field(min_length=1, max_length=2000, description="Given to the subject")]


class Change(Strict):
    dataset: Purpose
    field: Purpose
    value: Value


class FulfilIn(Strict):
    subject: SubjectId | None = Field(
        default=None,
        description="The subject's id, checked against the request's. Required, unless the request came "
        "through the portal: then it must be left out (the identifier verified there is used)",
    )
    purpose: Purpose | None = Field(
        default=None,
        description="An objection's or opt-out's purpose (left out for a portal request: the person's is used)",
    )
    changes: Annotated[list[Change], Field(max_length=1000)] = Field(default_factory=list)


class Fulfilled(BaseModel):
    request: dict[str, Any]
    export: dict[str, Any] | None = Field(
        description="For access and portability: the subject's data (null for a portal request: the export "
        "is kept sealed for the person to download from the portal)"
    )
    portal: bool = Field(default=False, description="The request came through the portal")


class RotateIn(Strict):
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 2000


def accepted(request: Request, job: Any) -> JSONResponse:
    """202 with the job and where to follow it."""
    body = JobOut.model_validate(job.as_dict()).model_dump(mode="json")
    return JSONResponse(body, status_code=202, headers={"Location": f"/api/v1/jobs/{job.id}"})


# --- subjects ----------------------------------------------------------------------------------------


@router.post(
    "/subjects/export",
    tags=["subjects"],
    summary="Everything held about a subject, as a JSON download (access, portability)",
    response_class=Response,
    responses={
        **problems(NOT_FOUND),
        200: {"content": {"application/json": {"schema": {"type": "object"}}}, "description": "The export"},
    },
)
def export_subject(body: SubjectIn, session: RequestSession) -> Response:
    doc = session.export_subject(body.subject)
    return Response(
        json.dumps(doc, indent=1, sort_keys=True, default=str),
        media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="subject-export.json"'},
    )


@router.post(
    "/subjects/erase",
    tags=["subjects"],
    summary="Erase a subject: records and consents deleted, data keys destroyed",
    responses=problems(NOT_FOUND),
)
def erase_subject(body: SubjectIn, session: RequestSession) -> Recorded:
    return Recorded(ledger_seq=session.erase_subject(body.subject))


@router.post(
    "/subjects/rectify",
    tags=["subjects"],
    summary="Correct one field in a subject's records",
    responses=problems(NOT_FOUND),
)
def rectify(body: RectifyIn, session: RequestSession) -> Recorded:
    return Recorded(ledger_seq=session.rectify(body.subject, body.dataset, body.field, body.value))


@router.post(
    "/subjects/restrict",
    tags=["subjects"],
    summary="Restrict processing of a subject (or lift the restriction)",
    responses=problems(NOT_FOUND),
)
def restrict(body: RestrictIn, session: RequestSession) -> Recorded:
    return Recorded(ledger_seq=session.restrict(body.subject, reason=body.reason, lift=body.lift))


@router.post(
    "/subjects/object",
    tags=["subjects"],
    summary="Record a subject's objection (or opt-out) to processing for a purpose",
    responses=problems(NOT_FOUND),
)
def object_(body: ObjectIn, session: RequestSession) -> Recorded:
    kind = "opt_out" if body.opt_out else "objection"
    return Recorded(ledger_seq=session.object(body.subject, body.purpose, kind=kind))


# --- consents ----------------------------------------------------------------------------------------


@router.post(
    "/consents",
    tags=["subjects"],
    status_code=201,
    summary="Record a subject's consent for a purpose",
    responses=problems(NOT_FOUND),
)
def grant_consent(body: ConsentIn, session: AdminSession) -> Recorded:
    seq = session.grant_consent(
        body.subject, body.purpose, basis=body.basis, notice_version=body.notice_version, source=body.source
    )
    return Recorded(ledger_seq=seq)


@router.post(
    "/consents/withdraw",
    tags=["subjects"],
    summary="Withdraw a subject's consent for a purpose",
    responses=problems(NOT_FOUND),
)
def withdraw_consent(body: WithdrawIn, session: AdminSession) -> Recorded:
    return Recorded(ledger_seq=session.withdraw_consent(body.subject, body.purpose))


# --- subject requests --------------------------------------------------------------------------------


@router.post(
    "/requests",
    tags=["requests"],
    status_code=201,
    summary="Register a subject request; its deadline follows from the jurisdiction",
    responses=problems(),
)
def open_request(body: RequestIn, session: RequestSession) -> dict[str, Any]:
    return session.request_open(body.type, body.subject, body.jurisdiction).value


@router.get("/requests", tags=["requests"], summary="Requests with their deadlines (auditors)", responses=problems())
def list_requests(
    session: AuditSession,
    overdue: Annotated[bool, Query(description="Only the overdue ones")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[dict[str, Any]]:
    return session.requests(overdue)[offset : offset + limit]


@router.get(
    "/requests/{rid}",
    tags=["requests"],
    summary="One request; `portal` says how it came through the portal (null if it did not)",
    responses=problems(NOT_FOUND),
)
def get_request(rid: str, session: AuditSession) -> dict[str, Any]:
    """`portal`: null, or the type and purpose asked there, `verified_by` ("email"), `identifier_held`
    (false once fulfilled: the verified identifier is destroyed) and a rectification's `details` for a
    caller who may act on requests. Never the identifier."""
    found = session.request(rid)
    return {**found, "portal": session.portal_summary(rid)}


@router.post(
    "/requests/{rid}/verify",
    tags=["requests"],
    summary="Record that the requester's identity was verified, and how",
    responses=problems(NOT_FOUND),
)
def verify_request(rid: str, body: VerifyIn, session: RequestSession) -> dict[str, Any]:
    return session.request_verify(rid, body.method).value


@router.post(
    "/requests/{rid}/acknowledge",
    tags=["requests"],
    summary="Record that the subject was told the request was received",
    responses=problems(NOT_FOUND),
)
def acknowledge_request(rid: str, session: RequestSession) -> dict[str, Any]:
    return session.request_acknowledge(rid).value


@router.post(
    "/requests/{rid}/extend",
    tags=["requests"],
    summary="Extend the deadline where the law allows it",
    responses=problems(NOT_FOUND),
)
def extend_request(rid: str, body: ReasonIn, session: RequestSession) -> dict[str, Any]:
    return session.request_extend(rid, body.reason).value


@router.post(
    "/requests/{rid}/reject",
    tags=["requests"],
    summary="Refuse a request, with the reason the subject is given",
    responses=problems(NOT_FOUND),
)
def reject_request(rid: str, body: ReasonIn, session: RequestSession) -> dict[str, Any]:
    return session.request_reject(rid, body.reason).value


@router.post(
    "/requests/{rid}/fulfil",
    tags=["requests"],
    summary="Carry the request out; each step's status is kept, failed steps can be retried",
    responses=problems(NOT_FOUND),
)
def fulfil_request(rid: str, body: FulfilIn, session: RequestSession) -> Fulfilled:
    """A request that came through the portal is carried out with the identifier verified there, which
    is authoritative: a body naming a subject or a purpose for it is refused (400). Its access or
    portability export is kept sealed for the person, not returned. Any other request needs `subject`."""
    session.authorise("admin")
    changes = [(c.dataset, c.field, c.value) for c in body.changes]
    if session.portal_summary(rid) is not None:
        if body.subject is not None or body.purpose is not None:
            raise InvalidInput(
                f"request {rid} came through the portal: the identifier and purpose verified there are used; "
                "send no subject or purpose"
            )
        return Fulfilled(request=session.portal_fulfil(rid, changes=changes).value, export=None, portal=True)
    if body.subject is None:
        raise InvalidInput("subject: required for a request that did not come through the portal")
    result, output = session.request_fulfil(rid, body.subject, purpose=body.purpose, changes=changes)
    return Fulfilled(request=result.value, export=output)


# --- retention, keys, backups ------------------------------------------------------------------------


@router.post(
    "/retention/sweep",
    tags=["vault"],
    status_code=202,
    summary="Delete records past retention; crypto-shred subjects left with nothing (a job)",
    responses=problems(ACCEPTED),
)
def retention_sweep(request: Request, session: RetentionSession) -> JSONResponse:
    session.authorise("admin")

    def work(own: Session, progress: JobProgress) -> dict[str, Any]:
        return dict(own.retention_sweep())

    return accepted(request, request.app.state.jobs.submit(session, "retention.sweep", work))


@router.get("/keys", tags=["vault"], summary="Key-encryption key versions and rotation state", responses=problems())
def key_status(session: SecuritySession) -> dict[str, Any]:
    return dict(session.key_status())


@router.post(
    "/keys/rotate",
    tags=["vault"],
    status_code=202,
    summary="A new key-encryption key; every data key re-wrapped under it (a job)",
    responses=problems(ACCEPTED),
)
def rotate_keys(request: Request, body: RotateIn, session: SecuritySession) -> JSONResponse:
    session.authorise("admin")
    batch = body.batch_size

    def work(own: Session, progress: JobProgress) -> dict[str, Any]:
        return dict(own.rotate_keys(batch_size=batch, progress=progress))

    job = request.app.state.jobs.submit(session, "keys.rotate", work, unit="data keys")
    return accepted(request, job)


BACKUP_MEDIA = "application/octet-stream"


@router.post(
    "/backups",
    tags=["vault"],
    summary="An encrypted backup of the whole workspace, streamed (under keys/backup.key)",
    response_class=Response,
    responses={
        **problems(),
        200: {"content": {BACKUP_MEDIA: {"schema": {"type": "string", "format": "binary"}}}, "description": "Archive"},
    },
)
def create_backup(session: SecuritySession) -> FileResponse:
    session.authorise("admin")  # before the server writes anything
    tmp = Path(tempfile.mkdtemp(prefix="complai-backup-"))
    try:
        result, _ = session.backup_with_key_file(tmp / "workspace.backup")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FileResponse(
        tmp / "workspace.backup",
        media_type=BACKUP_MEDIA,
        filename="workspace.backup",
        headers={"X-Complai-Digest": result["digest"], "X-Complai-Ledger-Seq": str(result["seq"])},
        background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True),
    )


@router.post(
    "/backups/restore",
    tags=["vault"],
    summary="Not offered over HTTP: restore with `complai backup restore` on the server",
    responses=problems(REFUSED_HERE),
    status_code=405,
)
def restore_backup(who: CallerDep) -> Response:
    response = problem(
        405,
        "not offered over HTTP",
        "a backup is restored into a new workspace on the server by its operator: "
        "run `complai backup restore FILE --workspace NEW_DIR --key-file KEY` there",
    )
    response.headers["Allow"] = ""  # no method: RFC 9110, 10.2.1
    return response
