"""Console login and logout: a password login (app/login.py) whose short-lived token becomes the
console's HttpOnly cookie; logging out revokes that token."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from complai.access.authz import deadline
from complai.errors import AuthenticationFailed, InvalidInput, RateLimited
from complai.service.api.auth import limits_of
from complai.service.console.web import (
    ConsoleCaller,
    Csrf,
    ServiceSettingsDep,
    _same_origin,
    clear_login_cookie,
    render,
    set_login_cookie,
)
from complai.service.deps import WorkspaceDep, client_address

router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Only a path inside the console (never another site: an open redirect)."""
    if target and target.startswith("/console") and "//" not in target and "\\" not in target:
        return target
    return "/console/"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return render(request, "console/login.html", next=_safe_next(next), error=None)


@router.post("/login", response_model=None)
def login(
    request: Request,
    ws: WorkspaceDep,
    cfg: ServiceSettingsDep,
    username: Annotated[str, Form(max_length=128)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form(max_length=512)] = "/console/",
) -> Response:
    target = _safe_next(next)
    if not _same_origin(request):  # login CSRF: another site logging this browser into its own account
        message = "This form came from another site. Open the login page and try again."
        return render(request, "console/error.html", 403, title="Refused", message=message)
    try:
        issued = ws.login(
            username,
            password,
            address=client_address(request),
            lifetime=cfg.login_token_lifetime,
            limits=limits_of(cfg),
        )
    except (AuthenticationFailed, InvalidInput):
        return render(request, "console/login.html", 401, next=target, error="Wrong name or password.")
    except RateLimited:
        return render(request, "console/login.html", 429, next=target, error="Too many failed logins. Try again later.")
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    max_age = int((deadline(epoch, cfg.login_token_lifetime) - epoch).total_seconds())
    response = RedirectResponse(target, status_code=303)
    set_login_cookie(response, issued.token, max_age, cfg.tls)
    return response


@router.post("/logout", dependencies=[Csrf])
def logout(request: Request, who: ConsoleCaller, ws: WorkspaceDep, cfg: ServiceSettingsDep) -> RedirectResponse:
    if who.credential is not None:
        ws.session(who.principal.name, "security").revoke_token(who.credential.token_id)
    response = RedirectResponse("/console/login", status_code=303)
    clear_login_cookie(response, cfg.tls)
    return response
