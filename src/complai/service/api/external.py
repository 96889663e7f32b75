"""API routes: external datasets (rows kept in the organisation's lake, read through Spark, governed by the
vault): registration, enrolment of their subjects, the erasure requests to their owner systems and the
scan that checks those rows are gone.

The same operations and purposes as `complai external` (cli/external.py): registering and enrolling are
`administration`, listing requests and verifying erasures `audit`, exporting the sealed requests
`subject_request`. Every route goes through the session alone. What reads the lake with Spark beyond a
source's metadata (an enrolment from the source, the erasure scan) runs as a job: the route authorises
it first, so a refusal is a 403 and not a failed job, then answers 202 with the job and its Location.
Subject ids travel in JSON bodies, never in a URL. A source's location is a path or URI the server's
Spark reads, as the server's user; no answer repeats it.
"""

from __future__ import annotations

import re
import tempfile
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from complai.app.session import Session
from complai.clock import utc_iso
from complai.service.api.common import CONFLICT, INTEGRITY, NOT_FOUND, Strict, problems
from complai.service.api.data import DatasetOut
from complai.service.api.system import JobOut
from complai.service.deps import AdminSession, AuditSession, RequestSession

if TYPE_CHECKING:
    from complai.vault.external import EnrolResult

router = APIRouter()

TAG = "external"
JSON_LINES = "application/x-ndjson"
JOB_HEADERS = {"Location": {"description": "The job: /api/v1/jobs/{id}", "schema": {"type": "string"}}}
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/")  # scheme:/... (file:/, s3a://, hdfs://); file:x is relative


# --- models --------------------------------------------------------------------------------------


class SourceIn(Strict):
    """Where the rows live, who owns them and the key their erasure requests are sealed to (the fields of
    `complai external register`'s options)."""

    kind: Literal["parquet", "table"] = Field(description="parquet: a Parquet file or folder; table: db.table")
    location: str = Field(
        min_length=1,
        max_length=4096,
        description="An absolute path or a URI the server's Spark reads (a relative path is refused: the server "
        "would resolve it from its own working folder), or a catalogue table db.table",
    )
    owner: str = Field(min_length=1, max_length=128, description="The system that owns the rows and erases them")
    owner_key: str = Field(
        min_length=1,
        max_length=80,
        description="The owner system's X25519 public key, as `complai share keygen` writes it in its .pub file "
        "(complai-x25519-public:...)",
    )
    erasure_days: int = Field(default=30, ge=1, le=3650, description="Days the owner has to erase a subject's rows")
    time_column: str | None = Field(
        default=None, description="A date or datetime field: rows older than the dataset's retention are never read"
    )

    @field_validator("location", "owner")
    @classmethod
    def _printable(cls, v: str) -> str:
        # the store keeps them as text (PostgreSQL refuses a NUL), and a terminal shows them to people
        if any(unicodedata.category(c) == "Cc" for c in v):
            raise ValueError("must not contain a control character")
        return v

    @field_validator("location")
    @classmethod
    def _absolute(cls, v: str, info: ValidationInfo) -> str:
        # a relative path would be resolved from the server's working folder, whichever it is at each read
        if info.data.get("kind") == "parquet" and not (v.startswith("/") or _URI.match(v)):
            raise ValueError("give the absolute path (or a URI such as s3a://...) the server's Spark reads")
        return v


class ExternalIn(Strict):
    """An external dataset: its schema (docs/schema.md) as a JSON object (`definition`) or YAML text
    (`yaml`), and its source."""

    definition: dict[str, Any] | None = Field(default=None, description="The schema as a JSON object")
    yaml: str | None = Field(default=None, max_length=256 * 1024, description="The schema as YAML text")
    source: SourceIn

    @model_validator(mode="after")
    def _one(self) -> ExternalIn:
        if (self.definition is None) == (self.yaml is None):
            raise ValueError("give the schema either as `definition` (JSON) or as `yaml` (text), not both")
        return self

    def schema_source(self) -> str | dict[str, object]:
        return self.yaml if self.yaml is not None else dict(self.definition or {})


class SourceOut(BaseModel):
    """The source as registered (its location, a server path, is not repeated)."""

    kind: str
    owner: str
    erasure_days: int
    time_column: str | None


class ExternalOut(DatasetOut):
    """The registered dataset's declaration, as GET /datasets/{name} shows it, and its source."""

    source: SourceOut


# a consent record as a row of `--consents` CSV: subject (or the schema's subject column), purpose, and
# optionally basis, granted_at, withdrawn_at, notice_version, source; an absent or null value is an
# empty cell
ConsentRow = dict[str, str | None]
Consents = Annotated[
    list[ConsentRow],
    Field(
        description="Consent records, one object a row of the CLI's --consents CSV: subject (or the schema's subject "
        "column) and purpose, optionally basis, granted_at, withdrawn_at (ISO 8601), notice_version, source. A "
        "caller who may not record consents (admin) gives them only for the subjects its enrolment creates."
    ),
]


class EnrolIn(Strict):
    ids: list[str] = Field(description="The lake's subject ids, as the source holds them (the same bytes)")
    consents: Consents | None = None


class SourceEnrolIn(Strict):
    consents: Consents | None = None


class EnrolOut(BaseModel):
    """What an enrolment did: subjects linked (new to the vault, already enrolled, erased and skipped),
    consents taken, and its ledger entry."""

    dataset: str
    subjects: int
    new_subjects: int
    already_enrolled: int
    skipped_erased: int
    consents: int
    ledger_seq: int


class ErasureRequestOut(BaseModel):
    """An erasure request to an owner system: the subject by pseudonym, never by id."""

    id: str
    dataset: str
    subject: str = Field(description="The subject's pseudonym")
    requested_at: str
    due_at: str
    state: str = Field(description="pending, present (rows still found by a scan) or gone (verified)")
    exported: bool
    checked_at: str | None


class VerifyIn(Strict):
    dataset: str | None = Field(default=None, description="One external dataset (default: all with open requests)")


# --- registration and enrolment ------------------------------------------------------------------


@router.post(
    "/external/datasets",
    tags=[TAG],
    status_code=201,
    summary="Register an external dataset: its schema checked against its source's physical types (Spark)",
    description="The source's physical schema is read from its metadata (no rows) by the server's Spark, and "
    "every declared field must have a type that holds its values exactly; the catalogue entry, the source and "
    "one `dataset.registered` event are written together. Needs `admin` on the dataset.",
    responses=problems(CONFLICT),
)
def register_external(body: ExternalIn, session: AdminSession, response: Response) -> ExternalOut:
    spec = session.parse_schema(body.schema_source())
    session.register_external(spec, body.source.model_dump())
    (doc,) = session.describe_datasets(spec.name)
    response.headers["Location"] = f"/api/v1/datasets/{spec.name}"
    source = body.source.model_dump(exclude={"location", "owner_key"})
    return ExternalOut.model_validate({**doc, "source": source})


def _consents(rows: list[ConsentRow] | None) -> pd.DataFrame | None:
    """Consent records as the frame an ingest's CSV becomes: text, None for an absent value."""
    if rows is None:
        return None
    columns = list(dict.fromkeys(c for row in rows for c in row))
    return pd.DataFrame([[row.get(c) for c in columns] for row in rows], columns=columns, dtype=object)


def _enrolled(got: EnrolResult) -> EnrolOut:
    return EnrolOut(
        dataset=got.dataset,
        subjects=got.subjects,
        new_subjects=got.new_subjects,
        already_enrolled=got.already_enrolled,
        skipped_erased=got.skipped_erased,
        consents=got.consents,
        ledger_seq=got.seq,
    )


@router.post(
    "/external/datasets/{name}/enrolments",
    tags=[TAG],
    summary="Enrol the lake's subject ids in an external dataset, with their consents (recorded)",
    description="Needs `ingest` on the dataset. Each id becomes a vault subject (or is one already) linked to "
    "the dataset; an id of an erased subject is skipped and never linked again, and an id that is empty or has "
    "surrounding whitespace is refused, with nothing enrolled. One `external.enrolled` event.",
    responses=problems(NOT_FOUND, INTEGRITY),
)
def enrol(name: str, body: EnrolIn, session: AdminSession) -> EnrolOut:
    return _enrolled(session.enrol(name, body.ids, _consents(body.consents)))


@router.post(
    "/external/datasets/{name}/enrolments/from-source",
    tags=[TAG],
    status_code=202,
    summary="Enrol every distinct subject id the source holds now, read by Spark, as a job (recorded)",
    description="Needs `ingest` on the dataset, checked before the job starts. The job checks the source "
    "against its registered physical types, reads its distinct subject ids a partition at a time and enrols "
    "them as the enrolment route does; its result is that route's answer.",
    responses={**problems(NOT_FOUND), 202: {"description": "The enrolment job", "headers": JOB_HEADERS}},
)
def enrol_from_source(
    name: str, request: Request, response: Response, session: AdminSession, body: SourceEnrolIn | None = None
) -> JobOut:
    session.require_external(name, "ingest")  # authorised, known and external before the job
    consents = _consents(body.consents if body is not None else None)

    def work(s: Session, progress: Any) -> dict[str, Any]:
        return _enrolled(s.enrol_from_source(name, consents)).model_dump()

    return _submitted(request, response, session, "external.enrol", work)


# --- erasure requests ----------------------------------------------------------------------------


def _when(t: Any) -> str | None:
    return utc_iso(t) if t is not None else None


@router.get(
    "/external/requests",
    tags=[TAG],
    summary="The erasure requests to owner systems, oldest first (pseudonyms, dates, states; no id)",
    description="For principals who oversee the workspace (audit or admin).",
    responses=problems(),
)
def erasure_requests(
    session: AuditSession,
    dataset: Annotated[str | None, Query(description="One external dataset's requests (default: all)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[ErasureRequestOut]:
    found = session.erasure_requests(dataset)[offset : offset + limit]
    return [
        ErasureRequestOut(
            id=r.id,
            dataset=r.dataset,
            subject=r.subject,
            requested_at=utc_iso(r.requested_at),
            due_at=utc_iso(r.due_at),
            state=r.state,
            exported=r.exported,
            checked_at=_when(r.checked_at),
        )
        for r in found
    ]


@router.post(
    "/external/datasets/{name}/requests/export",
    tags=[TAG],
    summary="The dataset's open erasure requests, each sealed to its owner system's key, as JSON Lines (recorded)",
    description='Needs `admin` on the dataset. One line a request, `{"id": ..., "sealed": base64}`: only '
    "the owner's private key opens one (it names the subject by the owner's own id). Open requests are in "
    "every export until a scan verifies them gone. One `external.requests_exported` event.",
    response_class=Response,
    responses={
        **problems(NOT_FOUND, INTEGRITY),
        200: {
            "description": "The sealed requests, one JSON object a line",
            "content": {JSON_LINES: {"schema": {"type": "string"}}},
            "headers": {
                "X-Complai-Requests": {"description": "How many requests it holds", "schema": {"type": "integer"}}
            },
        },
    },
)
def export_erasure_requests(name: str, session: RequestSession) -> Response:
    with tempfile.TemporaryDirectory(prefix="complai-requests-") as folder:  # 0700, removed with what is in it
        out = Path(folder) / "requests.jsonl"
        n = session.export_erasure_requests(name, out)
        data = out.read_bytes()
    return Response(data, media_type=JSON_LINES, headers={"X-Complai-Requests": str(n)})


@router.post(
    "/external/verify",
    tags=[TAG],
    status_code=202,
    summary="Scan the sources for the rows of erased subjects (Spark), as a job; record what was found",
    description="For principals who oversee the workspace (audit or admin), checked before the job starts. A "
    "request with no row left is verified gone, one with rows is marked present. The job's result: per "
    "dataset, its requests, gone and present (`datasets`), and the `external.erasure_checked` entry (null "
    "when no request was open: nothing is scanned or recorded).",
    responses={**problems(NOT_FOUND, INTEGRITY), 202: {"description": "The scan's job", "headers": JOB_HEADERS}},
)
def verify_erasures(
    request: Request, response: Response, session: AuditSession, body: VerifyIn | None = None
) -> JobOut:
    dataset = body.dataset if body is not None else None
    session.erasure_requests(dataset)  # oversight, before the job: a refusal is a 403, recorded
    if dataset is not None:
        session.require_external(dataset)  # unknown: 404; not external: 400; not a failed job

    def work(s: Session, progress: Any) -> dict[str, Any]:
        results = s.verify_external_erasures(dataset)
        return {"datasets": results, "ledger_seq": s.last_seq if results else None}

    return _submitted(request, response, session, "external.verify", work)


def _submitted(request: Request, response: Response, session: Session, kind: str, work: Any) -> JobOut:
    job = request.app.state.jobs.submit(session, kind, work)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return JobOut.model_validate(job.as_dict())
