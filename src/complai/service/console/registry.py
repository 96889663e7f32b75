"""Console pages: the registry. Datasets (schema, purposes, versions, consent coverage), principals and
policy rules, privacy budgets with their burn-down, models (cards, membership-inference audits, flags),
sharing agreements with the shares made under each, and compliance audits (run, list, read, verify).

Every page acts through a session for the purpose its CLI command uses: `administration` for datasets
and budgets (`complai dataset list|show`, `complai dp budget`), `security` for principals and rules
(`complai principal|policy list`), `audit` for models, agreements and audits (`complai model list|show`,
`complai share list`, `complai audit`). A principal the session refuses gets the not-allowed page (the
refusal is recorded). Charts are SVG drawn here, styled by classes: the console's CSP allows no inline
style or script.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from complai.app.session import Session
from complai.errors import IntegrityError, NotFound
from complai.service.api.compliance import AUDITED, FORMATS, audits_dir
from complai.service.console.web import Csrf, console_session, render
from complai.service.deps import WorkspaceDep
from complai.service.jobs import JobProgress

router = APIRouter()

AdminPage = Annotated[Session, Depends(console_session("administration"))]
SecurityPage = Annotated[Session, Depends(console_session("security"))]
AuditPage = Annotated[Session, Depends(console_session("audit"))]

Name = Annotated[str, PathParam(min_length=1, max_length=200)]
ModelId = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
Seq = Annotated[int, PathParam(ge=0, le=2**62)]

MAX_EVENTS = 20_000
"""The most ledger events of one kind a page reads (budget spends, model audits, shares); a page says
when it stopped there."""
AUDITS_PAGE = 200
"""Recorded audits per page of the audit list."""
MAX_DOTS = 200
"""A burn-down marks each spend with a dot up to this many spends (the line is drawn through all)."""
SPENDS_SHOWN = 100
"""The latest spends a budget lists."""

AUDIT_JOB = "compliance.audit"

# the HTML report is a document of its own: its inline styles and data: charts are allowed, nothing
# else (no script, no form, no fetch), and only the console may frame it
REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'self'; sandbox"
)


def _events(session: Session, kind: str, limit: int = MAX_EVENTS) -> list[tuple[int, dict[str, Any]]]:
    """Ledger events of `kind` (the auditor's view of the ledger), oldest first: (seq, event)."""
    return [(e.seq, json.loads(e.data)) for e in session.ledger_entries(kind=kind, limit=limit)]


# --- datasets ------------------------------------------------------------------------------------


@router.get("/datasets", response_class=HTMLResponse)
def datasets(request: Request, session: AdminPage) -> HTMLResponse:
    rows = session.describe_datasets()
    return render(request, "console/datasets.html", title="Datasets", datasets=rows)


@router.get("/datasets/{name}", response_class=HTMLResponse)
def dataset(request: Request, name: Name, session: AdminPage) -> HTMLResponse:
    (doc,) = session.describe_datasets(name)
    coverage = session.consent_coverage(name)
    for c in coverage:
        c["percent"] = round(100 * c["consented"] / c["subjects"]) if c["subjects"] else None
    return render(
        request,
        "console/dataset.html",
        title=f"Dataset {name}",
        d=doc,
        versions=session.dataset_versions(name),
        coverage=coverage,
    )


# --- principals and policy -----------------------------------------------------------------------


@router.get("/principals", response_class=HTMLResponse)
def principals(request: Request, session: SecurityPage) -> HTMLResponse:
    people = session.list_principals()
    counts = session.token_counts()
    return render(
        request,
        "console/principals.html",
        title="Principals and policy",
        principals=people,
        tokens=counts,
        rules=session.rules(),
        builtin=session.builtin_rules(),
    )


# --- privacy budgets -----------------------------------------------------------------------------


def burn_down(total: float, points: list[tuple[str, float]], width: int = 480, height: int = 140) -> dict[str, Any]:
    """An SVG burn-down of a budget: epsilon left (y, from `total` down to 0) after each spend (x, in
    order). Coordinates only; the template draws them, styled by classes."""
    pad = 24
    values = [total, *(max(0.0, v) for _, v in points)]
    n = len(values)
    top = max(total, max(values)) or 1.0

    def x(i: int) -> float:
        return round(pad + (width - 2 * pad) * (i / (n - 1) if n > 1 else 0), 1)

    def y(v: float) -> float:
        return round(pad + (height - 2 * pad) * (1 - v / top), 1)

    dots = [{"x": x(i + 1), "y": y(v), "time": t, "left": v} for i, (t, v) in enumerate(points)]
    return {
        "width": width,
        "height": height,
        "line": " ".join(f"{x(i)},{y(v)}" for i, v in enumerate(values)),
        "dots": dots if len(dots) <= MAX_DOTS else [],
        "axis": {"x0": pad, "x1": width - pad, "y0": y(0.0), "ytop": y(top)},
        "top": top,
    }


@router.get("/budgets", response_class=HTMLResponse)
def budgets(request: Request, session: AdminPage) -> HTMLResponse:
    """Each dataset's budgets (its own and its principals'), spent against total, each with its
    burn-down replayed from the ledger, and the latest spends on the dataset. The auditor's view, as
    `complai dp budget` shows it: refused up front, not shown as an empty page."""
    session.authorise("audit")
    out = []
    for name in (d["name"] for d in session.describe_datasets()):
        states = [s.as_dict() for s in session.audited_budgets(name)]
        if not states:
            out.append({"dataset": name, "own": None, "principals": [], "count": 0, "spends": []})
            continue
        history = session.budget_history(name)
        for s in states:
            s["percent"] = min(100, round(100 * s["epsilon_spent_at_delta"] / s["epsilon"])) if s["epsilon"] else 100
            points = [(str(h["time"]), float(h["epsilon_left"])) for h in history.get(s["principal"], [])]
            own = s["principal"] == "*"
            s["chart"] = burn_down(s["epsilon"], points, width=480 if own else 300, height=140 if own else 100)
            s["count"] = len(points)
        spends = history.get("*", [])
        out.append(
            {
                "dataset": name,
                "own": next((s for s in states if s["principal"] == "*"), None),
                "principals": [s for s in states if s["principal"] != "*"],
                "count": len(spends),
                "spends": spends[-SPENDS_SHOWN:],
            }
        )
    return render(request, "console/budgets.html", title="Privacy budgets", budgets=out)


# --- models --------------------------------------------------------------------------------------


@router.get("/models", response_class=HTMLResponse)
def models(request: Request, session: AuditPage) -> HTMLResponse:
    return render(request, "console/models.html", title="Models", models=session.models())


@router.get("/models/{model_id}", response_class=HTMLResponse)
def model(request: Request, model_id: ModelId, session: AuditPage) -> HTMLResponse:
    info = session.model(model_id)
    audits = [(seq, e) for seq, e in _events(session, "model.audited") if e.get("model_id") == model_id]
    return render(
        request,
        "console/model.html",
        title=f"Model {model_id}",
        m=info,
        card=dict(info["card"]),
        warnings=info["card"].warnings,
        audits=audits,
    )


# --- agreements and shares -----------------------------------------------------------------------


@router.get("/agreements", response_class=HTMLResponse)
def agreements(request: Request, session: AuditPage) -> HTMLResponse:
    shares: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for seq, e in _events(session, "data.shared"):
        shares[str(e.get("agreement"))].append((seq, e))
    rows = [{"a": a, "shares": shares.get(a.id, [])} for a in session.agreements()]
    return render(request, "console/agreements.html", title="Agreements and shares", agreements=rows)


# --- compliance audits ---------------------------------------------------------------------------


def _audit_entry(session: Session, seq: int) -> dict[str, Any]:
    entries = session.ledger_entries(start=seq, kind=AUDITED, limit=1)
    found: list[dict[str, Any]] = [json.loads(e.data) for e in entries if e.seq == seq]
    if not found:
        raise NotFound(f"no audit recorded at ledger entry {seq}")
    return found[0]


@router.get("/audits", response_class=HTMLResponse)
def audits(
    request: Request,
    session: AuditPage,
    ws: WorkspaceDep,
    start: Annotated[int, Query(ge=0, le=2**62, description="Audits recorded from this ledger entry on")] = 0,
) -> HTMLResponse:
    """The recorded audits, a page at a time (oldest first across pages, newest first within one), and
    this principal's audit runs (every principal's for those who oversee jobs)."""
    root = audits_dir(ws)
    entries = session.ledger_entries(start=start, kind=AUDITED, limit=AUDITS_PAGE + 1)
    found = [(e.seq, json.loads(e.data)) for e in entries]
    more = found[AUDITS_PAGE][0] if len(found) > AUDITS_PAGE else None
    recorded = [
        {"seq": seq, "e": e, "stored": (root / str(seq) / "report.html").is_file()}
        for seq, e in reversed(found[:AUDITS_PAGE])
    ]
    jobs = [j for j in session.jobs(limit=50) if j.kind == AUDIT_JOB]
    running = any(not j.finished for j in jobs)
    return render(
        request,
        "console/audits.html",
        title="Audits",
        audits=recorded,
        jobs=jobs,
        more=more,
        start=start,
        running=running,
    )


@router.post("/audits", dependencies=[Csrf])
def run_audit(request: Request, session: AuditPage, ws: WorkspaceDep) -> RedirectResponse:
    """Queue an audit as a job (authorised first: a refusal is the not-allowed page, not a failed job);
    its reports go to the server's folder of audits, as the API's do. The list page shows its state."""
    session.authorise("audit")
    root = audits_dir(ws)
    root.mkdir(mode=0o700, exist_ok=True)  # as the API makes it: private, whoever runs the first audit

    def work(own: Session, progress: JobProgress) -> dict[str, Any]:
        staging = root / f".run-{secrets.token_hex(8)}"
        try:
            result = own.compliance_audit(staging, FORMATS)
            seq = int(result["ledger_seq"])
            staging.rename(root / str(seq))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return {"audit": seq, "digest": result["digest"], "summary": result["summary"]}

    request.app.state.jobs.submit(session, AUDIT_JOB, work)
    return RedirectResponse("/console/audits", status_code=303)


def _report_file(session: Session, ws: Any, seq: int, fmt: str) -> Path | None:
    path = audits_dir(ws) / str(seq) / f"report.{fmt}"
    return path if path.is_file() else None


def _audit_page(
    request: Request, session: Session, ws: Any, seq: int, verified: dict[str, Any] | None = None
) -> HTMLResponse:
    e = _audit_entry(session, seq)
    path = _report_file(session, ws, seq, "json")
    controls: list[dict[str, Any]] = []
    if path is not None:
        try:
            controls = list(json.loads(path.read_bytes()).get("controls", []))
        except ValueError:
            controls = []
    return render(
        request,
        "console/audit.html",
        title=f"Audit {seq}",
        seq=seq,
        e=e,
        stored=path is not None,
        html_report=_report_file(session, ws, seq, "html") is not None,
        controls=controls,
        verified=verified,
    )


@router.get("/audits/{seq}", response_class=HTMLResponse)
def audit(request: Request, seq: Seq, session: AuditPage, ws: WorkspaceDep) -> HTMLResponse:
    return _audit_page(request, session, ws, seq)


@router.post("/audits/{seq}/verify", response_class=HTMLResponse, dependencies=[Csrf])
def verify_audit(request: Request, seq: Seq, session: AuditPage, ws: WorkspaceDep) -> HTMLResponse:
    """The server's copy of the report checked against the ledger: verified, or why not."""
    _audit_entry(session, seq)
    path = _report_file(session, ws, seq, "json")
    if path is None:
        raise NotFound(f"the audit at ledger entry {seq} has no report on the server (run elsewhere)")
    try:
        verified = {"ok": True, **session.verify_report(path)}
    except IntegrityError as exc:
        verified = {"ok": False, "problem": exc.message}
    return _audit_page(request, session, ws, seq, verified)


@router.get("/audits/{seq}/report", response_class=Response)
def audit_report(seq: Seq, session: AuditPage, ws: WorkspaceDep) -> Response:
    """The HTML report as the compliance layer rendered it, framed by the audit's page (no script runs)."""
    _audit_entry(session, seq)
    path = _report_file(session, ws, seq, "html")
    if path is None:
        raise NotFound(f"the audit at ledger entry {seq} has no HTML report on the server (run elsewhere)")
    headers = {"Content-Security-Policy": REPORT_CSP, "X-Frame-Options": "SAMEORIGIN"}
    return Response(path.read_bytes(), media_type="text/html; charset=utf-8", headers=headers)
