"""Password login for people (the console, the API's OAuth2 password flow): a short-lived API token
for a human principal who proves their argon2 password, with refused attempts rate-limited per
principal and per address.

Each refused attempt is recorded in the ledger (`auth.refused`, actor: the principal when it exists)
and counted in `login_failures`; once a principal or an address reaches its limit within the window,
further attempts are refused without checking the password (logged, not recorded again: a flood
must not grow the ledger). A successful login mints a token for the principal itself, recorded as any
token is (`token.created`), within the workspace's maximum token lifetime."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, insert, select, text

from complai.access.identity import IssuedToken
from complai.app.services import Services
from complai.errors import AuthenticationFailed, InvalidInput, NotFound, RateLimited
from complai.events import AuthenticationRefused
from complai.store.tables import login_failures

log = logging.getLogger("complai.security")
# serialises the counting of refused logins on PostgreSQL (SQLite writers are serialised already)
_LOGIN_LOCK = 72786511


@dataclass(frozen=True)
class LoginLimits:
    """How many refused logins a principal, and an address, may have within `window_s` seconds."""

    per_principal: int = 5
    per_address: int = 20
    window_s: int = 900


def password_login(
    svc: Services, name: str, password: str, *, address: str, lifetime: str, limits: LoginLimits
) -> IssuedToken:
    """A token of `lifetime` for `name` if `password` is theirs; AuthenticationFailed (one message
    for every failure) or RateLimited otherwise."""
    if not name or len(name) > 128 or not password or len(password) > 1024:
        raise InvalidInput("give a principal name (up to 128 characters) and a password (up to 1024)")
    address = (address or "unknown")[:64]
    now = svc.clock.now()
    since = now - timedelta(seconds=limits.window_s)
    # The limit is counted and this attempt reserved (as a failure, until the password proves right) in
    # one write transaction: guesses sent in parallel each see the ones before them, so no more than the
    # limit are ever checked.
    with svc.store.write() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOGIN_LOCK})
        conn.execute(delete(login_failures).where(login_failures.c.at < since))
        by_principal = conn.execute(
            select(func.count()).select_from(login_failures).where(login_failures.c.principal == name)
        ).scalar_one()
        by_address = conn.execute(
            select(func.count()).select_from(login_failures).where(login_failures.c.address == address)
        ).scalar_one()
        limited = by_principal >= limits.per_principal or by_address >= limits.per_address
        attempt = None
        if not limited:
            attempt = conn.execute(
                insert(login_failures).values(principal=name, address=address, at=now).returning(login_failures.c.id)
            ).scalar_one()
    if limited:
        log.warning("login refused: rate limit", extra={"complai": {"operation": "login", "outcome": "refused"}})
        raise RateLimited("too many failed logins for this account or address; try again later")
    try:
        principal = svc.identity.verify_password(name, password)
    except AuthenticationFailed:
        try:
            known = not svc.identity.get(name).disabled
        except NotFound:
            known = False
        with svc.store.write() as conn:
            svc.ledger.emit(
                conn,
                AuthenticationRefused,
                time=now,
                actor=name if known else "anonymous",
                purpose="security",
                token_id=None,
                reason="password login refused",
            )
        raise
    with svc.store.write() as conn:
        conn.execute(delete(login_failures).where(login_failures.c.id == attempt))
    return svc.identity.mint(principal.name, principal.name, lifetime)
