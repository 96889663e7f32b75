"""Permission decisions, made in one place.

Every decision whether a principal may do something is taken here: the purpose-based rules (evaluated
by pycasbin, deny by default), the owner role for changes to principals, roles and rules (checked
inside the caller's write transaction, so a concurrent role change cannot slip between the check and
the write), who may mint and revoke tokens, separation of duties, and acting as another principal. A
refusal is PolicyDenied, recorded as one `access.denied` event after the refused operation's
transaction has rolled back, so a refusal writes nothing else.

Principals and rules count as the ledger recorded them, not as the tables hold them: a role granted,
a principal re-enabled or a rule added at rest grants nothing (RECON-1 names the divergence, and
nothing is blocked meanwhile, so the audit that finds it still runs).

Decisions are cached per process and keyed on the policy version (bumped in the same transaction as
any change to rules, roles or principals), so a cached decision never outlives the policy it came from:
casbin's matching is linear in the number of rules (0.3 ms at 1,100 rules, 3.5 ms at 11,000 here).
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

import casbin
from sqlalchemy import Connection, insert, select, update

from complai.clock import Clock, utc_iso
from complai.errors import InvalidInput, NotFound, PolicyDenied
from complai.events import AccessDenied, PolicyChanged, PrincipalDisabled, RoleChanged, TokenLifetimeSet, decode_event
from complai.ledger.log import Ledger
from complai.store import Store
from complai.store.tables import ledger_entries, meta, principals, role_grants
from complai.vault.schema import retention_deadline

OWNER = "owner"
ACTIONS = ("read", "ingest", "query_dp", "train", "export", "erase", "share", "audit", "admin", "detokenize")
MODEL = """
[request_definition]
r = sub, dom, act, purpose

[policy_definition]
p = sub, dom, act, purpose, eft

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = g(r.sub, p.sub) && keyMatch(r.dom, p.dom) && (p.act == "*" || r.act == p.act) \
 && (p.purpose == "*" || r.purpose == p.purpose)
"""
BUILTIN = [
    ("role:owner", "*", "*", "*", "allow"),
    ("role:auditor", "*", "audit", "*", "allow"),
    ("role:admin", "*", "admin", "*", "allow"),
]
DEFAULT_MAX_LIFETIME = "P90D"
_RULE_DENIED = "no rule allows it (deny by default) or a deny rule matches"

RuleTuple = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class Principal:
    name: str
    kind: str
    roles: tuple[str, ...]
    disabled: bool


# --- principals and the policy as recorded -------------------------------------------------------


class RoleFacts:
    """Roles granted and revoked and principals disabled, as the ledger recorded them, read
    incrementally: each look reads only the entries of these kinds appended since the last one it read,
    not every role change ever made (an organisation's history grows with each grant). Before reading
    on, the entry last read must still be there with the same hash: a ledger rewound (restored) below
    it is read again from the start; a snapshot older than it is answered from its own full read,
    keeping nothing. A fact once read is kept, as TokenFacts keeps its own."""

    KINDS = (RoleChanged.kind, PrincipalDisabled.kind)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.last: tuple[int, bytes] | None = None
        self.roles: dict[str, set[str]] = {OWNER: {OWNER}}  # the owner and its role come with the workspace
        self.disabled: set[str] = set()

    @staticmethod
    def _apply(ev: dict[str, object], roles: dict[str, set[str]], disabled: set[str]) -> None:
        name = str(ev.get("principal"))
        if ev.get("type") == PrincipalDisabled.kind:
            disabled.add(name)
        elif ev.get("granted"):
            roles.setdefault(name, set()).add(str(ev.get("role")))
        else:
            roles.setdefault(name, set()).discard(str(ev.get("role")))

    def of(self, ledger: Ledger, conn: Connection, name: str) -> tuple[set[str], bool]:
        """(recorded roles, disabled) of `name` as `conn` sees the ledger."""
        e = ledger_entries.c
        with self._lock:
            start = 0
            if self.last is not None:
                seq, leaf = self.last
                found = conn.execute(select(e.leaf_hash).where(e.seq == seq)).scalar()
                if found is None:  # an older snapshot (or a rewound ledger): read it all, keep nothing
                    roles: dict[str, set[str]] = {OWNER: {OWNER}}
                    disabled: set[str] = set()
                    for _, _, data in ledger.scan(conn, self.KINDS):
                        self._apply(json.loads(data), roles, disabled)
                    return set(roles.get(name, ())), name in disabled
                if bytes(found) != leaf:
                    self._reset()
                else:
                    start = seq + 1
            for seq, _, data in ledger.scan(conn, self.KINDS, start=start):
                self._apply(json.loads(data), self.roles, self.disabled)
                self.last = (seq, b"")
            if self.last is not None and self.last[1] == b"":
                leaf_hash = conn.execute(select(e.leaf_hash).where(e.seq == self.last[0])).scalar_one()
                self.last = (self.last[0], bytes(leaf_hash))
            return set(self.roles.get(name, ())), name in self.disabled


_ROLE_FACTS: weakref.WeakKeyDictionary[Ledger, RoleFacts] = weakref.WeakKeyDictionary()
_ROLE_FACTS_LOCK = threading.Lock()


def role_facts(ledger: Ledger) -> RoleFacts:
    with _ROLE_FACTS_LOCK:
        facts = _ROLE_FACTS.get(ledger)
        if facts is None:
            facts = _ROLE_FACTS[ledger] = RoleFacts()
        return facts


def read_principal(ledger: Ledger, conn: Connection, name: str) -> Principal:
    """A principal with its roles and disabling as the ledger recorded them (NotFound if none)."""
    # the principal and its stored roles in one statement (a row per role, one with none if it has none)
    granted = role_grants.c.principal == principals.c.name
    q = select(principals, role_grants.c.role.label("granted_role")).outerjoin(role_grants, granted)
    rows = conn.execute(q.where(principals.c.name == name)).all()
    if not rows:
        raise NotFound(f"no principal named {name!r}")
    row = rows[0]
    stored = {str(r.granted_role) for r in rows if r.granted_role is not None}
    # roles and disabling as the ledger recorded them: a role granted or a principal re-enabled at
    # rest counts for nothing (RECON-1 names the edit)
    recorded, disabled_recorded = role_facts(ledger).of(ledger, conn, name)
    disabled = row.disabled_at is not None or disabled_recorded
    return Principal(row.name, row.kind, tuple(sorted(stored & recorded)), disabled)


def recorded_policy(ledger: Ledger, conn: Connection) -> tuple[set[tuple[str, ...]], set[tuple[str, str]], set[str]]:
    """The policy as the ledger recorded it: (live rules with their ids, role grants, disabled
    principals). The owner and its role come with the workspace."""
    rules: dict[int, tuple[str, ...]] = {}
    grants: set[tuple[str, str]] = {(OWNER, OWNER)}
    disabled: set[str] = set()
    kinds = (PolicyChanged.kind, RoleChanged.kind, PrincipalDisabled.kind)
    for _, _, data in ledger.scan(conn, kinds):
        ev = json.loads(data)
        if ev.get("type") == PolicyChanged.kind:
            if ev.get("added"):
                rules[int(ev["rule_id"])] = tuple(
                    str(ev.get(k)) for k in ("subject", "domain", "action", "for_purpose", "effect")
                )
            else:
                rules.pop(int(ev["rule_id"]), None)
        elif ev.get("type") == RoleChanged.kind:
            grant = (str(ev.get("principal")), str(ev.get("role")))
            (grants.add if ev.get("granted") else grants.discard)(grant)
        elif ev.get("type") == PrincipalDisabled.kind:
            disabled.add(str(ev.get("principal")))
    return {(str(i), *r) for i, r in rules.items()}, grants, disabled


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


def new_enforcer(rules: list[RuleTuple], grants: list[tuple[str, str]]) -> casbin.Enforcer:
    model = casbin.model.Model()
    model.load_model_from_text(MODEL)
    enforcer = casbin.Enforcer(model)
    enforcer.add_policies([list(r) for r in BUILTIN + rules])
    if grants:
        enforcer.add_grouping_policies([[p, f"role:{r}"] for p, r in grants])
    return enforcer


_TIME_DURATION = re.compile(r"^PT(?:(\d{1,6})H)?(?:(\d{1,6})M)?(?:(\d{1,9})S)?$")


def deadline(now: datetime, duration: str) -> datetime:
    """`now` plus an ISO 8601 duration: a date duration (P90D, P1Y) or, for short-lived credentials,
    a time one (PT1H, PT15M); InvalidInput when it is malformed or out of range."""
    m = _TIME_DURATION.fullmatch(duration) if isinstance(duration, str) else None
    if m and duration != "PT" and any(m.groups()):
        hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
        span = timedelta(hours=hours, minutes=minutes, seconds=seconds)
        if not timedelta(0) < span <= timedelta(days=366):
            raise InvalidInput(f"duration {duration!r} must be more than zero and at most a year")
        return now + span
    try:
        return retention_deadline(now, duration)
    except (OverflowError, ValueError):
        raise InvalidInput(f"duration {duration!r} is out of range") from None


def token_max_lifetime(conn: Connection) -> str:
    """The longest lifetime of a token minted without the owner role (ISO 8601 duration). The setting
    lives in the ledger (tamper-evident), not in a mutable table: the latest event wins."""
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


# --- decisions -----------------------------------------------------------------------------------


class Authz:
    """The workspace's permission decisions and the record of its refusals."""

    def __init__(self, store: Store, ledger: Ledger, clock: Clock) -> None:
        self.store, self.ledger, self.clock = store, ledger, clock
        self._lock = threading.Lock()
        self._version = -1
        self._enforcer: casbin.Enforcer | None = None
        self._decisions: dict[tuple[str, str, str, str], bool] = {}
        self.cache = True

    # --- purpose-based rules -------------------------------------------------------------------

    def _load(self, conn: Connection, version: int) -> casbin.Enforcer:
        recorded_rules, recorded_grants, disabled = recorded_policy(self.ledger, conn)
        rules: list[RuleTuple] = [
            (r[1], r[2], r[3], r[4], r[5]) for r in sorted(recorded_rules, key=lambda r: int(r[0]))
        ]
        grants = [g for g in sorted(recorded_grants) if g[0] not in disabled]
        enforcer = new_enforcer(rules, grants)
        self._enforcer, self._version, self._decisions = enforcer, version, {}
        return enforcer

    def decide(self, principal: str, dataset: str, action: str, purpose: str, conn: Connection | None = None) -> bool:
        """Whether the rules allow this request (nothing is recorded)."""
        return self.decide_any(principal, dataset, [(action, purpose)], conn)

    def decide_any(
        self, principal: str, dataset: str, requests: Iterable[tuple[str, str]], conn: Connection | None = None
    ) -> bool:
        """Whether the rules allow any of these (action, purpose) requests on `dataset` (nothing is
        recorded): the policy's version is read once, in one snapshot, for all of them."""
        if conn is None:
            with self.store.read() as c:
                return self.decide_any(principal, dataset, requests, c)
        version = policy_version(conn)
        with self._lock:
            enforcer = self._enforcer if version == self._version else None
            if enforcer is None:
                enforcer = self._load(conn, version)
            for action, purpose in requests:
                key = (principal, dataset, action, purpose)
                allowed = self._decisions.get(key) if self.cache else None
                if allowed is None:
                    allowed = bool(enforcer.enforce(principal, dataset, action, purpose))
                    if self.cache:
                        self._decisions[key] = allowed
                if allowed:
                    return True
            return False

    def check(self, principal: str, dataset: str, action: str, purpose: str) -> None:
        """Raise PolicyDenied (and record the refusal) unless the rules allow this request."""
        if action not in ACTIONS:
            raise InvalidInput(f"unknown action {action!r}")
        if self.decide(principal, dataset, action, purpose):
            return
        self.ledger.emit(
            None, AccessDenied, actor=principal, purpose=purpose, action=action, dataset=dataset, reason=_RULE_DENIED
        )
        raise PolicyDenied(f"{principal} may not {action} {dataset!r} for {purpose}")

    # --- refusals of changes to identities and rules -------------------------------------------

    @contextmanager
    def refusals(self, actor: str, action: str) -> Iterator[None]:
        """Record a PolicyDenied raised inside as an `access.denied` event, after the refused
        operation's transaction has rolled back (so the refusal writes nothing else)."""
        try:
            yield
        except PolicyDenied as exc:
            self.ledger.emit(
                None, AccessDenied, actor=actor, purpose="security", action=action, dataset="*", reason=exc.message
            )
            raise

    def refuse(self, actor: str, action: str, message: str) -> NoReturn:
        """Refuse `actor` outright (recorded as for `refusals`)."""
        with self.refusals(actor, action):
            raise PolicyDenied(message)

    def require_owner(self, conn: Connection, actor: str) -> Principal:
        """The actor, if an enabled owner; checked in the caller's write transaction."""
        p = read_principal(self.ledger, conn, actor)
        if p.disabled or OWNER not in p.roles:
            raise PolicyDenied(f"{actor} may not change principals, roles or policies (the owner role is required)")
        return p

    def check_disable(self, conn: Connection, actor: str, name: str) -> None:
        """Disabling a principal: owners only, and never oneself."""
        self.require_owner(conn, actor)
        if name == actor:
            raise PolicyDenied("a principal cannot disable itself")

    def check_role_change(self, conn: Connection, actor: str, name: str) -> None:
        """Granting or revoking a role: owners only, and never one's own (separation of duties)."""
        self.require_owner(conn, actor)
        if name == actor:
            raise PolicyDenied("a principal cannot change its own roles (separation of duties)")

    def check_grant(self, conn: Connection, actor: str, subject: str, effect: str) -> None:
        """A rule's subject (checked by the caller to exist): no principal allows itself, or a role it
        holds, anything (separation of duties). The owner role is checked before (`require_owner`)."""
        if effect != "allow":
            return
        if subject.startswith("role:"):
            if subject[5:] in read_principal(self.ledger, conn, actor).roles:
                raise PolicyDenied("a principal cannot grant rights to a role it holds (separation of duties)")
        elif subject == actor:
            raise PolicyDenied("a principal cannot grant itself rights (separation of duties)")

    # --- tokens --------------------------------------------------------------------------------

    def check_mint(
        self,
        conn: Connection,
        actor: str,
        principal: str,
        now: datetime,
        expires_at: datetime | None,
        credential_expires: datetime | None,
    ) -> None:
        """Minting a token for `principal` expiring at `expires_at`: for oneself, or (owner only) for
        another, since a token carries every right of its principal and no one may gain through it a
        right they do not hold (an admin may not read or audit, so may not mint for a principal who
        may); without the owner role within the workspace's maximum token lifetime; never beyond the
        expiry of the token the actor authenticated with."""
        minter = read_principal(self.ledger, conn, actor)
        if minter.disabled:
            raise PolicyDenied(f"{actor} is disabled")
        owner = OWNER in minter.roles
        # authorise before looking the target up: a refusal does not say which principals exist
        if principal != actor and not owner:
            raise PolicyDenied(f"{actor} may not mint tokens for others (the owner role is required)")
        target = read_principal(self.ledger, conn, principal) if principal != actor else minter
        if target.disabled:
            raise InvalidInput(f"principal {principal!r} is disabled")
        if not owner:
            limit = token_max_lifetime(conn)
            if expires_at is None or expires_at > deadline(now, limit):
                raise PolicyDenied(
                    f"tokens minted without the owner role expire within {limit} "
                    "(the workspace's maximum token lifetime)"
                )
        if credential_expires is not None and (expires_at is None or expires_at > credential_expires):
            raise PolicyDenied(
                f"a token cannot outlive the token that mints it (that one expires {utc_iso(credential_expires)})"
            )

    def check_revoke_token(self, conn: Connection, actor: str, holder: str | None) -> None:
        """Revoking a token held by `holder` (None: no such token): one's own, or (owner, or admin for
        non-owners' tokens) another's. One refusal for another's token and for no token at all, so
        token ids are not probed this way."""
        if holder == actor:
            return
        revoker = read_principal(self.ledger, conn, actor)
        owner = OWNER in revoker.roles and not revoker.disabled
        admin = "admin" in revoker.roles and not revoker.disabled
        if not owner and not (
            admin and (holder is None or OWNER not in read_principal(self.ledger, conn, holder).roles)
        ):
            raise PolicyDenied(f"{actor} may not revoke another principal's token (owner, or admin for non-owners)")

    def check_list_tokens(self, conn: Connection, actor: str, holder: str | None) -> None:
        """Seeing the tokens of `holder` (None: everyone's): one's own; another's for whoever may revoke
        them (owner, or admin for a non-owner's); everyone's for owners only."""
        if holder == actor:
            return
        viewer = read_principal(self.ledger, conn, actor)
        owner = OWNER in viewer.roles and not viewer.disabled
        admin = "admin" in viewer.roles and not viewer.disabled
        if owner:
            return
        if holder is None:
            raise PolicyDenied(f"{actor} may not list every principal's tokens (the owner role is required)")
        if not (admin and OWNER not in read_principal(self.ledger, conn, holder).roles):
            raise PolicyDenied(f"{actor} may not list another principal's tokens (owner, or admin for non-owners)")

    # --- acting as another principal -----------------------------------------------------------

    def check_act_as(self, caller: Principal) -> None:
        """Acting as another principal (delegation) needs the owner role; a refusal is recorded."""
        if OWNER not in caller.roles:
            self.refuse(
                caller.name, "act_as", f"{caller.name} may not act as another principal (--as needs the owner role)"
            )
