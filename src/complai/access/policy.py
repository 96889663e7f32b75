"""Purpose-based access policy: the rules, their changes and their record.

A request is (principal, dataset, action, purpose). Rules name a principal or a role (`role:NAME`), a
dataset or a dataset pattern (`credit_*`, `*`: Casbin's keyMatch), an action (or `*`) and a purpose (or
`*`), with effect allow or deny; any matching deny wins. Built-in rules give the owner role everything
and the auditor role the `audit` action. Rules live in the store; every change is a ledger event.
Deciding a request is the Authz's (access/authz.py), the one place permissions are decided.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select

from complai.access.authz import (
    ACTIONS,
    BUILTIN,
    MODEL,
    Authz,
    bump_policy_version,
    new_enforcer,
    recorded_policy,
)
from complai.access.identity import ROLES, Identity
from complai.clock import Clock
from complai.errors import AlreadyExists, InvalidInput, NotFound
from complai.events import PolicyChanged
from complai.ledger.log import Ledger
from complai.store import Store
from complai.store.tables import policy_rules
from complai.taxonomy import Taxonomy

# the rule model is defined with the decisions (access/authz.py); named here too, where callers look for it
__all__ = ["ACTIONS", "BUILTIN", "MODEL", "Policy", "Rule", "new_enforcer", "recorded_policy"]


@dataclass(frozen=True)
class Rule:
    id: int
    subject: str
    domain: str
    action: str
    purpose: str
    effect: str

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class Policy:
    def __init__(
        self, store: Store, ledger: Ledger, identity: Identity, taxonomy: Taxonomy, clock: Clock, authz: Authz
    ) -> None:
        self.store, self.ledger, self.identity, self.taxonomy, self.clock = store, ledger, identity, taxonomy, clock
        self.authz = authz

    # --- decisions (the Authz's) ---------------------------------------------------------------

    @property
    def cache(self) -> bool:
        """Whether decisions are cached (per process, keyed on the policy version)."""
        return self.authz.cache

    @cache.setter
    def cache(self, on: bool) -> None:
        self.authz.cache = on

    def decide(self, principal: str, dataset: str, action: str, purpose: str, conn: Connection | None = None) -> bool:
        """Whether the rules allow this request (nothing is recorded)."""
        return self.authz.decide(principal, dataset, action, purpose, conn)

    def check(self, principal: str, dataset: str, action: str, purpose: str) -> None:
        """Raise PolicyDenied (and record the refusal) unless the policy allows this request."""
        self.authz.check(principal, dataset, action, purpose)

    # --- changes -------------------------------------------------------------------------------

    def _validate(self, actor: str, conn: Connection, subject: str, action: str, purpose: str, effect: str) -> None:
        if action != "*" and action not in ACTIONS:
            raise InvalidInput(f"unknown action {action!r} (actions: {', '.join(ACTIONS)}, or *)")
        if purpose != "*":
            self.taxonomy.purpose(purpose)
        if subject.startswith("role:"):
            if subject[5:] not in ROLES:
                raise InvalidInput(f"unknown role {subject[5:]!r}")
        else:
            self.identity.get(subject, conn)
        self.authz.check_grant(conn, actor, subject, effect)

    def add(self, actor: str, subject: str, domain: str, action: str, purpose: str, effect: str = "allow") -> Rule:
        """Add a rule (owners only: a refusal is recorded, and comes before any check of the rule)."""
        return self.add_recorded(actor, subject, domain, action, purpose, effect)[0]

    def add_recorded(
        self, actor: str, subject: str, domain: str, action: str, purpose: str, effect: str = "allow"
    ) -> tuple[Rule, int]:
        """As `add`; returns the rule and the ledger seq of its `policy.changed` event."""
        now = self.clock.now()
        with self.authz.refusals(actor, "change_policy"), self.store.write() as conn:
            self.authz.require_owner(conn, actor)
            if effect not in ("allow", "deny"):
                raise InvalidInput("effect must be allow or deny")
            if not domain:
                raise InvalidInput("a rule needs a dataset or pattern")
            self._validate(actor, conn, subject, action, purpose, effect)
            c = policy_rules.c
            exists = conn.execute(
                select(c.id).where(
                    c.subject == subject,
                    c.domain == domain,
                    c.action == action,
                    c.purpose == purpose,
                    c.effect == effect,
                )
            ).first()
            if exists:
                raise AlreadyExists(f"that rule exists already (id {exists.id})")
            rule_id = conn.execute(
                insert(policy_rules)
                .values(
                    subject=subject,
                    domain=domain,
                    action=action,
                    purpose=purpose,
                    effect=effect,
                    created_by=actor,
                    created_at=now,
                )
                .returning(c.id)
            ).scalar_one()
            rule = Rule(int(rule_id), subject, domain, action, purpose, effect)
            seq = self._record(conn, actor, rule, added=True)
        return rule, seq

    def remove(self, actor: str, rule_id: int) -> int:
        """Remove a rule (owners only: a refusal is recorded, and says nothing of whether the rule
        exists); returns the ledger seq."""
        with self.authz.refusals(actor, "change_policy"), self.store.write() as conn:
            self.authz.require_owner(conn, actor)
            row = conn.execute(select(policy_rules).where(policy_rules.c.id == rule_id)).first()
            if row is None:
                raise NotFound(f"no policy rule {rule_id}")
            conn.execute(delete(policy_rules).where(policy_rules.c.id == rule_id))
            rule = Rule(rule_id, row.subject, row.domain, row.action, row.purpose, row.effect)
            return self._record(conn, actor, rule, added=False)

    def _record(self, conn: Connection, actor: str, rule: Rule, added: bool) -> int:
        """Bump the policy version and record the change, in the caller's transaction."""
        version = bump_policy_version(conn)
        return self.ledger.emit(
            conn,
            PolicyChanged,
            actor=actor,
            purpose="security",
            rule_id=rule.id,
            subject=rule.subject,
            domain=rule.domain,
            action=rule.action,
            for_purpose=rule.purpose,
            effect=rule.effect,
            added=added,
            policy_version=version,
        )

    def rules(self) -> list[Rule]:
        with self.store.read() as conn:
            rows = conn.execute(select(policy_rules).order_by(policy_rules.c.id))
            return [Rule(int(r.id), r.subject, r.domain, r.action, r.purpose, r.effect) for r in rows]
