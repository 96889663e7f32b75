"""The portal's frame: its own templates (templates/portal, its own base and stylesheet: nothing of the
console's), CSRF for its forms, the session it acts through, and errors as pages.

The portal has no login: a person proves they hold an address with a one-time code, then follows a
request with its reference and follow-up code (app/ops/portal.py). Its forms carry a CSRF token that
must equal a random HttpOnly, SameSite=Strict cookie scoped to /portal (double submit), and come from
this origin. The portal acts as the service principal `complai serve --portal NAME` names, for the
purpose `subject_request`; without one it answers every page with "closed"."""

from __future__ import annotations

import hmac
import logging
import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from complai.app.portal import OUTBOX, Channel, OutboxChannel, PortalLimits, SmtpChannel, SmtpSettings
from complai.app.session import Session
from complai.app.workspace import Workspace
from complai.clock import parse_utc
from complai.config import ServiceSettings, smtp_password
from complai.errors import AuthenticationFailed, ComplaiError, RateLimited
from complai.service.deps import settings, workspace

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "portal"
env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True))


def when(iso: str | None) -> str:
    """A time as people read it: 30 November 2026, 17:52 UTC."""
    if not iso:
        return ""
    t = parse_utc(iso)
    return f"{t.day} {t:%B %Y}, {t:%H:%M} UTC"


env.filters["when"] = when

COOKIE = "complai_portal_csrf"
COOKIE_PATH = "/portal"
PURPOSE = "subject_request"
log = logging.getLogger("complai.service")


class PortalClosed(Exception):
    """The service runs without a portal principal (or with one it cannot act as)."""


class CsrfRefused(Exception):
    """A portal form without a valid CSRF token, or from another origin."""


def portal_session(
    request: Request,
    ws: Annotated[Workspace, Depends(workspace)],
    cfg: Annotated[ServiceSettings, Depends(settings)],
) -> Session:
    """The portal's session: its service principal, for `subject_request`."""
    if not cfg.portal_principal:
        raise PortalClosed()
    try:
        return ws.session(cfg.portal_principal, PURPOSE)
    except AuthenticationFailed:  # removed or disabled since start-up: closed, not an error page
        log.warning("portal closed: its principal cannot act", extra={"complai": {"operation": "portal"}})
        raise PortalClosed() from None


PortalSession = Annotated[Session, Depends(portal_session)]
SettingsDep = Annotated[ServiceSettings, Depends(settings)]


def limits() -> PortalLimits:
    return PortalLimits()


LimitsDep = Annotated[PortalLimits, Depends(limits)]


def channel_for(cfg: ServiceSettings, ws: Workspace) -> Channel:
    """The channel the settings name: the workspace's outbox directory, or an SMTP relay."""
    if cfg.portal_channel == "smtp":
        if not cfg.smtp_host:
            raise PortalClosed()
        return SmtpChannel(
            SmtpSettings(
                host=cfg.smtp_host,
                port=cfg.smtp_port,
                sender=cfg.smtp_sender,
                user=cfg.smtp_user,
                password=smtp_password(),
                tls=cfg.smtp_security == "tls",
                plain=cfg.smtp_security == "plain",
            )
        )
    return OutboxChannel(Path(ws.path) / OUTBOX, sender=cfg.smtp_sender)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True
    return urlsplit(origin).netloc == request.url.netloc


def check_csrf(request: Request, csrf: Annotated[str, Form()] = "") -> None:
    """Every portal form: its token must equal the portal's cookie, and come from this origin."""
    cookie = request.cookies.get(COOKIE, "")
    if not cookie or not csrf or not _same_origin(request) or not hmac.compare_digest(csrf, cookie):
        raise CsrfRefused()


Csrf = Depends(check_csrf)


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A portal page, with the CSRF token of this browser (a new cookie if it has none)."""
    token = request.cookies.get(COOKIE) or ""
    fresh = not token or len(token) > 64
    if fresh:
        token = secrets.token_urlsafe(32)
    context.setdefault("csrf", token)
    html = env.get_template(template).render(**context)
    response = HTMLResponse(html, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    # not the service's no-referrer: under it a browser sends `Origin: null`, which the CSRF check
    # refuses; same-origin still sends nothing to another site
    response.headers["Referrer-Policy"] = "same-origin"
    if fresh:
        tls = bool(getattr(request.app.state.settings, "tls", False))
        response.set_cookie(COOKIE, token, path=COOKIE_PATH, httponly=True, secure=tls, samesite="strict")
    return response


def error_page(request: Request, exc: ComplaiError) -> HTMLResponse:
    if isinstance(exc, RateLimited):
        page = render(request, "error.html", 429, title="Too many requests", message=exc.message)
        page.headers["Retry-After"] = "60"
        return page
    return render(request, "error.html", exc.http_status, title=exc.title.capitalize(), message=exc.message)


def install(app: FastAPI) -> None:
    """Register the portal's pages for its errors, a closed portal and refused forms."""
    app.state.html_errors.append(("/portal", error_page))

    @app.exception_handler(PortalClosed)
    async def closed(request: Request, exc: PortalClosed) -> Response:
        return render(request, "closed.html", 404, title="Closed")

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, exc: CsrfRefused) -> Response:
        return render(
            request,
            "error.html",
            403,
            title="Refused",
            message="This form expired or came from another site. Go back, reload the page and try again.",
        )
