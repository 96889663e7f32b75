"""Who is calling and for which purpose: FastAPI dependencies that turn a request into a session.

A request proves its caller with an API token as a bearer token (`Authorization: Bearer cpl_...`),
the same tokens the CLI takes; a human gets one from their password at /api/v1/auth/token. The
`X-Complai-Act-As` header delegates as `--as` does on the command line (owner role only, recorded).
Every operation then runs through `ws.session(caller, purpose)`: the service adds no rule of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from complai.app.session import Session
from complai.app.workspace import Caller, Workspace
from complai.config import ServiceSettings
from complai.errors import AuthenticationFailed

bearer_scheme = HTTPBearer(auto_error=False, description="An API token (cpl_...), or one from /api/v1/auth/token")

ACT_AS = "x-complai-act-as"


def workspace(request: Request) -> Workspace:
    """The worker's open workspace (opened once per process, at start-up)."""
    ws: Workspace = request.app.state.ws
    return ws


def settings(request: Request) -> ServiceSettings:
    s: ServiceSettings = request.app.state.settings
    return s


def client_address(request: Request) -> str:
    """The peer's address as the server saw it (a proxy's X-Forwarded-For is not trusted here)."""
    return request.client.host if request.client else "unknown"


def caller(
    request: Request,
    ws: Annotated[Workspace, Depends(workspace)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Caller:
    """The authenticated caller of an API request: refused (401, recorded) without a valid token.
    Never the owner by default, as the CLI on the workspace's own machine is."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise AuthenticationFailed("this request needs a bearer token (Authorization: Bearer cpl_...)")
    act_as = request.headers.get(ACT_AS) or None
    return ws.authenticate(credentials.credentials, act_as=act_as)


CallerDep = Annotated[Caller, Depends(caller)]
WorkspaceDep = Annotated[Workspace, Depends(workspace)]


def session_for(purpose: str) -> Callable[..., Session]:
    """A dependency giving a session for a fixed purpose (administration, security, audit, ...)."""

    def dependency(who: CallerDep, ws: WorkspaceDep) -> Session:
        return ws.session(who.acting, purpose)

    dependency.__name__ = f"session_{purpose}"
    return dependency


def purpose_session(
    who: CallerDep,
    ws: WorkspaceDep,
    purpose: Annotated[str, Query(description="The declared purpose of this processing (a taxonomy purpose)")],
) -> Session:
    """A session for the purpose the request declares (`?purpose=...`); an unknown purpose is refused."""
    return ws.session(who.acting, purpose)


PurposeSession = Annotated[Session, Depends(purpose_session)]
AdminSession = Annotated[Session, Depends(session_for("administration"))]
SecuritySession = Annotated[Session, Depends(session_for("security"))]
AuditSession = Annotated[Session, Depends(session_for("audit"))]
RequestSession = Annotated[Session, Depends(session_for("subject_request"))]
