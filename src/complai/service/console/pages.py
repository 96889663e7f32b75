"""Console pages: the overview, the request work queue, DPIAs and incidents.

Every page acts through a session of the logged-in person, with the purposes the CLI uses for the same
operation: `audit` to read the request register, DPIAs, budgets, audits and the ledger; `subject_request`
to act on a request; `security` for incidents. On the overview a section the policy refuses reads "not
available to you"; a page or an action refused outright is the error page (403; the session records the
refusal as access.denied). Every change is a POST form with the login's CSRF token, answered with a
redirect back to the page it changed (which then says what was done).

The latest audit's controls come from the report the service keeps in `<workspace>/audits/<ledger
entry>/report.json` (where an audit run through the service writes it), read only when its digest is
the one the ledger recorded; an audit run elsewhere shows its counts from the ledger alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from complai.app.session import Session
from complai.clock import parse_utc
from complai.compliance import humanize
from complai.errors import InvalidInput, NotFound, PolicyDenied
from complai.service.api.compliance import audits_dir
from complai.service.console.web import ConsoleCaller, Csrf, console_session, render, templates
from complai.service.deps import WorkspaceDep

router = APIRouter()

T = TypeVar("T")

AuditView = Annotated[Session, Depends(console_session("audit"))]
RequestWork = Annotated[Session, Depends(console_session("subject_request"))]
SecurityWork = Annotated[Session, Depends(console_session("security"))]

AUDITED = "compliance.audited"
MAX_REPORT_BYTES = 64 << 20
SOON_DAYS = 7  # a request due within this many days is "near its deadline"
LOW_BUDGET = 0.25
PAGE = 100  # rows per page of a list  # a budget with less than this share of its epsilon left is "running low"
NOT_AVAILABLE = "not available to you"
CONTROL_PAGES = {  # where in the console a control's fix is done
    "DPIA-1": ("/console/dpias", "Impact assessments"),
    "REQ-1": ("/console/requests", "Subject requests"),
    "INC-1": ("/console/incidents", "Incidents"),
    "LEDGER-1": ("/console/ledger", "Ledger"),
    "DP-1": ("/console/models", "Models"),
    "SHARE-1": ("/console/agreements", "Agreements"),
    "XFER-1": ("/console/agreements", "Agreements"),
    "ACCESS-1": ("/console/principals", "Principals"),
    "DATA-1": ("/console/datasets", "Datasets"),
    "BASIS-1": ("/console/datasets", "Datasets"),
    "RET-1": ("/console/datasets", "Datasets"),
}
STATUS_WORDS = {"fail": "failing", "warning": "needs attention", "pass": "passing"}
REQUEST_TYPES = {
    "access": "Access to their data",
    "portability": "A copy of their data to take elsewhere",
    "erasure": "Erase their data",
    "rectification": "Correct their data",
    "restriction": "Restrict the use of their data",
    "objection": "Object to a use of their data",
    "opt-out": "Opt out of sale or sharing",
}
VERIFICATION = {
    "account": "Signed in to their account",
    "document": "An identity document",
    "email": "A reply from their email address",
    "in-person": "In person",
    "authorised-agent": "Through an authorised agent",
}
DONE = {  # what the page says after a form succeeded (?done=...)
    "verified": "Identity verification recorded.",
    "acknowledged": "Acknowledgement recorded.",
    "extended": "Deadline extended; tell the subject why.",
    "fulfilled": "Request carried out.",
    "fulfilled-portal": "Request carried out. The person sees it on the portal, with their data to download for "
    "an access or portability request.",
    "partial": "Part of the request failed; the failed steps can be retried.",
    "rejected": "Request rejected; tell the subject why.",
    "generated": "A new version was written. Review it, then sign it off.",
    "signed": "Signed off.",
    "notified": "Notification recorded.",
    "closed": "Incident closed.",
    "opened": "Incident opened: the 72-hour clock has started.",
}


# --- words for times --------------------------------------------------------------------------------


def span(seconds: float) -> str:
    """A duration in the largest unit that reads naturally: '40 minutes', '5 hours', '3 days'."""
    s = abs(seconds)
    if s < 3600:
        return humanize.plural(max(1, int(s // 60)), "minute")
    if s < 96 * 3600:  # hours up to four days: a 72-hour clock reads in hours
        return humanize.plural(int(s // 3600), "hour")
    return humanize.plural(int(s // 86400), "day")


def due_words(due: str | None, now: datetime) -> tuple[str, bool]:
    """('in 3 days', False) or ('2 hours overdue', True) for a deadline."""
    if not due:
        return "", False
    left = (parse_utc(due) - now).total_seconds()
    if abs(left) < 60:
        return "due now", left < 0
    return (f"in {span(left)}", False) if left > 0 else (f"{span(left)} overdue", True)


def ago(when: str | None, now: datetime) -> str:
    """'3 days ago', 'in 2 hours' (a time in the future), or '' for none."""
    if not when:
        return ""
    diff = (now - parse_utc(when)).total_seconds()
    if abs(diff) < 60:
        return "just now"
    return f"{span(diff)} ago" if diff > 0 else f"in {span(diff)}"


def _words_for_templates() -> None:
    env = templates.env
    env.filters.setdefault("when", humanize.when)
    env.filters.setdefault("number", humanize.number)
    env.filters.setdefault("period", humanize.period)
    env.filters.setdefault("evidence", humanize.value)
    env.globals.setdefault("STATUS_WORDS", STATUS_WORDS)
    env.globals.setdefault("REQUEST_TYPES", REQUEST_TYPES)
    env.globals.setdefault("VERIFICATION", VERIFICATION)


_words_for_templates()


def _available(fn: Callable[[], T]) -> tuple[T | None, bool]:
    """(value, True), or (None, False) when the policy refuses this person (the session recorded it)."""
    try:
        return fn(), True
    except PolicyDenied:
        return None, False


def _pager(total: int, page: int, base: str) -> dict[str, Any]:
    """Links to the previous and next pages of a list of `total` rows shown PAGE at a time."""
    last = max(1, -(-total // PAGE))
    return {
        "page": page,
        "last": last,
        "previous": f"{base}page={page - 1}" if page > 1 else None,
        "next": f"{base}page={page + 1}" if page < last else None,
    }


def _done(done: str | None) -> str | None:
    return DONE.get(done) if done else None


def _back(path: str, done: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?done={done}", status_code=303)


# --- the latest audit -----------------------------------------------------------------------------


def audits_root(ws: Any) -> Path:
    """Where the service keeps the reports of the audits it ran: `<workspace>/audits/<ledger entry>/`."""
    return audits_dir(ws)


def _stored(root: Path) -> list[int]:
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / "report.json").is_file())


def latest_audit(session: Session, root: Path) -> dict[str, Any] | None:
    """The most recent audit the ledger recorded, with its report when the service holds it unchanged
    (its digest the ledger's); None when no audit was ever run."""
    stored = _stored(root)
    last = None
    for start in dict.fromkeys([stored[-1] if stored else 0, 0]):
        while True:
            batch = session.ledger_entries(start=start, kind=AUDITED, limit=500)
            if batch:
                last = batch[-1]
            if len(batch) < 500:
                break
            start = batch[-1].seq + 1
        if last is not None:
            break
    if last is None:
        return None
    e = json.loads(last.data)
    report = None
    path = root / str(last.seq) / "report.json"
    if path.is_file() and path.stat().st_size <= MAX_REPORT_BYTES:
        body = path.read_bytes()
        if "sha256:" + hashlib.sha256(body).hexdigest() == e.get("report_digest"):
            report = json.loads(body)
    return {
        "seq": last.seq,
        "time": str(e.get("time")),
        "actor": str(e.get("actor")),
        "failed": int(e.get("failed", 0)),
        "passed": int(e.get("passed", 0)),
        "report": report,
    }


def _controls(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Failing controls first, then those that need attention, then the rest, in catalogue order."""
    order = {"fail": 0, "warning": 1}
    return sorted(report.get("controls", []), key=lambda c: order.get(c.get("status"), 2))


# --- overview --------------------------------------------------------------------------------------


def _near_deadline(rows: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        if r["closed_at"] is None and (r["overdue"] or (r["days_left"] is not None and r["days_left"] <= SOON_DAYS)):
            words, late = due_words(r["due_at"], now)
            out.append({**r, "due_words": words, "late": late})
    return sorted(out, key=lambda r: r["due_at"])


def _incident_rows(rows: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    out = []
    for i in rows:
        state = "closed" if i["closed_at"] else ("authority notified" if i["notified_at"] else "open")
        words, late = due_words(i["notify_by"], now) if not i["notified_at"] and not i["closed_at"] else ("", False)
        out.append(
            {**i, "state": state, "clock": words, "clock_late": late or i["late"], "opened": ago(i["opened_at"], now)}
        )
    return sorted(out, key=lambda i: (i["closed_at"] is not None, i["notify_by"]))


def _budgets(session: Session) -> list[dict[str, Any]]:
    session.authorise("audit")  # the auditor's view, even where no dataset is visible
    rows = []
    for d in session.describe_datasets():
        for b in session.audited_budgets(str(d["name"])):
            left = b.epsilon_remaining
            share = left / b.epsilon if b.epsilon > 0 else 0.0
            rows.append(
                {
                    "dataset": b.dataset,
                    "principal": "the whole dataset" if b.principal == "*" else b.principal,
                    "epsilon": humanize.number(b.epsilon),
                    "left": humanize.number(left),
                    "share": humanize.percent(left, b.epsilon) if b.epsilon > 0 else "-",
                    "low": share < LOW_BUDGET,
                }
            )
    return rows


def _ledger(session: Session) -> dict[str, Any]:
    st = session.ledger_status()
    note = st.latest_checkpoint
    trusted = [w.name for w in st.witnesses]
    cosigned = [s.name for s in note.signatures if s.name in trusted] if note else []
    return {
        "size": st.size,
        "checkpoint": note.checkpoint.size if note else None,
        "behind": st.size - note.checkpoint.size if note else st.size,
        "trusted": trusted,
        "cosigned": cosigned,
    }


@router.get("/", response_class=HTMLResponse)
def overview(
    request: Request, who: ConsoleCaller, audit: AuditView, security: SecurityWork, ws: WorkspaceDep
) -> HTMLResponse:
    now = audit.now
    latest, audit_ok = _available(lambda: latest_audit(audit, audits_root(ws)))
    controls = _controls(latest["report"]) if latest and latest["report"] else []
    attention = [c for c in controls if c["status"] in ("fail", "warning")]
    incidents, incidents_ok = _available(security.incidents)
    open_incidents = [i for i in _incident_rows(incidents or [], now) if not i["closed_at"]]
    requests, requests_ok = _available(audit.requests)
    near = _near_deadline(requests or [], now)
    budgets, budgets_ok = _available(lambda: _budgets(audit))
    ledger, ledger_ok = _available(lambda: _ledger(audit))
    sections = (audit_ok, incidents_ok, requests_ok, budgets_ok, ledger_ok)
    return render(
        request,
        "console/overview.html",
        200 if any(sections) else 403,
        title="Overview",
        not_available=NOT_AVAILABLE,
        audit_ok=audit_ok,
        latest=latest,
        latest_ago=ago(latest["time"], now) if latest else "",
        attention=attention,
        passing=len([c for c in controls if c["status"] == "pass"]),
        incidents_ok=incidents_ok,
        incidents=open_incidents,
        requests_ok=requests_ok,
        near=near,
        open_requests=len([r for r in requests or [] if r["closed_at"] is None]),
        budgets_ok=budgets_ok,
        low_budgets=[b for b in budgets or [] if b["low"]],
        budget_count=len(budgets or []),
        ledger_ok=ledger_ok,
        ledger=ledger,
    )


@router.get("/controls/{cid}", response_class=HTMLResponse)
def control(request: Request, cid: str, who: ConsoleCaller, audit: AuditView, ws: WorkspaceDep) -> HTMLResponse:
    """A control as the latest audit found it: its items and the fix."""
    latest = latest_audit(audit, audits_root(ws))
    if latest is None:
        raise NotFound("no audit has been run yet")
    if latest["report"] is None:
        raise NotFound("the latest audit's report is not on this server (it was run elsewhere)")
    found = next((c for c in latest["report"].get("controls", []) if c.get("id") == cid), None)
    if found is None:
        raise NotFound(f"the latest audit has no control {cid!r}")
    return render(
        request,
        "console/overview_control.html",
        title=f"{found['id']}: {found['title']}",
        c=found,
        go=CONTROL_PAGES.get(cid),
        advice=any(i.get("advice") for i in found.get("items", [])),
        latest=latest,
        latest_ago=ago(latest["time"], audit.now),
    )


# --- subject requests ------------------------------------------------------------------------------


def _request_view(r: dict[str, Any], now: datetime) -> dict[str, Any]:
    words, late = due_words(r["due_at"], now) if r["closed_at"] is None else ("", bool(r["overdue"]))
    ack_words, ack_late = (
        due_words(r["acknowledgement_due"], now)
        if r["acknowledgement_due"] and not r["acknowledged_at"] and r["closed_at"] is None
        else ("", False)
    )
    return {
        **r,
        "kind_words": REQUEST_TYPES.get(r["type"], r["type"]),
        "due_words": words,
        "late": late or bool(r["overdue"]),
        "ack_words": ack_words,
        "ack_late": ack_late or bool(r["acknowledgement_late"]),
        "opened": ago(r["opened_at"], now),
        "closed": ago(r["closed_at"], now),
        "is_open": r["status"] in ("open", "partial"),
    }


def _laws(session: Session) -> dict[str, str]:
    """Jurisdictions by name ('California (CCPA/CPRA)', not US-CA): public vocabulary."""
    return {t.key: t.name for t in session.vocabulary("jurisdictions")}


@router.get("/requests", response_class=HTMLResponse)
def requests_page(
    request: Request,
    who: ConsoleCaller,
    audit: AuditView,
    show: Annotated[str, Query(max_length=8)] = "open",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> HTMLResponse:
    now = audit.now
    rows = [_request_view(r, now) for r in audit.requests()]
    through_portal = audit.portal_request_ids()
    for row in rows:
        row["portal"] = row["id"] in through_portal
    everything = show == "all"
    shown = rows if everything else [r for r in rows if r["is_open"]]
    shown.sort(key=lambda r: (not r["is_open"], r["due_at"]))
    return render(
        request,
        "console/requests.html",
        title="Subject requests",
        rows=shown[(page - 1) * PAGE : page * PAGE],
        pager=_pager(len(shown), page, "/console/requests?" + ("show=all&" if everything else "")),
        everything=everything,
        total=len(rows),
        laws=_laws(audit),
    )


@router.get("/requests/{rid}", response_class=HTMLResponse)
def request_page(
    request: Request, rid: str, who: ConsoleCaller, audit: AuditView, done: str | None = None
) -> HTMLResponse:
    r = _request_view(audit.request(rid), audit.now)
    r["portal"] = audit.portal_summary(rid)  # what the person asked there, never their identifier
    if r["portal"] and r["portal"]["purpose"]:
        uses = {t.key: t.name for t in audit.vocabulary("data_uses")}
        r["portal"]["purpose_words"] = uses.get(r["portal"]["purpose"], r["portal"]["purpose"])
    return render(request, "console/request.html", title=f"Request {rid}", r=r, done=_done(done), laws=_laws(audit))


@router.post("/requests/{rid}/verify", dependencies=[Csrf])
def request_verify(
    rid: str, session: RequestWork, method: Annotated[str, Form(max_length=32)] = ""
) -> RedirectResponse:
    session.request_verify(rid, method)
    return _back(f"/console/requests/{rid}", "verified")


@router.post("/requests/{rid}/acknowledge", dependencies=[Csrf])
def request_acknowledge(rid: str, session: RequestWork) -> RedirectResponse:
    session.request_acknowledge(rid)
    return _back(f"/console/requests/{rid}", "acknowledged")


@router.post("/requests/{rid}/extend", dependencies=[Csrf])
def request_extend(
    rid: str, session: RequestWork, reason: Annotated[str, Form(max_length=2000)] = ""
) -> RedirectResponse:
    session.request_extend(rid, reason)
    return _back(f"/console/requests/{rid}", "extended")


@router.post("/requests/{rid}/reject", dependencies=[Csrf])
def request_reject(
    rid: str, session: RequestWork, reason: Annotated[str, Form(max_length=2000)] = ""
) -> RedirectResponse:
    session.request_reject(rid, reason)
    return _back(f"/console/requests/{rid}", "rejected")


def _changes(text: str) -> list[tuple[str, str, str]]:
    """A rectification's corrections, one `DATASET.FIELD=VALUE` a line."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        dataset, dot, field = key.strip().partition(".")
        if not (sep and dot and dataset and field):
            raise InvalidInput("write each correction as DATASET.FIELD=VALUE, one a line")
        out.append((dataset, field, value.strip()))
    return out


@router.post("/requests/{rid}/fulfil", dependencies=[Csrf], response_model=None)
def request_fulfil(
    rid: str,
    session: RequestWork,
    subject: Annotated[str, Form(max_length=256)] = "",
    purpose: Annotated[str, Form(max_length=200)] = "",
    changes: Annotated[str, Form(max_length=20000)] = "",
) -> Response:
    """Carry the request out. The subject's id is typed by the person fulfilling it (checked against the
    request's pseudonym, never shown); an access or portability request answers with the export, as a
    file to hand to the subject. A request that came through the portal is carried out with the
    identifier verified there (the form asks for none, and a subject or purpose sent is refused); its
    export is kept for the person to download from the portal."""
    session.authorise("admin")
    if session.portal_summary(rid) is not None:
        if subject.strip() or purpose.strip():
            raise InvalidInput("this request came through the portal: the identifier and purpose verified there apply")
        result = session.portal_fulfil(rid, changes=_changes(changes))
        status = result.value["status"]
        return _back(f"/console/requests/{rid}", "fulfilled-portal" if status == "fulfilled" else "partial")
    result, output = session.request_fulfil(rid, subject, purpose=purpose.strip() or None, changes=_changes(changes))
    if output is not None:
        return Response(
            json.dumps(output, indent=1, default=str),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{rid}-export.json"'},
        )
    return _back(f"/console/requests/{rid}", "fulfilled" if result.value["status"] == "fulfilled" else "partial")


# --- DPIAs ----------------------------------------------------------------------------------------


def _dpia_row(session: Session, name: str, now: datetime) -> dict[str, Any]:
    st = session.dpia_status(name)
    words = "current" if st["current"] else str(st["why"])
    return {**st, "words": words, "signed": ago(st.get("signed_at"), now)}


@router.get("/dpias", response_class=HTMLResponse)
def dpias_page(request: Request, who: ConsoleCaller, audit: AuditView) -> HTMLResponse:
    now = audit.now
    names = [str(d["name"]) for d in audit.describe_datasets()]
    rows = [_dpia_row(audit, n, now) for n in names]
    if not rows:
        audit.authorise("audit")  # seeing no dataset is the auditor's empty list, or a refusal
    return render(request, "console/dpias.html", title="Impact assessments (DPIAs)", rows=rows)


@router.get("/dpias/{dataset}", response_class=HTMLResponse)
def dpia_page(
    request: Request, dataset: str, who: ConsoleCaller, audit: AuditView, done: str | None = None
) -> HTMLResponse:
    now = audit.now
    st = _dpia_row(audit, dataset, now)
    doc = audit.dpia_document(dataset) if st["version"] is not None else None
    return render(
        request,
        "console/dpia.html",
        title=f"DPIA: {dataset}",
        dataset=dataset,
        st=st,
        doc=doc,
        created=ago(doc["created_at"], now) if doc else "",
        done=_done(done),
    )


@router.post("/dpias/{dataset}/generate", dependencies=[Csrf])
def dpia_generate(dataset: str, audit: AuditView) -> RedirectResponse:
    audit.dpia_generate(dataset)
    return _back(f"/console/dpias/{dataset}", "generated")


@router.post("/dpias/{dataset}/sign", dependencies=[Csrf])
def dpia_sign(
    dataset: str, who: ConsoleCaller, audit: AuditView, version: Annotated[int, Form(ge=1, le=1_000_000)]
) -> RedirectResponse:
    """Sign off the version the person reviewed (never a newer one written since), in their own name."""
    audit.dpia_sign(dataset, who.acting, version)
    return _back(f"/console/dpias/{dataset}", "signed")


# --- incidents ------------------------------------------------------------------------------------


@router.get("/incidents", response_class=HTMLResponse)
def incidents_page(
    request: Request,
    who: ConsoleCaller,
    security: SecurityWork,
    done: str | None = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> HTMLResponse:
    rows = _incident_rows(security.incidents(), security.now)
    return render(
        request,
        "console/incidents.html",
        title="Incidents",
        rows=rows[(page - 1) * PAGE : page * PAGE],
        pager=_pager(len(rows), page, "/console/incidents?"),
        done=_done(done),
    )


@router.get("/incidents/{iid}", response_class=HTMLResponse)
def incident_page(
    request: Request, iid: str, who: ConsoleCaller, security: SecurityWork, done: str | None = None
) -> HTMLResponse:
    found = [i for i in _incident_rows(security.incidents(), security.now) if i["id"] == iid]
    if not found:
        raise NotFound(f"no incident {iid!r}")
    return render(request, "console/incident.html", title=f"Incident {iid}", i=found[0], done=_done(done))


@router.post("/incidents", dependencies=[Csrf])
def incident_open(security: SecurityWork, description: Annotated[str, Form(max_length=2000)] = "") -> RedirectResponse:
    opened = security.incident_open(description)
    return _back(f"/console/incidents/{opened.value['id']}", "opened")


@router.post("/incidents/{iid}/notify", dependencies=[Csrf])
def incident_notify(
    iid: str, security: SecurityWork, authority: Annotated[str, Form(max_length=200)] = ""
) -> RedirectResponse:
    security.incident_notify(iid, authority)
    return _back(f"/console/incidents/{iid}", "notified")


@router.post("/incidents/{iid}/close", dependencies=[Csrf])
def incident_close(iid: str, security: SecurityWork) -> RedirectResponse:
    security.incident_close(iid)
    return _back(f"/console/incidents/{iid}", "closed")
