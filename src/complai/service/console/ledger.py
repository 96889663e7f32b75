"""Console pages: the ledger explorer. Browse the entries a page at a time, open one, and check it in
the browser: static/ledger.js fetches the signed checkpoint (/tlog/checkpoint) and the entry's inclusion
proof (`/console/ledger/{seq}/proof`), recomputes the leaf hash and the root with WebCrypto SHA-256 and
checks the checkpoint's Ed25519 signature with WebCrypto against the log key shown on the page (which
the reader may replace with the one they hold). The page never says "verified" on the server's word.
Everything here is the auditor's (purpose `audit`), as `complai ledger show|prove`."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from complai.app.session import Session
from complai.errors import NotFound
from complai.service.console.web import console_session, render

router = APIRouter()

AuditPage = Annotated[Session, Depends(console_session("audit"))]
PAGE = 50
_SHOWN = ("type", "v", "time", "actor", "purpose")


def _event(data: bytes) -> dict[str, Any] | None:
    """The entry's event, or None when its bytes are not one (altered at rest: the row says so)."""
    try:
        ev = json.loads(data)
    except ValueError:
        return None
    return ev if isinstance(ev, dict) else None


def _row(seq: int, kind: str, data: bytes) -> dict[str, Any]:
    ev = _event(data)
    if ev is None:
        return {"seq": seq, "type": kind, "time": "", "actor": "", "purpose": "", "details": "not an event"}
    details = {k: v for k, v in ev.items() if k not in _SHOWN}
    summary = json.dumps(details, sort_keys=True)
    return {
        "seq": seq,
        "type": kind,
        "time": str(ev.get("time", "")),
        "actor": str(ev.get("actor", "")),
        "purpose": str(ev.get("purpose", "")),
        "details": summary if len(summary) <= 100 else summary[:99] + "\u2026",
    }


@router.get("/ledger", response_class=HTMLResponse)
def ledger_page(
    request: Request,
    session: AuditPage,
    start: Annotated[int, Query(ge=0, le=2**62)] = 0,
    type: Annotated[str | None, Query(max_length=100)] = None,
) -> HTMLResponse:
    kind = type or None
    st = session.ledger_status()
    rows = session.ledger_entries(start=start, kind=kind, limit=PAGE + 1)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    latest = st.latest_checkpoint
    return render(
        request,
        "console/ledger.html",
        title="Ledger",
        size=st.size,
        origin=st.origin,
        log_key=st.log_key.encode(),
        checkpoint=latest.checkpoint.size if latest else None,
        signers=[s.name for s in latest.signatures[1:]] if latest else [],
        types=sorted(st.entries_by_type),
        kind=kind,
        rows=[_row(e.seq, e.kind, e.data) for e in rows],
        start=start,
        prev=max(0, start - PAGE) if start > 0 and kind is None else None,
        next=rows[-1].seq + 1 if more else None,
    )


def _entry(session: Session, seq: int) -> tuple[int, str, bytes, bytes]:
    rows = session.ledger_entries(start=seq, limit=1)
    if not rows or rows[0].seq != seq:
        raise NotFound(f"no ledger entry {seq}")
    e = rows[0]
    return e.seq, e.kind, e.leaf_hash, e.data


@router.get("/ledger/{seq}", response_class=HTMLResponse)
def entry_page(request: Request, session: AuditPage, seq: Annotated[int, Path(ge=0, le=2**62)]) -> HTMLResponse:
    seq, kind, leaf, data = _entry(session, seq)
    ev = _event(data)
    shown = json.dumps(ev, indent=2, sort_keys=True) if ev is not None else data.decode("utf-8", "replace")
    st = session.ledger_status()
    return render(
        request,
        "console/ledger_entry.html",
        title=f"Ledger entry {seq}",
        seq=seq,
        kind=kind,
        leaf_hash=leaf.hex(),
        event=shown,
        log_key=st.log_key.encode(),
        covered=bool(st.latest_checkpoint and st.latest_checkpoint.checkpoint.size > seq),
    )


@router.get("/ledger/{seq}/proof")
def entry_proof(
    session: AuditPage,
    seq: Annotated[int, Path(ge=0, le=2**62)],
    size: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> JSONResponse:
    """The entry's bytes and inclusion proof (against `size`, or a checkpoint that covers it, signed if
    none does yet), for the page's script to check; never a verdict."""
    proof = session.ledger_prove(seq, size)
    return JSONResponse(proof.as_dict(), headers={"Cache-Control": "no-store"})
