"""Compliance over HTTP: audits and their reports, records of processing, DPIAs, incidents, the
workspace's status and the vocabulary of schemas.

The same operations and purposes as `complai audit|ropa|dpia|incident|status|taxonomy`. An audit runs
as a job (authorised before it is queued, so a refusal is a 403): it writes its report in every format
into the server's own folder, `<workspace>/audits/<ledger entry>/`, and the ledger entry that records
the report's digest names it from then on. Audits are listed from the ledger (an audit run with the CLI
is listed too, without reports on the server); a report is read back as JSON, Markdown or HTML, and a
report (stored, or uploaded) is verified against the ledger.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Path, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.engine import make_url

from complai.app.session import Session
from complai.errors import InvalidInput, NotFound
from complai.files import write_private
from complai.service.api.common import CONFLICT, INTEGRITY, NOT_FOUND, Strict, problems
from complai.service.api.rights import ACCEPTED, accepted
from complai.service.deps import AdminSession, AuditSession, SecuritySession, WorkspaceDep
from complai.service.jobs import JobProgress

router = APIRouter()

AUDITED = "compliance.audited"
FORMATS = ("json", "md", "html")
MEDIA = {"json": "application/json", "md": "text/markdown; charset=utf-8", "html": "text/html; charset=utf-8"}
MAX_REPORT_BYTES = 64 << 20

Dataset = Annotated[str, Path(min_length=1, max_length=200)]
Seq = Annotated[int, Path(ge=0, le=2**62, description="The ledger entry that records the audit")]


# --- audits ------------------------------------------------------------------------------------------


Format = Literal["json", "md", "html"]


def _every_format() -> list[Format]:
    return ["json", "md", "html"]


class AuditIn(Strict):
    epsilon_cap: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = 10.0
    since_last: bool = Field(default=False, description="Ledger evidence since the last audit only")
    formats: Annotated[list[Format], Field(min_length=1, max_length=3)] = Field(
        default_factory=_every_format, description="Report formats to keep (JSON is always kept)"
    )


class AuditOut(BaseModel):
    """An audit as the ledger recorded it, and which report formats the server holds."""

    seq: int
    time: str
    actor: str
    report_digest: str
    ledger_size: int
    since: int
    passed: int
    failed: int
    not_applicable: int
    not_evaluated: int
    reports: list[str]


class Verified(BaseModel):
    ok: bool
    digest: str
    ledger_seq: int
    ledger_size: int


def audits_dir(ws: Any) -> FilePath:
    """The server's folder of audit reports, inside the workspace directory (made, 0700, by the first
    audit run here: reading never creates it)."""
    return FilePath(ws.path) / "audits"


def _audit(session: Session, root: FilePath, seq: int) -> AuditOut:
    """The audit recorded at `seq` (authorised as the auditor's ledger view), or NotFound."""
    found = [e for e in session.ledger_entries(start=seq, kind=AUDITED, limit=1) if e.seq == seq]
    if not found:
        raise NotFound(f"no audit recorded at ledger entry {seq}")
    return _audit_out(found[0].seq, found[0].data, root)


def _audit_out(seq: int, data: bytes, root: FilePath) -> AuditOut:
    e = json.loads(data)
    folder = root / str(seq)
    return AuditOut(
        seq=seq,
        time=str(e["time"]),
        actor=str(e["actor"]),
        report_digest=str(e["report_digest"]),
        ledger_size=int(e["ledger_size"]),
        since=int(e["since"]),
        passed=int(e["passed"]),
        failed=int(e["failed"]),
        not_applicable=int(e["not_applicable"]),
        not_evaluated=int(e["not_evaluated"]),
        reports=[f for f in FORMATS if (folder / f"report.{f}").is_file()],
    )


@router.post(
    "/audits",
    tags=["audits"],
    status_code=202,
    summary="Run every control against the workspace and its ledger (a job); reports kept on the server",
    responses=problems(ACCEPTED),
)
def run_audit(request: Request, body: AuditIn, session: AuditSession, ws: WorkspaceDep) -> JSONResponse:
    session.authorise("audit")
    root = audits_dir(ws)
    root.mkdir(mode=0o700, exist_ok=True)
    cap, since_last = body.epsilon_cap, body.since_last
    formats = tuple(f for f in FORMATS if f == "json" or f in body.formats)  # JSON: what verification reads

    def work(own: Session, progress: JobProgress) -> dict[str, Any]:
        staging = root / f".run-{secrets.token_hex(8)}"
        try:
            result = own.compliance_audit(staging, formats, cap, since_last=since_last)
            seq = int(result["ledger_seq"])
            staging.rename(root / str(seq))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return {
            "audit": seq,
            "digest": result["digest"],
            "summary": result["summary"],
            "reports": {f: f"/api/v1/audits/{seq}/report?format={f}" for f in formats},
        }

    return accepted(request, request.app.state.jobs.submit(session, "compliance.audit", work))


@router.get("/audits", tags=["audits"], summary="Recorded audits, oldest first (auditors)", responses=problems())
def list_audits(
    session: AuditSession,
    ws: WorkspaceDep,
    start: Annotated[int, Query(ge=0, le=2**62, description="From this ledger entry on")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[AuditOut]:
    root = audits_dir(ws)
    return [_audit_out(e.seq, e.data, root) for e in session.ledger_entries(start=start, kind=AUDITED, limit=limit)]


@router.get("/audits/{seq}", tags=["audits"], summary="One recorded audit", responses=problems(NOT_FOUND))
def get_audit(seq: Seq, session: AuditSession, ws: WorkspaceDep) -> AuditOut:
    return _audit(session, audits_dir(ws), seq)


def _report_file(session: Session, ws: Any, seq: int, fmt: str) -> FilePath:
    root = audits_dir(ws)
    _audit(session, root, seq)  # authorised, and recorded
    path = root / str(seq) / f"report.{fmt}"
    if not path.is_file():
        raise NotFound(f"the audit at ledger entry {seq} has no {fmt} report on the server (run elsewhere)")
    return path


@router.get(
    "/audits/{seq}/report",
    tags=["audits"],
    summary="An audit's report as JSON, Markdown or HTML",
    response_class=Response,
    responses={
        **problems(NOT_FOUND),
        200: {
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/markdown": {"schema": {"type": "string"}},
                "text/html": {"schema": {"type": "string"}},
            },
            "description": "The report",
        },
    },
)
def get_report(
    seq: Seq,
    session: AuditSession,
    ws: WorkspaceDep,
    format: Annotated[Literal["json", "md", "html"], Query()] = "json",
) -> Response:
    path = _report_file(session, ws, seq, format)
    headers = {"Content-Disposition": f'attachment; filename="audit-{seq}.{format}"'}
    return Response(path.read_bytes(), media_type=MEDIA[format], headers=headers)


@router.post(
    "/audits/{seq}/verify",
    tags=["audits"],
    summary="Verify the server's copy of an audit's report against the ledger",
    responses=problems(NOT_FOUND, INTEGRITY),
)
def verify_stored_report(seq: Seq, session: AuditSession, ws: WorkspaceDep) -> Verified:
    return Verified.model_validate(session.verify_report(_report_file(session, ws, seq, "json")))


@router.post(
    "/audits/verify",
    tags=["audits"],
    summary="Verify a report.json (uploaded) against the ledger: unchanged, recorded, the ledger sound",
    responses=problems(INTEGRITY),
)
def verify_uploaded_report(session: AuditSession, report: Annotated[UploadFile, File()]) -> Verified:
    data = report.file.read(MAX_REPORT_BYTES + 1)
    if len(data) > MAX_REPORT_BYTES:
        raise InvalidInput("the report is over the size limit")
    with tempfile.TemporaryDirectory(prefix="complai-verify-") as tmp:
        path = write_private(FilePath(tmp) / "report.json", data)
        return Verified.model_validate(session.verify_report(FilePath(path)))


# --- records of processing and DPIAs ----------------------------------------------------------------


@router.get(
    "/ropa",
    tags=["compliance"],
    summary="Records of processing (GDPR Art. 30) from the datasets' declarations and agreements",
    responses=problems(),
)
def records_of_processing(session: AuditSession) -> list[dict[str, Any]]:
    return session.records_of_processing()


class SignIn(Strict):
    by: Annotated[str, Field(min_length=1, max_length=200, description="Who signs it off (the DPO)")]
    version: Annotated[int, Field(ge=1, le=2**31)] | None = Field(default=None, description="Default: the latest")


@router.post(
    "/dpias/{dataset}",
    tags=["compliance"],
    status_code=201,
    summary="Assess a dataset's processing: a new DPIA version (admins)",
    responses=problems(NOT_FOUND),
)
def generate_dpia(dataset: Dataset, session: AuditSession) -> dict[str, Any]:
    return session.dpia_generate(dataset).value


@router.get(
    "/dpias/{dataset}",
    tags=["compliance"],
    summary="Whether a dataset's DPIA is current: signed off, still describing its processing",
    responses=problems(NOT_FOUND),
)
def dpia_status(dataset: Dataset, session: AuditSession) -> dict[str, Any]:
    return session.dpia_status(dataset)


@router.post(
    "/dpias/{dataset}/sign",
    tags=["compliance"],
    summary="Sign off a dataset's DPIA (by default its latest version)",
    responses=problems(NOT_FOUND, CONFLICT),
)
def sign_dpia(dataset: Dataset, body: SignIn, session: AuditSession) -> dict[str, Any]:
    return session.dpia_sign(dataset, body.by, body.version).value


# --- incidents ---------------------------------------------------------------------------------------


class IncidentIn(Strict):
    description: Annotated[str, Field(min_length=1, max_length=4000, description="What happened (no personal data)")]


class NotifyIn(Strict):
    authority: Annotated[str, Field(min_length=1, max_length=200, description="The supervisory authority")]


@router.post(
    "/incidents",
    tags=["incidents"],
    status_code=201,
    summary="Open an incident: the 72-hour notification deadline starts now",
    responses=problems(),
)
def open_incident(body: IncidentIn, session: SecuritySession) -> dict[str, Any]:
    return session.incident_open(body.description).value


@router.get("/incidents", tags=["incidents"], summary="Incidents with their deadlines (auditors)", responses=problems())
def list_incidents(
    session: SecuritySession,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[dict[str, Any]]:
    return session.incidents()[offset : offset + limit]


@router.post(
    "/incidents/{iid}/notify",
    tags=["incidents"],
    summary="Record that the supervisory authority was notified",
    responses=problems(NOT_FOUND),
)
def notify_incident(iid: str, body: NotifyIn, session: SecuritySession) -> dict[str, Any]:
    return session.incident_notify(iid, body.authority).value


@router.post("/incidents/{iid}/close", tags=["incidents"], summary="Close an incident", responses=problems(NOT_FOUND))
def close_incident(iid: str, session: SecuritySession) -> dict[str, Any]:
    return session.incident_close(iid).value


# --- status and vocabulary ---------------------------------------------------------------------------


class StatusOut(BaseModel):
    workspace_id: str
    database: str = Field(description="The store's backend (sqlite, postgresql), not where it is")
    schema_revision: str
    ledger_size: int
    ledger_root: str
    checkpoints: int
    datasets: int


@router.get(
    "/status",
    tags=["workspace"],
    summary="The workspace, its schema revision and counts (audit or admin)",
    responses=problems(),
)
def workspace_status(session: AdminSession) -> StatusOut:
    # where the workspace lives on the server is of no use to a remote caller and helps an attacker: no
    # folder, and of the database only its backend (a SQLite URL is a path, a PostgreSQL one names hosts)
    status = session.status().as_dict()
    status.pop("path", None)
    status["database"] = make_url(status["database"]).get_backend_name()
    return StatusOut.model_validate(status)


# the name in the API -> the taxonomy's kind (as `complai taxonomy list` names them)
VOCABULARIES = {
    "categories": "data_categories",
    "purposes": "data_uses",
    "bases": "legal_bases",
    "jurisdictions": "jurisdictions",
    "subjects": "data_subjects",
}


class TermOut(BaseModel):
    key: str
    name: str
    attrs: dict[str, Any]


@router.get(
    "/vocabulary",
    tags=["workspace"],
    summary="The terms a schema may use: categories, purposes, bases, jurisdictions, subjects",
    responses=problems(),
)
def vocabulary(session: AdminSession) -> dict[str, list[TermOut]]:
    return {
        name: [TermOut(key=t.key, name=t.name, attrs=dict(t.attrs)) for t in session.vocabulary(kind)]
        for name, kind in VOCABULARIES.items()
    }


@router.get(
    "/vocabulary/{kind}", tags=["workspace"], summary="The terms of one vocabulary", responses=problems(NOT_FOUND)
)
def vocabulary_of(
    kind: Literal["categories", "purposes", "bases", "jurisdictions", "subjects"], session: AdminSession
) -> list[TermOut]:
    return [TermOut(key=t.key, name=t.name, attrs=dict(t.attrs)) for t in session.vocabulary(VOCABULARIES[kind])]
