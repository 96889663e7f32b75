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

import builtins
import hashlib
import hmac
import json
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Connection, Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError as RowExists

from complai.access.authz import (
    DEFAULT_MAX_LIFETIME,
    OWNER,
    Authz,
    Principal,
    bump_policy_version,
    deadline,
    policy_version,
    read_principal,
    token_max_lifetime,
)
from complai.clock import Clock, as_utc, parse_utc, utc_iso
from complai.crypto.digest import digest
from complai.errors import AlreadyExists, AuthenticationFailed, InvalidInput, NotFound
from complai.events import (
    AuthenticationRefused,
    PrincipalAdded,
    PrincipalDisabled,
    RoleChanged,
    TokenCreated,
    TokenLifetimeSet,
    TokenRevoked,
)
from complai.ledger.log import Ledger
from complai.store import Store
from complai.store.tables import meta, principals, role_grants, tokens

# defined with the permission decisions (access/authz.py); named here too, where callers look for them
__all__ = [
    "DEFAULT_MAX_LIFETIME",
    "OWNER",
    "ROLES",
    "Credential",
    "Identity",
    "IssuedToken",
    "Principal",
    "TokenInfo",
    "bump_policy_version",
    "is_principal_name",
    "policy_version",
    "redact_tokens",
    "token_secret_digest",
]
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
_hasher = PasswordHasher()
_dummy: list[str] = []


def _dummy_hash() -> str:
    """A fixed hash to verify against when the principal is unknown, so timing does not reveal which
    names exist (made on first use: hashing takes ~0.1 s)."""
    if not _dummy:
        _dummy.append(_hasher.hash("complai-no-such-principal"))
    return _dummy[0]


@dataclass(frozen=True)
class IssuedToken:
    """A token just minted: shown once (`token`), never stored; the ledger records its id."""

    id: str
    token: str
    principal: str
    expires_at: datetime | None
    ledger_seq: int


@dataclass(frozen=True)
class Credential:
    """What an API token proved: its principal, its id (never the secret) and its expiry."""

    principal: Principal
    token_id: str
    expires_at: datetime | None


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown of a token: never its secret or the secret's hash. `last_used_at` is the last
    authentication with it (None: never used since it was minted)."""

    id: str
    principal: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def as_dict(self) -> dict[str, object]:
        def iso(t: datetime | None) -> str | None:
            return utc_iso(as_utc(t)) if t is not None else None

        return {
            "id": self.id,
            "principal": self.principal,
            "created": iso(self.created_at),
            "expires": iso(self.expires_at),
            "last_used": iso(self.last_used_at),
            "revoked": iso(self.revoked_at),
        }


_LAST_USED = "token_last_used:"  # meta key prefix: one row per token used, the time of its last use
# a token's last use is noted to this resolution: a service authenticating every request writes at most
# once a minute per token instead of once per request
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _stale_use(recorded: str | None, now: datetime) -> bool:
    """Whether the recorded last use (an ISO time, or None) should be moved to `now`."""
    if recorded is None:
        return True
    try:
        then = parse_utc(str(recorded))
    except ValueError:
        return True
    return not (now - LAST_USED_RESOLUTION < then <= now)


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


def token_secret_digest(secret_hash: bytes) -> str:
    """What the ledger records of a token's stored secret hash: its SHA-256 (the secret is not derivable)."""
    return digest(bytes(secret_hash))


class TokenFacts:
    """What the ledger recorded about tokens (creations, revocations, disabled principals), read
    incrementally: each authentication reads only the entries appended since the last one, not the
    whole history (which grows with every password login). Appends are serialised on the ledger's head
    row and commit in sequence order, so no entry below the last one read can appear later. Facts once
    read are kept: a ledger entry altered at rest afterwards cannot revive a token in this process."""

    KINDS = (TokenCreated.kind, TokenRevoked.kind, PrincipalDisabled.kind)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.next_seq = 0
        self.created: dict[str, dict[str, Any]] = {}
        self.revoked: set[str] = set()
        self.disabled: set[str] = set()

    def refreshed(self, conn: Connection, ledger: Ledger) -> TokenFacts:
        """These facts, brought up to what `conn` sees of the ledger."""
        with self._lock:
            if ledger.head(conn).size < self.next_seq:  # a ledger shorter than what was read: start again
                self._reset()
            for seq, _, data in ledger.scan(conn, self.KINDS, start=self.next_seq):
                ev = json.loads(data)
                if ev.get("type") == TokenCreated.kind:
                    self.created[str(ev.get("token_id"))] = ev
                elif ev.get("type") == TokenRevoked.kind:
                    self.revoked.add(str(ev.get("token_id")))
                elif ev.get("type") == PrincipalDisabled.kind:
                    self.disabled.add(str(ev.get("principal")))
                self.next_seq = seq + 1
        return self


class Identity:
    """Principals, roles, tokens and passwords; every permission decision is the Authz's."""

    def __init__(self, store: Store, ledger: Ledger, clock: Clock, authz: Authz) -> None:
        self.store, self.ledger, self.clock, self.authz = store, ledger, clock, authz
        self._token_facts = TokenFacts()

    # --- principals ----------------------------------------------------------------------------

    def get(self, name: str, conn: Connection | None = None) -> Principal:
        """A principal as the ledger recorded it (access/authz.py says why); NotFound if none."""
        if conn is None:
            with self.store.read() as c:
                return self.get(name, c)
        return read_principal(self.ledger, conn, name)

    def add(self, actor: str, name: str, kind: str = "human", password: str | None = None) -> Principal:
        """Add a principal (owners only); its creation is recorded."""
        return self.add_recorded(actor, name, kind, password)[0]

    def add_recorded(
        self, actor: str, name: str, kind: str = "human", password: str | None = None
    ) -> tuple[Principal, int]:
        """As `add`; returns the principal and the ledger seq of its `principal.added` event."""
        if not _NAME.fullmatch(name or ""):
            raise InvalidInput("principal names are lower-case letters, digits and . _ @ - (max 128)")
        if kind not in ("human", "service"):
            raise InvalidInput("kind must be 'human' or 'service'")
        if password is not None and (kind != "human" or len(password) < 12):
            raise InvalidInput("passwords are for humans and need at least 12 characters")
        now = self.clock.now()
        with self.authz.refusals(actor, "add_principal"), self.store.write() as conn:
            self.authz.require_owner(conn, actor)
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
            seq = self.ledger.emit(
                conn,
                PrincipalAdded,
                time=now,
                actor=actor,
                purpose="security",
                principal=name,
                principal_kind=kind,
                has_password=password is not None,
            )
        return self.get(name), seq

    def disable(self, actor: str, name: str) -> int:
        """Disable a principal and revoke its tokens (owners only, never oneself); returns the ledger seq."""
        now = self.clock.now()
        with self.authz.refusals(actor, "disable_principal"), self.store.write() as conn:
            self.authz.check_disable(conn, actor, name)
            target = self.get(name, conn)
            if target.disabled:
                raise InvalidInput(f"principal {name!r} is already disabled")
            conn.execute(update(principals).where(principals.c.name == name).values(disabled_at=now))
            conn.execute(
                update(tokens).where(tokens.c.principal == name, tokens.c.revoked_at.is_(None)).values(revoked_at=now)
            )
            bump_policy_version(conn)
            return self.ledger.emit(conn, PrincipalDisabled, time=now, actor=actor, purpose="security", principal=name)

    def list(self) -> list[Principal]:
        with self.store.read() as conn:
            names = list(conn.execute(select(principals.c.name).order_by(principals.c.name)).scalars())
            return [self.get(n, conn) for n in names]

    def verify_password(self, name: str, password: str) -> Principal:
        """Password login for humans; one message for every failure."""
        with self.store.read() as conn:
            row = conn.execute(select(principals).where(principals.c.name == name)).first()
        stored = row.password_hash if row is not None and row.password_hash else _dummy_hash()
        ok: bool
        try:
            ok = _hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if not ok or row is None or not row.password_hash or row.disabled_at is not None:
            raise AuthenticationFailed("wrong name or password")
        return self.get(name)

    # --- roles ---------------------------------------------------------------------------------

    def grant_role(self, actor: str, name: str, role: str) -> int:
        """Grant a role (owners only, never to oneself); returns the ledger seq."""
        return self._change_role(actor, name, role, True)

    def revoke_role(self, actor: str, name: str, role: str) -> int:
        """Revoke a role (owners only, never one's own); returns the ledger seq."""
        return self._change_role(actor, name, role, False)

    def _change_role(self, actor: str, name: str, role: str, grant: bool) -> int:
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
        now = self.clock.now()
        with self.authz.refusals(actor, "change_role"), self.store.write() as conn:
            self.authz.check_role_change(conn, actor, name)
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
            return self.ledger.emit(
                conn, RoleChanged, time=now, actor=actor, purpose="security", principal=name, role=role, granted=grant
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
        """A new API token for `principal`; returns (token id, token). The token is not stored."""
        issued = self.mint(actor, principal, expires, credential_expires=credential_expires)
        return issued.id, issued.token

    def mint(
        self,
        actor: str,
        principal: str,
        expires: str | None = "P90D",
        *,
        credential_expires: datetime | None = None,
    ) -> IssuedToken:
        """A new API token for `principal` (the token itself is not stored).

        `expires` is an ISO 8601 duration, or None for a token that never expires (owner role only).
        `credential_expires` is the expiry of the token `actor` authenticated with, if any: no token
        outlives the one that minted it."""
        now = self.clock.now()
        expires_at = deadline(now, expires) if expires else None
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        secret_hash = hashlib.sha256(secret.encode()).digest()
        with self.authz.refusals(actor, "mint_token"), self.store.write() as conn:
            self.authz.check_mint(conn, actor, principal, now, expires_at, credential_expires)
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
            seq = self.ledger.emit(
                conn,
                TokenCreated,
                time=now,
                actor=actor,
                purpose="security",
                token_id=token_id,
                principal=principal,
                expires=utc_iso(expires_at) if expires_at else None,
                secret_digest=token_secret_digest(secret_hash),
            )
        return IssuedToken(token_id, f"cpl_{token_id}_{secret}", principal, expires_at, seq)

    def token_max_lifetime(self) -> str:
        """The longest lifetime of a token minted without the owner role (ISO 8601 duration)."""
        with self.store.read() as conn:
            return token_max_lifetime(conn)

    def set_token_max_lifetime(self, actor: str, duration: str) -> int:
        """Set the workspace's maximum token lifetime (owner only; recorded in the ledger); returns the seq."""
        now = self.clock.now()
        if deadline(now, duration) <= now:
            raise InvalidInput("the maximum token lifetime must be a positive duration")
        with self.authz.refusals(actor, "set_token_lifetime"), self.store.write() as conn:
            self.authz.require_owner(conn, actor)
            return self.ledger.emit(
                conn, TokenLifetimeSet, time=now, actor=actor, purpose="security", max_lifetime=duration
            )

    def revoke_token(self, actor: str, token_id: str) -> int:
        """Revoke a token by id (one's own; owner, or admin for non-owners' tokens); returns the seq."""
        now = self.clock.now()
        if not _TOKEN_ID.fullmatch(token_id or ""):
            # never repeat it: it may be a whole token, secret included
            raise InvalidInput("give the token's id (16 hex characters, as `token create` printed), not the token")
        with self.authz.refusals(actor, "revoke_token"), self.store.write() as conn:
            row = conn.execute(select(tokens).where(tokens.c.id == token_id)).first()
            self.authz.check_revoke_token(conn, actor, row.principal if row is not None else None)
            if row is None:
                raise NotFound(f"no token {token_id}")
            if row.revoked_at is not None:
                raise InvalidInput(f"token {token_id} is already revoked")
            conn.execute(update(tokens).where(tokens.c.id == token_id).values(revoked_at=now))
            return self.ledger.emit(conn, TokenRevoked, time=now, actor=actor, purpose="security", token_id=token_id)

    def authenticate(self, token: str) -> Principal:
        """The principal a token belongs to; AuthenticationFailed (one message) for anything else."""
        return self.authenticate_credential(token).principal

    def _token_as_recorded(self, conn: Connection, row: Row[Any]) -> bool:
        """Whether a token row is what the ledger recorded: created for its principal with its expiry
        (and secret hash, where recorded), not revoked, its principal not disabled. A row revived or
        extended at rest must not authenticate (RECON-1 names it too)."""
        facts = self._token_facts.refreshed(conn, self.ledger)
        created = facts.created.get(row.id)
        if created is None or row.id in facts.revoked or row.principal in facts.disabled:
            return False
        if created.get("principal") != row.principal:
            return False
        expires = utc_iso(as_utc(row.expires_at)) if row.expires_at is not None else None
        if created.get("expires") != expires:
            return False
        recorded_digest = created.get("secret_digest")
        return recorded_digest is None or recorded_digest == token_secret_digest(row.secret_hash)

    def authenticate_credential(self, token: str, *, record_refusal: bool = True) -> Credential:
        """What a token proves (principal, id, expiry); AuthenticationFailed for anything else, recorded
        unless `record_refusal` is false (a caller past its limit of refusals: a flood must not grow
        the ledger). The message never repeats the token: a malformed one may still hold a secret
        (padded, prefixed with `Bearer`, re-cased)."""
        m = _TOKEN.fullmatch(token or "")
        token_id = m.group(1) if m else None
        reason = "malformed"
        credential: Credential | None = None
        last_used: str | None = None
        if m:
            now = self.clock.now()
            with self.store.read() as conn:
                # the token and when it was last used, in one statement
                used = meta.c.key == _LAST_USED + str(token_id)
                q = select(tokens, meta.c.value.label("last_used")).outerjoin(meta, used)
                row = conn.execute(q.where(tokens.c.id == token_id)).first()
                given = hashlib.sha256(m.group(2).encode()).digest()
                expected = bytes(row.secret_hash) if row is not None else b"\x00" * 32
                if not hmac.compare_digest(given, expected) or row is None:
                    reason = "unknown or wrong token"
                elif row.revoked_at is not None:
                    reason = "revoked"
                elif row.expires_at is not None and as_utc(row.expires_at) <= now:
                    reason = "expired"
                elif not self._token_as_recorded(conn, row):
                    reason = "token changed at rest (it differs from the ledger's record)"
                else:
                    p = self.get(row.principal, conn)
                    if not p.disabled:
                        expires_at = as_utc(row.expires_at) if row.expires_at is not None else None
                        credential = Credential(p, str(token_id), expires_at)
                        last_used = row.last_used
                    else:
                        reason = "principal disabled"
            if credential is not None:
                if _stale_use(last_used, now):
                    self._record_use(credential.token_id, now)
                return credential
        if record_refusal:
            self.ledger.emit(
                None, AuthenticationRefused, actor="anonymous", purpose="security", token_id=token_id, reason=reason
            )
        raise AuthenticationFailed("invalid, expired or revoked token")

    def _record_use(self, token_id: str, now: datetime) -> None:
        """Note when a token last authenticated (to LAST_USED_RESOLUTION): a time in the workspace's
        `meta` table, not a ledger event per use. It proves nothing and grants nothing (RECON-1 does not
        reconcile it); it tells an owner which tokens are idle."""
        key, stamp = _LAST_USED + token_id, utc_iso(now)
        try:
            with self.store.write() as conn:
                if not conn.execute(update(meta).where(meta.c.key == key).values(value=stamp)).rowcount:
                    conn.execute(insert(meta).values(key=key, value=stamp))
        except RowExists:
            pass  # a concurrent first use of the same token recorded it at the same moment

    def list_tokens(self, actor: str, principal: str | None = None) -> builtins.list[TokenInfo]:
        """The tokens of `principal` (None: every principal's), oldest first, with their last use. One's
        own, or another's for those who may revoke them (access/authz.py); a refusal is recorded."""
        with self.authz.refusals(actor, "list_tokens"), self.store.read() as conn:
            self.authz.check_list_tokens(conn, actor, principal)
            query = select(tokens).order_by(tokens.c.created_at, tokens.c.id)
            if principal is not None:
                query = query.where(tokens.c.principal == principal)
            rows = conn.execute(query).all()
            recorded = select(meta.c.key, meta.c.value).where(meta.c.key.startswith(_LAST_USED, autoescape=True))
            used = {str(k)[len(_LAST_USED) :]: str(v) for k, v in conn.execute(recorded)}
        return [
            TokenInfo(
                id=r.id,
                principal=r.principal,
                created_at=as_utc(r.created_at),
                expires_at=as_utc(r.expires_at) if r.expires_at is not None else None,
                revoked_at=as_utc(r.revoked_at) if r.revoked_at is not None else None,
                last_used_at=parse_utc(used[r.id]) if r.id in used else None,
            )
            for r in rows
        ]

    def tokens_of(self, principal: str) -> builtins.list[dict[str, object]]:
        with self.store.read() as conn:
            rows = conn.execute(select(tokens).where(tokens.c.principal == principal).order_by(tokens.c.created_at))
            return [
                {
                    "id": r.id,
                    "created_at": utc_iso(as_utc(r.created_at)),
                    "expires_at": utc_iso(as_utc(r.expires_at)) if r.expires_at else None,
                    "revoked": r.revoked_at is not None,
                }
                for r in rows
            ]
