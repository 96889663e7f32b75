"""The verifiable ledger over HTTP: its status, entries, inclusion and consistency proofs, checkpoints,
witnesses, verification and export.

The same operations and purposes as `complai ledger ...` (cli/ledger.py): reading, proving, signing a
checkpoint, verifying and exporting are the auditor's (`audit`); trusting a witness is an admin's, for
`security`. Entries carry pseudonyms and digests, never personal data. Verifying the whole ledger is a
job (`202` and `/api/v1/jobs/{id}`); an export is a zip download of what `complai ledger export`
writes, for `complai ledger verify-export`. The same log is served to outside verifiers as C2SP
tlog-tiles at /tlog (service/tlog.py).
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from complai.app.session import Session
from complai.crypto.signing import VerifierKey
from complai.errors import IntegrityError, NotFound
from complai.ledger.checkpoint import SignedNote
from complai.service.api.common import CONFLICT, INTEGRITY, NOT_FOUND, Strict, problems
from complai.service.api.system import JobOut
from complai.service.deps import AuditSession, SecuritySession

router = APIRouter(prefix="/ledger", tags=["ledger"])

Seq = Annotated[int, Path(ge=0, le=2**62, description="An entry's sequence number")]
Size = Annotated[int, Path(ge=1, le=2**62, description="A tree size")]
MAX_PAGE = 500

# --- models ------------------------------------------------------------------------------------------


class Status(BaseModel):
    origin: str
    size: int
    root: str = Field(description="Hex root of the whole log")
    log_key: str = Field(description="The log's note verifier key (name+keyid+base64)")
    latest_checkpoint: int | None = Field(description="Size of the latest signed checkpoint")
    witnesses: list[str]
    entries_by_type: dict[str, int]


class EntryOut(BaseModel):
    seq: int
    type: str
    leaf_hash: str = Field(description="Hex SHA-256(0x00 || entry bytes)")
    event: dict[str, Any] = Field(description="The event (its bytes are the RFC 8785 canonical JSON)")


class EntryPage(BaseModel):
    entries: list[EntryOut]
    next: int | None = Field(description="`start` for the next page; null at the end")


class InclusionOut(BaseModel):
    seq: int
    tree_size: int
    leaf_hash: str
    entry: str = Field(description="The entry's exact bytes (UTF-8 JSON)")
    proof: list[str] = Field(description="Hex hashes, bottom-up (RFC 9162 2.1.3)")
    root: str
    checkpoint: str | None = Field(description="The signed checkpoint at tree_size, when there is one")
    log_key: str


class ConsistencyOut(BaseModel):
    size1: int
    size2: int
    root1: str
    root2: str
    proof: list[str] = Field(description="Hex hashes (RFC 9162 2.1.4)")


class CheckpointOut(BaseModel):
    size: int
    root: str
    note: str = Field(description="The C2SP signed note, with stored cosignatures")
    signers: list[str] = Field(description="Names on its signature lines")


class WitnessOut(BaseModel):
    name: str
    vkey: str


class WitnessIn(Strict):
    vkey: Annotated[str, Field(min_length=1, max_length=500, description="The witness's verifier key")]


class CosignatureIn(Strict):
    line: Annotated[str, Field(min_length=1, max_length=1024, description="One note signature line")]


class CosignatureOut(BaseModel):
    witness: str
    size: int
    line: str


class VerifyIn(Strict):
    witnesses: Annotated[int, Field(ge=0, le=100, description="Cosignatures required on the latest checkpoint")] = 0


def _entry(seq: int, kind: str, leaf: bytes, data: bytes) -> EntryOut:
    try:
        event = json.loads(data)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise IntegrityError(f"ledger entry {seq} is not an event: the ledger was altered (run a verification)")
    return EntryOut(seq=seq, type=kind, leaf_hash=leaf.hex(), event=event)


def _checkpoint(note: SignedNote) -> CheckpointOut:
    cp = note.checkpoint
    return CheckpointOut(size=cp.size, root=cp.root.hex(), note=note.text(), signers=[s.name for s in note.signatures])


# --- routes ------------------------------------------------------------------------------------------


@router.get("", summary="Size, root, log key, latest checkpoint, witnesses and entries per type", responses=problems())
def status(session: AuditSession) -> Status:
    st = session.ledger_status()
    return Status(
        origin=st.origin,
        size=st.size,
        root=st.root.hex(),
        log_key=st.log_key.encode(),
        latest_checkpoint=st.latest_checkpoint.checkpoint.size if st.latest_checkpoint else None,
        witnesses=[w.name for w in st.witnesses],
        entries_by_type=st.entries_by_type,
    )


@router.get("/entries", summary="Entries in sequence order, a page at a time", responses=problems(INTEGRITY))
def entries(
    session: AuditSession,
    start: Annotated[int, Query(ge=0, le=2**62, description="First sequence number")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    type: Annotated[str | None, Query(min_length=1, max_length=100, description="Only this event type")] = None,
) -> EntryPage:
    rows = session.ledger_entries(start=start, kind=type, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return EntryPage(
        entries=[_entry(e.seq, e.kind, e.leaf_hash, e.data) for e in rows],
        next=rows[-1].seq + 1 if more else None,
    )


def _one(session: Session, seq: int) -> EntryOut:
    rows = session.ledger_entries(start=seq, limit=1)
    if not rows or rows[0].seq != seq:
        raise NotFound(f"no ledger entry {seq}")
    e = rows[0]
    return _entry(e.seq, e.kind, e.leaf_hash, e.data)


@router.get("/entries/{seq}", summary="One entry", responses=problems(NOT_FOUND, INTEGRITY))
def entry(seq: Seq, session: AuditSession) -> EntryOut:
    return _one(session, seq)


@router.get(
    "/entries/{seq}/proof",
    summary="Inclusion proof of an entry, against a given tree size or the latest checkpoint covering it",
    description="Without `size`, signs a checkpoint first when none covers the entry yet (as `complai ledger prove`).",
    responses=problems(NOT_FOUND),
)
def inclusion(
    seq: Seq,
    session: AuditSession,
    size: Annotated[int | None, Query(ge=1, le=2**62, description="Tree size to prove against")] = None,
) -> InclusionOut:
    p = session.ledger_prove(seq, size)
    return InclusionOut.model_validate(p.as_dict())


@router.get("/consistency", summary="Consistency proof between two tree sizes", responses=problems())
def consistency(
    session: AuditSession,
    size1: Annotated[int, Query(alias="from", ge=1, le=2**62, description="The older tree size")],
    size2: Annotated[int | None, Query(alias="to", ge=1, le=2**62, description="The newer (default: now)")] = None,
) -> ConsistencyOut:
    proof, root1, root2 = session.ledger_consistency(size1, size2)
    return ConsistencyOut(
        size1=size1,
        size2=size2 if size2 is not None else session.ledger_head().size,
        root1=root1.hex(),
        root2=root2.hex(),
        proof=[h.hex() for h in proof],
    )


@router.get("/checkpoints", summary="Signed checkpoints, newest first", responses=problems())
def checkpoints(
    session: AuditSession,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> list[CheckpointOut]:
    notes = list(reversed(session.ledger_checkpoints()))
    return [_checkpoint(n) for n in notes[offset : offset + limit]]


@router.get("/checkpoints/latest", summary="The latest signed checkpoint", responses=problems(NOT_FOUND))
def latest_checkpoint(session: AuditSession) -> CheckpointOut:
    notes = session.ledger_checkpoints()
    if not notes:
        raise NotFound("the ledger has no signed checkpoint yet")
    return _checkpoint(notes[-1])


@router.post(
    "/checkpoints",
    summary="Sign the current head as a checkpoint (recorded; the latest one when nothing was appended since)",
    responses=problems(),
)
def sign_checkpoint(session: AuditSession) -> CheckpointOut:
    return _checkpoint(session.ledger_checkpoint())


@router.post(
    "/checkpoints/{size}/cosignatures",
    summary="Keep a trusted witness's cosignature (a C2SP tlog-witness answer) on a stored checkpoint",
    responses=problems(INTEGRITY),
)
def add_cosignature(size: Size, body: CosignatureIn, session: AuditSession) -> CosignatureOut:
    done = session.ledger_add_cosignature(size, body.line)
    return CosignatureOut(witness=done.witness, size=done.size, line=done.line)


@router.get("/witnesses", summary="Witnesses whose cosignatures count toward a quorum", responses=problems())
def witnesses(session: AuditSession) -> list[WitnessOut]:
    return [WitnessOut(name=k.name, vkey=k.encode()) for k in session.ledger_witnesses()]


@router.post(
    "/witnesses",
    status_code=201,
    summary="Trust a witness (an admin action, recorded)",
    responses=problems(CONFLICT),
)
def trust_witness(body: WitnessIn, session: SecuritySession) -> WitnessOut:
    key = VerifierKey.parse(body.vkey)
    session.trust_witness(key)
    return WitnessOut(name=key.name, vkey=key.encode())


ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"model": JobOut, "description": "Accepted: a job (follow its Location)"}
}


@router.post(
    "/verify",
    status_code=202,
    summary="Recompute the whole tree and check every checkpoint (a job; its result is the report)",
    responses=problems(ACCEPTED),
)
def verify(request: Request, body: VerifyIn, session: AuditSession) -> JSONResponse:
    total = session.ledger_head().size  # authorised first
    quorum = body.witnesses

    def work(own: Session, progress: Any) -> dict[str, Any]:
        report = own.ledger_verify(quorum, progress=progress)
        return report.as_dict()

    job = request.app.state.jobs.submit(session, "ledger.verify", work, total=total, unit="entries")
    out = JobOut.model_validate(job.as_dict()).model_dump(mode="json")
    return JSONResponse(out, status_code=202, headers={"Location": f"/api/v1/jobs/{job.id}"})


@router.post(
    "/export",
    summary="Export entries, checkpoints and keys for an outside auditor (a zip for `ledger verify-export`)",
    description="Signs the head first, so that the export is signed up to its end.",
    response_class=Response,
    responses={
        200: {"description": "A zip archive", "content": {"application/zip": {"schema": {"type": "string"}}}},
        **problems(),
    },
)
def export(session: AuditSession) -> Response:
    with tempfile.TemporaryDirectory(prefix="complai-ledger-") as tmp:
        out = FilePath(tmp) / "ledger"
        manifest = session.ledger_export(out)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(out.rglob("*")):
                if f.is_file():
                    z.write(f, f"ledger/{f.relative_to(out)}")
    name = f"ledger-{manifest['size']}.zip"
    return Response(
        buf.getvalue(),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )
