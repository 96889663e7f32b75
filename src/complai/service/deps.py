"""Who is calling and for which purpose: FastAPI dependencies that turn a request into a session.

A request proves its caller with an API token as a bearer token (`Authorization: Bearer cpl_...`),
the same tokens the CLI takes; a human gets one from their password at /api/v1/auth/token. The
`X-Complai-Act-As` header delegates as `--as` does on the command line (owner role only, recorded):
every event the request records as the delegate, refusals and the jobs it starts included, carries
the authenticated owner as `delegated_by`. Every operation then runs through `ws.session(caller,
purpose)`: the service adds no rule of its own.

Each refused token is recorded in the ledger (`auth.refused`). So that a flood of forged tokens cannot
grow the ledger without bound, once an address's tokens were refused as often as the per-address login
limit within the login window, its further refused tokens are answered 429, logged and not recorded,
until the window has passed; its valid tokens still work (a proxy's clients share its address).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from complai.app.session import Session
from complai.app.workspace import Caller, Workspace
from complai.config import ServiceSettings
from complai.errors import AuthenticationFailed, RateLimited
from complai.events import delegation

bearer_scheme = HTTPBearer(auto_error=False, description="An API token (cpl_...), or one from /api/v1/auth/token")

ACT_AS = "x-complai-act-as"
log = logging.getLogger("complai.security")


class TokenRefusals:
    """Refused bearer tokens per client address within a window, in this worker process (bounded: the
    addresses seen longest ago are forgotten first)."""

    def __init__(self, limit: int, window_s: float, max_addresses: int = 10_000) -> None:
        self.limit, self.window_s, self.max_addresses = limit, window_s, max_addresses
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._seen.get(address) or deque(maxlen=max(self.limit, 1))  # the latest `limit` are enough
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def limited(self, address: str) -> bool:
        with self._lock:
            return len(self._recent(address, time.monotonic())) >= self.limit

    def refused(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            times = self._recent(address, now)
            times.append(now)
            self._seen[address] = times
            self._seen.move_to_end(address)
            while len(self._seen) > self.max_addresses:
                self._seen.popitem(last=False)


def token_refusals(request: Request) -> TokenRefusals:
    """The worker's count of refused tokens (made with the app, from its login limits)."""
    refusals: TokenRefusals | None = getattr(request.app.state, "token_refusals", None)
    if refusals is None:
        cfg: ServiceSettings = request.app.state.settings
        refusals = request.app.state.token_refusals = TokenRefusals(cfg.login_failures_per_address, cfg.login_window_s)
    return refusals


def authenticate(request: Request, ws: Workspace, token: str, act_as: str | None = None) -> Caller:
    """`ws.authenticate`, each refused token recorded; past the address's limit of refusals a valid token
    still works, and a refused one is answered 429 (logged, not recorded)."""
    refusals, address = token_refusals(request), client_address(request)
    limited = refusals.limited(address)
    try:
        return ws.authenticate(token, act_as=act_as, record_refusal=not limited)
    except AuthenticationFailed:
        refusals.refused(address)
        if limited:
            log.warning(
                "token refused: rate limit", extra={"complai": {"operation": "authenticate", "outcome": "refused"}}
            )
            raise RateLimited("too many refused tokens from this address; try again later") from None
        raise


# Dependencies that do no I/O are asynchronous: FastAPI runs a synchronous one in the worker's thread
# pool, a hop (and, under load, a wait for a free thread) for nothing.


async def workspace(request: Request) -> Workspace:
    """The worker's open workspace (opened once per process, at start-up)."""
    ws: Workspace = request.app.state.ws
    return ws


async def settings(request: Request) -> ServiceSettings:
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
    return authenticate(request, ws, credentials.credentials, act_as)


async def delegating_caller(
    request: Request,
    ws: Annotated[Workspace, Depends(workspace)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> AsyncIterator[Caller]:
    """The caller, and for the rest of the request (its other dependencies, the operation, the jobs it
    submits) the delegation of an act-as request, as `complai --as` enters it: events whose actor is
    the delegate record the authenticated owner as `delegated_by`.

    Asynchronous so that the delegation is entered in the request's own context, which every later
    step (a synchronous one runs in a thread with a copy of that context) inherits."""
    who = await run_in_threadpool(caller, request, ws, credentials)
    if not who.delegating:
        yield who
        return
    with delegation(who.acting, who.principal.name):
        yield who


CallerDep = Annotated[Caller, Depends(delegating_caller)]
WorkspaceDep = Annotated[Workspace, Depends(workspace)]


def session_for(purpose: str) -> Callable[..., Awaitable[Session]]:
    """A dependency giving a session for a fixed purpose (administration, security, audit, ...)."""

    async def dependency(who: CallerDep, ws: WorkspaceDep) -> Session:
        return await session_of(ws, who, purpose)

    dependency.__name__ = f"session_{purpose}"
    return dependency


async def session_of(ws: Workspace, who: Caller, purpose: str) -> Session:
    """`ws.session` for an authenticated caller: in the event loop when it reads nothing (the caller acts
    as itself), in a thread when the delegate must be looked up."""
    if who.delegating:
        return await run_in_threadpool(ws.session, who, purpose)
    return ws.session(who, purpose)


async def purpose_session(
    who: CallerDep,
    ws: WorkspaceDep,
    purpose: Annotated[str, Query(description="The declared purpose of this processing (a taxonomy purpose)")],
) -> Session:
    """A session for the purpose the request declares (`?purpose=...`); an unknown purpose is refused."""
    return await session_of(ws, who, purpose)


PurposeSession = Annotated[Session, Depends(purpose_session)]
AdminSession = Annotated[Session, Depends(session_for("administration"))]
SecuritySession = Annotated[Session, Depends(session_for("security"))]
AuditSession = Annotated[Session, Depends(session_for("audit"))]
RequestSession = Annotated[Session, Depends(session_for("subject_request"))]
