"""Session operations: principals, tokens, roles, policy rules and data-sharing agreements.

Changes to principals, roles and rules are for owners: the access services check the owner role inside
their write transaction (through access/authz.py, the one place permissions are decided), so a role
revoked meanwhile cannot slip between the check and the write; a refusal is recorded and writes
nothing else. Views of principals, rules and agreements are the auditor's (`audit`), as the ledger's
are. Each change sets `last_seq` to the ledger entry that records it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from complai.access.agreements import Agreement, ShareResult
from complai.access.authz import BUILTIN, RuleTuple
from complai.access.identity import IssuedToken, Principal, TokenInfo
from complai.access.policy import Rule
from complai.app.core import SessionCore
from complai.clock import parse_utc
from complai.errors import InvalidInput


@dataclass(frozen=True)
class SharedPackage:
    """One use of an agreement, sealed to its recipient in `file`."""

    file: str
    recipient: str
    rows: int
    use: int
    max_uses: int
    ledger_seq: int

    def as_dict(self) -> ShareResult:
        """What the sealing reports (the recipient is the agreement's, not the package's)."""
        return {
            "file": self.file,
            "rows": self.rows,
            "use": self.use,
            "max_uses": self.max_uses,
            "ledger_seq": self.ledger_seq,
        }


class AccessOps(SessionCore):
    # --- principals ----------------------------------------------------------------------------

    def add_principal(self, name: str, kind: str = "human", password: str | None = None) -> Principal:
        """Add a person (`human`, optionally with a password) or a `service` (owners only)."""
        principal, self.last_seq = self._svc.identity.add_recorded(self.principal, name, kind, password)
        return principal

    def list_principals(self) -> list[Principal]:
        """Every principal with its roles as recorded (the auditor's view)."""
        self._check("audit")
        return self._svc.identity.list()

    def disable_principal(self, name: str) -> None:
        """Disable a principal and revoke its tokens (owners only; never oneself)."""
        self.last_seq = self._svc.identity.disable(self.principal, name)

    # --- tokens --------------------------------------------------------------------------------

    def create_token(
        self,
        principal: str | None = None,
        expires: str | None = "P90D",
        *,
        credential_expires: datetime | None = None,
    ) -> IssuedToken:
        """A token for `principal` (default: oneself), shown once. `expires` is an ISO 8601 duration or
        None (never: owners only); `credential_expires` is the expiry of the token the caller
        authenticated with, which the new token may not outlive."""
        issued = self._svc.identity.mint(
            self.principal, principal or self.principal, expires, credential_expires=credential_expires
        )
        self.last_seq = issued.ledger_seq
        return issued

    def revoke_token(self, token_id: str) -> None:
        """Revoke a token by its id: one's own, or (owner, or admin for non-owners) another's."""
        self.last_seq = self._svc.identity.revoke_token(self.principal, token_id)

    def tokens(self, principal: str | None = None, *, everyone: bool = False) -> list[TokenInfo]:
        """Tokens with their creation, expiry, last use and revocation, never their secrets: one's own
        (default), `principal`'s (owner, or admin for non-owners), or `everyone`'s (owners only)."""
        holder = None if everyone else (principal or self.principal)
        if everyone and principal:
            raise InvalidInput("give a principal or ask for every token, not both")
        return self._svc.identity.list_tokens(self.principal, holder)

    def token_counts(self) -> dict[str, dict[str, int]]:
        """Per principal, how many of its tokens are live, expired and revoked (never an id or a secret):
        the auditor's view of principals (`audit`), as the ledger's token events show it."""
        self._check("audit")
        now = self._svc.clock.now()
        out: dict[str, dict[str, int]] = {}
        for p in self._svc.identity.list():
            counts = {"live": 0, "expired": 0, "revoked": 0}
            for t in self._svc.identity.tokens_of(p.name):
                expires = t["expires_at"]
                if t["revoked"]:
                    counts["revoked"] += 1
                elif expires is not None and parse_utc(str(expires)) <= now:
                    counts["expired"] += 1
                else:
                    counts["live"] += 1
            out[p.name] = counts
        return out

    def token_max_lifetime(self) -> str:
        """The longest lifetime of a token minted without the owner role (ISO 8601 duration)."""
        return self._svc.identity.token_max_lifetime()

    def set_token_max_lifetime(self, duration: str) -> str:
        """Set that maximum (owners only); returns it as it now stands."""
        self.last_seq = self._svc.identity.set_token_max_lifetime(self.principal, duration)
        return self._svc.identity.token_max_lifetime()

    # --- roles ---------------------------------------------------------------------------------

    def grant_role(self, principal: str, role: str) -> None:
        """Grant `role` to `principal` (owners only; never to oneself)."""
        self.last_seq = self._svc.identity.grant_role(self.principal, principal, role)

    def revoke_role(self, principal: str, role: str) -> None:
        """Revoke `role` from `principal` (owners only; never one's own)."""
        self.last_seq = self._svc.identity.revoke_role(self.principal, principal, role)

    # --- policy rules --------------------------------------------------------------------------

    def add_rule(self, subject: str, dataset: str, action: str, purpose: str, effect: str = "allow") -> Rule:
        """Allow (or deny) `subject` (a principal or `role:NAME`) `action` on `dataset` (or a pattern)
        for `purpose` (owners only; no one allows itself or a role it holds)."""
        rule, self.last_seq = self._svc.policy.add_recorded(self.principal, subject, dataset, action, purpose, effect)
        return rule

    def remove_rule(self, rule_id: int) -> None:
        """Remove a rule by id (owners only)."""
        self.last_seq = self._svc.policy.remove(self.principal, rule_id)

    def rules(self) -> list[Rule]:
        """The workspace's rules, in order of creation (the auditor's view)."""
        self._check("audit")
        return self._svc.policy.rules()

    @staticmethod
    def builtin_rules() -> list[RuleTuple]:
        """The rules every workspace has: (subject, dataset, action, purpose, effect)."""
        return list(BUILTIN)

    # --- data-sharing agreements ---------------------------------------------------------------

    def create_agreement(
        self,
        recipient: str,
        recipient_key: bytes,
        dataset: str,
        fields: list[str],
        *,
        expires: str = "P30D",
        max_uses: int = 1,
        pseudonymize_subjects: bool = True,
        recipient_jurisdiction: str | None = None,
        transfer_mechanism: str | None = None,
    ) -> Agreement:
        """An agreement to share `fields` of `dataset` with `recipient` (its X25519 public key) for this
        session's purpose; direct identifiers are never shared. Needs `share` on the dataset for it."""
        agreement, self.last_seq = self._svc.agreements.create_recorded(
            self.principal,
            recipient,
            recipient_key,
            dataset,
            self.purpose,
            fields,
            expires=expires,
            max_uses=max_uses,
            pseudonymize_subjects=pseudonymize_subjects,
            recipient_jurisdiction=recipient_jurisdiction,
            transfer_mechanism=transfer_mechanism,
        )
        return agreement

    def agreements(self) -> list[Agreement]:
        """Every agreement, in order of creation (the auditor's view)."""
        self._check("audit")
        return self._svc.agreements.list()

    def revoke_agreement(self, agreement: str) -> None:
        """Revoke an agreement (for those who may share its dataset for its purpose)."""
        self.last_seq = self._svc.agreements.revoke(self.principal, agreement)

    def export_share(self, agreement: str, out: Path, forbidden: Iterable[Path] = ()) -> SharedPackage:
        """Seal one use of an agreement to its recipient as a new file `out` (never one of `forbidden`).
        Needs `share` on the agreement's dataset for the agreement's purpose, which the data is read for."""
        recipient = self._svc.agreements.get(agreement).recipient  # an unknown agreement: NotFound first
        result = self._svc.agreements.export(self.principal, agreement, out, forbidden=forbidden)
        self.last_seq = result["ledger_seq"]
        return SharedPackage(
            file=result["file"],
            recipient=recipient,
            rows=result["rows"],
            use=result["use"],
            max_uses=result["max_uses"],
            ledger_seq=result["ledger_seq"],
        )
