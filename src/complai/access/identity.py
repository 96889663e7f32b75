"""Principals, roles, API tokens and passwords.

Tokens are `cpl_<id>_<secret>`: 16 hex characters of id and 256 bits of secret. Only SHA-256 of the
secret is stored (a high-entropy secret needs no slow hash); it is compared in constant time. A token
is shown once, at creation, and never logged, recorded or echoed in an error: events and messages
carry the token id at most. Human passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106
second recommended profile).

Minting: a principal may mint tokens for itself; minting for another principal needs the owner role
(or admin, for principals that are not owners). Without the owner role a token lives at most the
workspace's maximum token lifetime (`token.lifetime_set` in the ledger, default P90D), and no token
outlives the token that minted it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Connection, delete, insert, select, update

from complai.clock import Clock, as_utc, utc_iso
from complai.errors import AlreadyExists, AuthenticationFailed, InvalidInput, NotFound, PolicyDenied
from complai.events import (
    AccessDenied,
    AuthenticationRefused,
    PrincipalAdded,
    PrincipalDisabled,
    RoleChanged,
    TokenCreated,
    TokenLifetimeSet,
    TokenRevoked,
    decode_event,
)
from complai.ledger.log import Ledger
from complai.store import Store
from complai.store.tables import ledger_entries, meta, principals, role_grants, tokens
from complai.vault.schema import retention_deadline

OWNER = "owner"
ROLES = {
    "owner": "everything, including policy changes and role grants",
    "admin": "operations on keys, backups and retention (no personal data unless a policy allows it)",
    "auditor": "reads the ledger and runs audits; never personal data",
    "analyst": "no rights of its own: grant them per dataset and purpose with `complai policy allow`",
    "steward": "no rights of its own: typically allowed export/erase for subject_request",
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,127}$")
_TOKEN = re.compile(r"^cpl_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_TOKEN_ID = re.compile(r"[0-9a-f]{16}")
_TOKEN_LIKE = re.compile(r"(cpl_)([0-9a-f]{16})?[_-]?[A-Za-z0-9_-]*", re.IGNORECASE)
DEFAULT_MAX_LIFETIME = "P90D"
_hasher = PasswordHasher()
_dummy: list[str] = []


def _dummy_hash() -> str:
    """A fixed hash to verify against when the principal is unknown, so timing does not reveal which
    names exist (made on first use: hashing takes ~0.1 s)."""
    if not _dummy:
        _dummy.append(_hasher.hash("complai-no-such-principal"))
    return _dummy[0]


@dataclass(frozen=True)
class Principal:
    name: str
    kind: str
    roles: tuple[str, ...]
    disabled: bool


@dataclass(frozen=True)
class Credential:
    """What an API token proved: its principal, its id (never the secret) and its expiry."""

    principal: Principal
    token_id: str
    expires_at: datetime | None


def is_principal_name(text: str) -> bool:
    """Whether `text` is a well-formed principal name (and so safe to name in a message)."""
    return bool(_NAME.fullmatch(text or ""))


def redact_tokens(text: str, token: str | None = None) -> str:
    """`text` with every token-like string cut to its id (`cpl_<id>_...`), and with the secret part
    of `token` (the one the caller gave, however mangled) removed wherever it appears."""
    if token:
        m = re.search(r"cpl_[0-9a-f]{16}_(\S+)", token, re.IGNORECASE)
        secret = m.group(1) if m else token.strip()
        if len(secret) >= 16:
            text = re.sub(re.escape(secret), "...", text, flags=re.IGNORECASE)
    return _TOKEN_LIKE.sub(lambda m: f"cpl_{m.group(2).lower()}_..." if m.group(2) else "cpl_...", text)


def _deadline(now: datetime, duration: str) -> datetime:
    try:
        return retention_deadline(now, duration)
    except (OverflowError, ValueError):
        raise InvalidInput(f"duration {duration!r} is out of range") from None


def token_secret_digest(secret_hash: bytes) -> str:
    """What the ledger records of a token's stored secret hash: its SHA-256 (the secret is not derivable)."""
    return "sha256:" + hashlib.sha256(bytes(secret_hash)).hexdigest()


def bump_policy_version(conn: Connection) -> int:
    """Every change to roles, principals or rules bumps this; cached decisions are keyed on it."""
    row = conn.execute(select(meta.c.value).where(meta.c.key == "policy_version")).scalar()
    version = int(row or 0) + 1
    if row is None:
        conn.execute(insert(meta).values(key="policy_version", value=str(version)))
    else:
        conn.execute(update(meta).where(meta.c.key == "policy_version").values(value=str(version)))
    return version


def policy_version(conn: Connection) -> int:
    return int(conn.execute(select(meta.c.value).where(meta.c.key == "policy_version")).scalar() or 0)


class Identity:
    def __init__(self, store: Store, ledger: Ledger, clock: Clock) -> None:
        self.store, self.ledger, self.clock = store, ledger, clock

    # --- principals ----------------------------------------------------------------------------

    def get(self, name: str, conn: Connection | None = None) -> Principal:
        if conn is None:
            with self.store.read() as c:
                return self.get(name, c)
        row = conn.execute(select(principals).where(principals.c.name == name)).first()
        if row is None:
            raise NotFound(f"no principal named {name!r}")
        stored = set(conn.execute(select(role_grants.c.role).where(role_grants.c.principal == name)).scalars())
        # roles and disabling as the ledger recorded them: a role granted or a principal re-enabled at
        # rest counts for nothing (RECON-1 names the edit)
        recorded = {OWNER} if name == OWNER else set()
        disabled = row.disabled_at is not None
        for _, _, data in self.ledger.scan(conn, (RoleChanged.kind, PrincipalDisabled.kind)):
            ev = json.loads(data)
            if ev.get("principal") != name:
                continue
            if ev.get("type") == PrincipalDisabled.kind:
                disabled = True
            elif ev.get("granted"):
                recorded.add(str(ev.get("role")))
            else:
                recorded.discard(str(ev.get("role")))
        return Principal(row.name, row.kind, tuple(sorted(stored & recorded)), disabled)

    @contextmanager
    def recording_refusals(self, actor: str, action: str) -> Iterator[None]:
        """Record a PolicyDenied raised inside as an `access.denied` event, after the refused
        operation's transaction has rolled back (so the refusal writes nothing else)."""
        try:
            yield
        except PolicyDenied as exc:
            self.ledger.record(
                AccessDenied(
                    time=self.clock.now(),
                    actor=actor,
                    purpose="security",
                    action=action,
                    dataset="*",
                    reason=exc.message,
                )
            )
            raise

    def require_owner(self, conn: Connection, actor: str) -> None:
        p = self.get(actor, conn)
        if p.disabled or OWNER not in p.roles:
            raise PolicyDenied(f"{actor} may not change principals, roles or policies (the owner role is required)")

    def add(self, actor: str, name: str, kind: str = "human", password: str | None = None) -> Principal:
        if not _NAME.fullmatch(name or ""):
            raise InvalidInput("principal names are lower-case letters, digits and . _ @ - (max 128)")
        if kind not in ("human", "service"):
            raise InvalidInput("kind must be 'human' or 'service'")
        if password is not None and (kind != "human" or len(password) < 12):
            raise InvalidInput("passwords are for humans and need at least 12 characters")
        now = self.clock.now()
        with self.recording_refusals(actor, "add_principal"), self.store.write() as conn:
            self.require_owner(conn, actor)
            if conn.execute(select(principals.c.name).where(principals.c.name == name)).first():
                raise AlreadyExists(f"principal {name!r} already exists")
            conn.execute(
                insert(principals).values(
                    name=name,
                    kind=kind,
                    password_hash=_hasher.hash(password) if password else None,
                    created_at=now,
                    created_by=actor,
                )
            )
            self.ledger.append(
                conn,
                PrincipalAdded(
                    time=now,
                    actor=actor,
                    purpose="security",
                    principal=name,
                    principal_kind=kind,
                    has_password=password is not None,
                ),
            )
        return self.get(name)

    def disable(self, actor: str, name: str) -> None:
        now = self.clock.now()
        with self.recording_refusals(actor, "disable_principal"), self.store.write() as conn:
            self.require_owner(conn, actor)
            if name == actor:
                raise PolicyDenied("a principal cannot disable itself")
            target = self.get(name, conn)
            if target.disabled:
                raise InvalidInput(f"principal {name!r} is already disabled")
            conn.execute(update(principals).where(principals.c.name == name).values(disabled_at=now))
            conn.execute(
                update(tokens).where(tokens.c.principal == name, tokens.c.revoked_at.is_(None)).values(revoked_at=now)
            )
            bump_policy_version(conn)
            self.ledger.append(conn, PrincipalDisabled(time=now, actor=actor, purpose="security", principal=name))

    def list(self) -> list[Principal]:
        with self.store.read() as conn:
            names = list(conn.execute(select(principals.c.name).order_by(principals.c.name)).scalars())
            return [self.get(n, conn) for n in names]

    def verify_password(self, name: str, password: str) -> Principal:
        """Password login for humans; one message for every failure."""
        with self.store.read() as conn:
            row = conn.execute(select(principals).where(principals.c.name == name)).first()
        stored = row.password_hash if row is not None and row.password_hash else _dummy_hash()
        try:
            ok = _hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if not ok or row is None or not row.password_hash or row.disabled_at is not None:
            raise AuthenticationFailed("wrong name or password")
        return self.get(name)

    # --- roles ---------------------------------------------------------------------------------

    def grant_role(self, actor: str, name: str, role: str) -> None:
        self._change_role(actor, name, role, True)

    def revoke_role(self, actor: str, name: str, role: str) -> None:
        self._change_role(actor, name, role, False)

    def _change_role(self, actor: str, name: str, role: str, grant: bool) -> None:
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
        now = self.clock.now()
        with self.recording_refusals(actor, "change_role"), self.store.write() as conn:
            self.require_owner(conn, actor)
            if name == actor:
                raise PolicyDenied("a principal cannot change its own roles (separation of duties)")
            target = self.get(name, conn)
            if grant:
                if role in target.roles:
                    raise AlreadyExists(f"{name} already has role {role}")
                conn.execute(insert(role_grants).values(principal=name, role=role, granted_by=actor, granted_at=now))
            else:
                if role not in target.roles:
                    raise NotFound(f"{name} does not have role {role}")
                conn.execute(delete(role_grants).where(role_grants.c.principal == name, role_grants.c.role == role))
            bump_policy_version(conn)
            self.ledger.append(
                conn, RoleChanged(time=now, actor=actor, purpose="security", principal=name, role=role, granted=grant)
            )

    # --- tokens --------------------------------------------------------------------------------

    def create_token(
        self,
        actor: str,
        principal: str,
        expires: str | None = "P90D",
        *,
        credential_expires: datetime | None = None,
    ) -> tuple[str, str]:
        """A new API token for `principal`; returns (token id, token). The token is not stored.

        `expires` is an ISO 8601 duration, or None for a token that never expires (owner role only).
        `credential_expires` is the expiry of the token `actor` authenticated with, if any: no token
        outlives the one that minted it."""
        now = self.clock.now()
        expires_at = _deadline(now, expires) if expires else None
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        secret_hash = hashlib.sha256(secret.encode()).digest()
        with self.recording_refusals(actor, "mint_token"), self.store.write() as conn:
            minter = self.get(actor, conn)
            if minter.disabled:
                raise PolicyDenied(f"{actor} is disabled")
            owner = OWNER in minter.roles
            # authorise before looking the target up: a refusal does not say which principals exist
            if principal != actor and not owner and "admin" not in minter.roles:
                raise PolicyDenied(f"{actor} may not mint tokens for others (the owner or admin role is required)")
            target = self.get(principal, conn) if principal != actor else minter
            if principal != actor:
                if not owner and OWNER in target.roles:
                    raise PolicyDenied(f"{actor} may not mint tokens for an owner (the owner role is required)")
            if target.disabled:
                raise InvalidInput(f"principal {principal!r} is disabled")
            if not owner:
                limit = self._token_max_lifetime(conn)
                if expires_at is None or expires_at > _deadline(now, limit):
                    raise PolicyDenied(
                        f"tokens minted without the owner role expire within {limit} "
                        "(the workspace's maximum token lifetime)"
                    )
            if credential_expires is not None and (expires_at is None or expires_at > credential_expires):
                raise PolicyDenied(
                    f"a token cannot outlive the token that mints it (that one expires {utc_iso(credential_expires)})"
                )
            conn.execute(
                insert(tokens).values(
                    id=token_id,
                    principal=principal,
                    secret_hash=secret_hash,
                    created_at=now,
                    created_by=actor,
                    expires_at=expires_at,
                )
            )
            self.ledger.append(
                conn,
                TokenCreated(
                    time=now,
                    actor=actor,
                    purpose="security",
                    token_id=token_id,
                    principal=principal,
                    expires=utc_iso(expires_at) if expires_at else None,
                    secret_digest=token_secret_digest(secret_hash),
                ),
            )
        return token_id, f"cpl_{token_id}_{secret}"

    def token_max_lifetime(self) -> str:
        """The longest lifetime of a token minted without the owner role (ISO 8601 duration)."""
        with self.store.read() as conn:
            return self._token_max_lifetime(conn)

    def _token_max_lifetime(self, conn: Connection) -> str:
        # the setting lives in the ledger (tamper-evident), not in a mutable table: the latest event wins
        data = conn.execute(
            select(ledger_entries.c.data)
            .where(ledger_entries.c.kind == TokenLifetimeSet.kind)
            .order_by(ledger_entries.c.seq.desc())
            .limit(1)
        ).scalar()
        if data is None:
            return DEFAULT_MAX_LIFETIME
        event = decode_event(bytes(data))
        assert isinstance(event, TokenLifetimeSet)
        return event.max_lifetime

    def set_token_max_lifetime(self, actor: str, duration: str) -> None:
        """Set the workspace's maximum token lifetime (owner only; recorded in the ledger)."""
        now = self.clock.now()
        if _deadline(now, duration) <= now:
            raise InvalidInput("the maximum token lifetime must be a positive duration")
        with self.recording_refusals(actor, "set_token_lifetime"), self.store.write() as conn:
            self.require_owner(conn, actor)
            self.ledger.append(conn, TokenLifetimeSet(time=now, actor=actor, purpose="security", max_lifetime=duration))

    def revoke_token(self, actor: str, token_id: str) -> None:
        now = self.clock.now()
        if not _TOKEN_ID.fullmatch(token_id or ""):
            # never repeat it: it may be a whole token, secret included
            raise InvalidInput("give the token's id (16 hex characters, as `token create` printed), not the token")
        with self.recording_refusals(actor, "revoke_token"), self.store.write() as conn:
            row = conn.execute(select(tokens).where(tokens.c.id == token_id)).first()
            if row is None or row.principal != actor:
                revoker = self.get(actor, conn)
                owner = OWNER in revoker.roles and not revoker.disabled
                admin = "admin" in revoker.roles and not revoker.disabled
                # one refusal for another's token and for no token at all: ids are not probed this way
                if not owner and not (admin and (row is None or OWNER not in self.get(row.principal, conn).roles)):
                    raise PolicyDenied(
                        f"{actor} may not revoke another principal's token (owner, or admin for non-owners)"
                    )
            if row is None:
                raise NotFound(f"no token {token_id}")
            if row.revoked_at is not None:
                raise InvalidInput(f"token {token_id} is already revoked")
            conn.execute(update(tokens).where(tokens.c.id == token_id).values(revoked_at=now))
            self.ledger.append(conn, TokenRevoked(time=now, actor=actor, purpose="security", token_id=token_id))

    def authenticate(self, token: str) -> Principal:
        """The principal a token belongs to; AuthenticationFailed (one message) for anything else."""
        return self.authenticate_credential(token).principal

    def _token_as_recorded(self, conn: Connection, row: Any) -> bool:
        """Whether a token row is what the ledger recorded: created for its principal with its expiry
        (and secret hash, where recorded), not revoked, its principal not disabled. A row revived or
        extended at rest must not authenticate (RECON-1 names it too)."""
        created, live = None, True
        for _, _, data in self.ledger.scan(conn, (TokenCreated.kind, TokenRevoked.kind, PrincipalDisabled.kind)):
            ev = json.loads(data)
            if ev.get("token_id") == row.id:
                if ev.get("type") == TokenCreated.kind:
                    created = ev
                else:
                    live = False
            elif ev.get("type") == PrincipalDisabled.kind and ev.get("principal") == row.principal:
                live = False
        if created is None or not live or created.get("principal") != row.principal:
            return False
        expires = utc_iso(as_utc(row.expires_at)) if row.expires_at is not None else None  # type: ignore[arg-type]
        if created.get("expires") != expires:
            return False
        digest = created.get("secret_digest")
        return digest is None or digest == token_secret_digest(row.secret_hash)

    def authenticate_credential(self, token: str) -> Credential:
        """What a token proves (principal, id, expiry); AuthenticationFailed for anything else. The
        message never repeats the token: a malformed one may still hold a secret (padded, prefixed
        with `Bearer`, re-cased)."""
        m = _TOKEN.fullmatch(token or "")
        token_id = m.group(1) if m else None
        reason = "malformed"
        if m:
            now = self.clock.now()
            with self.store.read() as conn:
                row = conn.execute(select(tokens).where(tokens.c.id == token_id)).first()
                given = hashlib.sha256(m.group(2).encode()).digest()
                expected = bytes(row.secret_hash) if row is not None else b"\x00" * 32
                if not hmac.compare_digest(given, expected) or row is None:
                    reason = "unknown or wrong token"
                elif row.revoked_at is not None:
                    reason = "revoked"
                elif row.expires_at is not None and as_utc(row.expires_at) <= now:  # type: ignore[operator]
                    reason = "expired"
                elif not self._token_as_recorded(conn, row):
                    reason = "token changed at rest (it differs from the ledger's record)"
                else:
                    p = self.get(row.principal, conn)
                    if not p.disabled:
                        expires_at = as_utc(row.expires_at) if row.expires_at is not None else None  # type: ignore[arg-type]
                        return Credential(p, str(token_id), expires_at)
                    reason = "principal disabled"
        self.ledger.record(
            AuthenticationRefused(
                time=self.clock.now(), actor="anonymous", purpose="security", token_id=token_id, reason=reason
            )
        )
        raise AuthenticationFailed("invalid, expired or revoked token")

    def tokens_of(self, principal: str) -> list[dict[str, object]]:
        with self.store.read() as conn:
            rows = conn.execute(select(tokens).where(tokens.c.principal == principal).order_by(tokens.c.created_at))
            return [
                {
                    "id": r.id,
                    "created_at": utc_iso(as_utc(r.created_at)),  # type: ignore[arg-type]
                    "expires_at": utc_iso(as_utc(r.expires_at)) if r.expires_at else None,  # type: ignore[arg-type]
                    "revoked": r.revoked_at is not None,
                }
                for r in rows
            ]
