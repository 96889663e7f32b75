"""The portal's pages: choose a right and submit it, enter the one-time code, follow a request and
download its export. Every page that changes something is a CSRF-checked form that calls one session
operation (app/ops/portal.py); references and codes travel in form bodies, never in a URL."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from complai.errors import AuthenticationFailed, InvalidInput, WorkspaceError
from complai.service.deps import WorkspaceDep, client_address
from complai.service.portal.web import Csrf, LimitsDep, PortalSession, SettingsDep, channel_for, render

router = APIRouter()

KINDS = [
    ("access", "Get a copy of my data", "Everything held about you, readable (GDPR Art. 15)."),
    ("portability", "Take my data elsewhere", "Your data in a machine-readable file (Art. 20)."),
    ("rectification", "Correct my data", "Tell us what is wrong and what it should say (Art. 16)."),
    ("erasure", "Erase my data", "Delete your records and destroy their keys (Art. 17)."),
    ("restriction", "Restrict the use of my data", "Keep it, but stop using it (Art. 18)."),
    ("objection", "Object to a use of my data", "Stop a purpose, or every purpose (Art. 21)."),
    ("withdrawal", "Withdraw a consent", "Withdraw a consent you gave, at once (Art. 7(3))."),
]
NAMES = {k: label for k, label, _ in KINDS}


def _form(request: Request, session: PortalSession, status: int = 200, **extra: object) -> HTMLResponse:
    context: dict[str, object] = {"kinds": KINDS, "purposes": session.portal_purposes(), "values": {}, "error": None}
    context.update(extra)
    return render(request, "index.html", status, title="Your data, your rights", **context)


@router.get("/", response_class=HTMLResponse)
def index(request: Request, session: PortalSession) -> HTMLResponse:
    return _form(request, session)


@router.post("/requests", response_class=HTMLResponse, dependencies=[Csrf])
def submit(
    request: Request,
    session: PortalSession,
    ws: WorkspaceDep,
    cfg: SettingsDep,
    limits: LimitsDep,
    kind: Annotated[str, Form()] = "",
    identifier: Annotated[str, Form()] = "",
    purpose: Annotated[str, Form()] = "",
    details: Annotated[str, Form()] = "",
) -> HTMLResponse:
    try:
        receipt = session.portal_submit(
            kind,
            identifier,
            address=client_address(request),
            channel=channel_for(cfg, ws),
            limits=limits,
            purpose=purpose or None,
            details=details or None,
        )
    except InvalidInput as exc:
        values = {"kind": kind, "purpose": purpose}
        return _form(request, session, 400, error=exc.message, values=values)
    except WorkspaceError:  # the channel could not deliver: nothing was recorded
        message = "We could not send your code just now. Nothing was recorded; please try again later."
        return render(request, "error.html", 503, title="Not sent", message=message)
    return render(
        request,
        "code.html",
        title="Check your messages",
        reference=receipt.reference,
        expires_at=receipt.expires_at,
        what=NAMES.get(kind, kind),
        error=None,
    )


@router.post("/verify", response_class=HTMLResponse, dependencies=[Csrf])
def verify(
    request: Request,
    session: PortalSession,
    cfg: SettingsDep,
    limits: LimitsDep,
    reference: Annotated[str, Form()] = "",
    code: Annotated[str, Form()] = "",
) -> HTMLResponse:
    try:
        done = session.portal_verify(
            reference, code, address=client_address(request), limits=limits, jurisdiction=cfg.portal_jurisdiction
        )
    except AuthenticationFailed as exc:
        return render(
            request,
            "code.html",
            400,
            title="Check your messages",
            reference=reference[:32],
            expires_at=None,
            what=None,
            error=exc.message,
        )
    return render(
        request,
        "status.html",
        title="Your request",
        reference=done.reference,
        follow_code=done.follow_code,
        view=done.view,
        what=NAMES.get(done.view["kind"], done.view["kind"]),
        shown_once=True,
    )


@router.get("/follow", response_class=HTMLResponse)
def follow_page(request: Request, session: PortalSession) -> HTMLResponse:
    return render(request, "follow.html", title="Follow a request", error=None)


@router.post("/follow", response_class=HTMLResponse, dependencies=[Csrf])
def follow(
    request: Request,
    session: PortalSession,
    limits: LimitsDep,
    reference: Annotated[str, Form()] = "",
    follow_code: Annotated[str, Form()] = "",
) -> HTMLResponse:
    try:
        view = session.portal_status(reference, follow_code, address=client_address(request), limits=limits)
    except AuthenticationFailed as exc:
        return render(request, "follow.html", 400, title="Follow a request", error=exc.message)
    return render(
        request,
        "status.html",
        title="Your request",
        reference=reference.strip().upper()[:32],
        follow_code=follow_code.strip().upper()[:32],
        view=view,
        what=NAMES.get(view["kind"], view["kind"]),
        shown_once=False,
    )


@router.post("/export", response_model=None, dependencies=[Csrf])
def export(
    request: Request,
    session: PortalSession,
    limits: LimitsDep,
    reference: Annotated[str, Form()] = "",
    follow_code: Annotated[str, Form()] = "",
) -> Response:
    try:
        data = session.portal_export(reference, follow_code, address=client_address(request), limits=limits)
    except AuthenticationFailed as exc:
        return render(request, "follow.html", 400, title="Follow a request", error=exc.message)
    return Response(
        data,
        media_type="application/json",
        headers={
            "Content-Disposition": 'attachment; filename="my-data.json"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
