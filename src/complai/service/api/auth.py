"""Logging in with a password (OAuth2 password flow): a person gets a short-lived bearer token.
Refused logins are recorded and rate-limited per principal and address (app/login.py). An
OpenID Connect login would be another route here that ends in the same short-lived token."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from pydantic import BaseModel

from complai.access.authz import deadline
from complai.app.login import LoginLimits
from complai.config import ServiceSettings
from complai.service.api.common import TOO_MANY, problems
from complai.service.deps import CallerDep, WorkspaceDep, client_address, settings

router = APIRouter(tags=["auth"])


class TokenOut(BaseModel):
    """RFC 6749 token response: the token is shown once and stored only as a hash."""

    access_token: str
    token_type: str
    expires_in: int
    token_id: str


def limits_of(s: ServiceSettings) -> LoginLimits:
    return LoginLimits(s.login_failures_per_principal, s.login_failures_per_address, s.login_window_s)


@router.post(
    "/auth/token",
    summary="Log in with a name and password; get a short-lived bearer token",
    responses=problems(TOO_MANY),
)
def login(
    request: Request,
    ws: WorkspaceDep,
    cfg: Annotated[ServiceSettings, Depends(settings)],
    username: Annotated[str, Form(min_length=1, max_length=128)],
    password: Annotated[str, Form(min_length=1, max_length=1024)],
    grant_type: Annotated[str, Form(pattern="^password$")] = "password",
) -> TokenOut:
    issued = ws.login(
        username, password, address=client_address(request), lifetime=cfg.login_token_lifetime, limits=limits_of(cfg)
    )
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    expires_in = int((deadline(epoch, cfg.login_token_lifetime) - epoch).total_seconds())
    bearer = "bearer"  # RFC 6750 token type
    return TokenOut(access_token=issued.token, token_type=bearer, expires_in=expires_in, token_id=issued.id)


@router.delete(
    "/auth/token",
    status_code=204,
    summary="Log out: revoke the bearer token this request carries",
    responses=problems(),
)
def logout(who: CallerDep, ws: WorkspaceDep) -> None:
    if who.credential is not None:
        session = ws.session(who.principal.name, "security")
        session.revoke_token(who.credential.token_id)
