"""The console's frame: templates, the login cookie, CSRF, and sessions for page handlers.

A person logs in with their password (app/login.py); the short-lived token they get is kept in an
HttpOnly, SameSite=Strict cookie scoped to /console (Secure under TLS), never shown to scripts. Pages
act through `ws.session(principal, purpose)` exactly as the API does. Every form that changes
something carries a CSRF token derived from the login token (HMAC), checked with the request's
Origin; a page whose cookie is missing, expired or revoked sends the browser to the login page.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from complai import __version__
from complai.app.session import Session
from complai.app.workspace import Caller, Workspace
from complai.config import ServiceSettings
from complai.errors import AuthenticationFailed, ComplaiError, PolicyDenied
from complai.service.deps import authenticate, session_of, settings, workspace

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
templates = Jinja2Templates(env=Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True))
templates.env.globals["version"] = __version__

COOKIE = "complai_console"
COOKIE_PATH = "/console"


class LoginRequired(Exception):
    """No usable login cookie: the browser goes to the login page (and comes back to `next`)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class CsrfRefused(Exception):
    """A state-changing form without a valid CSRF token or from another origin."""


def csrf_token(login_token: str) -> str:
    """The CSRF token of a login: an HMAC of the login token (which scripts cannot read)."""
    return hmac.new(login_token.encode(), b"complai-console-csrf", hashlib.sha256).hexdigest()[:40]


def set_login_cookie(response: Response, token: str, max_age: int, tls: bool) -> None:
    response.set_cookie(COOKIE, token, max_age=max_age, path=COOKIE_PATH, httponly=True, secure=tls, samesite="strict")


def clear_login_cookie(response: Response, tls: bool) -> None:
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, secure=tls, samesite="strict")


def _next(request: Request) -> str:
    path = request.url.path
    return path if path.startswith("/console") else "/console/"


def console_caller(request: Request, ws: Annotated[Workspace, Depends(workspace)]) -> Caller:
    """The logged-in person; LoginRequired (a redirect to the login page) otherwise."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise LoginRequired(_next(request))
    try:
        who = authenticate(request, ws, token)
    except AuthenticationFailed:
        raise LoginRequired(_next(request)) from None
    request.state.console_principal = who.acting
    return who


ConsoleCaller = Annotated[Caller, Depends(console_caller)]


def console_session(purpose: str) -> Callable[..., Awaitable[Session]]:
    """A dependency: a session of the logged-in person for `purpose`."""

    async def dependency(who: ConsoleCaller, ws: Annotated[Workspace, Depends(workspace)]) -> Session:
        return await session_of(ws, who, purpose)

    dependency.__name__ = f"console_session_{purpose}"
    return dependency


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True  # browsers send Origin on cross-site POSTs; its absence means same-origin or a non-browser
    parts = urlsplit(origin)
    return parts.netloc == request.url.netloc


def check_csrf(request: Request, csrf: Annotated[str, Form(max_length=128)] = "") -> None:
    """A dependency for every state-changing form: the CSRF token must match the login's, and the
    request must come from this origin."""
    token = request.cookies.get(COOKIE, "")
    if not token or not _same_origin(request) or not hmac.compare_digest(csrf, csrf_token(token)):
        raise CsrfRefused()


Csrf = Depends(check_csrf)


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A console page: the template with the person, the CSRF token and the navigation."""
    token = request.cookies.get(COOKIE, "")
    context.setdefault("csrf", csrf_token(token) if token else "")
    context.setdefault("principal", getattr(request.state, "console_principal", None))
    response: HTMLResponse = templates.TemplateResponse(request, template, context, status_code=status_code)
    # not the service's no-referrer: under it a browser sends `Origin: null` with the page's forms, which
    # the CSRF check refuses; same-origin still sends nothing to another site
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def install(app: FastAPI) -> None:
    """Register the console's handlers: login redirects, CSRF refusals and errors as pages."""
    app.state.html_errors.append(("/console", error_page))

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(f"/console/login?next={quote(exc.next_path, safe='/')}", status_code=303)

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, exc: CsrfRefused) -> Response:
        return render(
            request,
            "console/error.html",
            403,
            title="Refused",
            message="This form expired or came from another site. Go back and try again.",
        )


def error_page(request: Request, exc: ComplaiError) -> HTMLResponse:
    """A refused or failed console action, as a page: the library's one-line message and its status."""
    title = "Not allowed" if isinstance(exc, PolicyDenied) else exc.title.capitalize()
    return render(request, "console/error.html", exc.http_status, title=title, message=exc.message)


ServiceSettingsDep = Annotated[ServiceSettings, Depends(settings)]
