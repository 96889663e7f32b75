"""What an audit works on: the services it reads (typed, never the workspace), the time it runs at, and
the ledger evidence it parses once and shares between controls. Also the vocabulary of a control's
outcome (Finding and its statuses). The engine, reconciliation, reports and DPIAs all import this."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from complai.clock import Clock, parse_utc
from complai.compliance.incidents import Incidents
from complai.compliance.requests import Requests
from complai.config import Settings
from complai.crypto.keyring import Keyring
from complai.dp.models import Models
from complai.ledger.log import Head, Ledger
from complai.ledger.verify import RangeReport, VerifyReport, verify_ledger, verify_range
from complai.store import Store
from complai.store.tables import ledger_entries
from complai.taxonomy import Taxonomy
from complai.vault.catalog import Catalog

PASS, FAIL, NA, NOT_EVALUATED = "pass", "fail", "not applicable", "not evaluated"
# evidence that is missing but not contradicted (no checkpoint yet, a witness behind): reported with the
# command that supplies it; it does not fail the audit
WARN = "warning"
STATUSES = (FAIL, WARN, PASS, NA, NOT_EVALUATED)  # the order reports list them in


@dataclass(frozen=True)
class ComplianceServices:
    """Exactly the services audits, reports, records of processing and DPIAs read or record through;
    the session builds it from the workspace's services."""

    settings: Settings
    store: Store
    clock: Clock
    taxonomy: Taxonomy
    ledger: Ledger
    catalog: Catalog
    keyring: Keyring
    models: Models
    requests: Requests
    incidents: Incidents

    @property
    def path(self) -> Path:
        return self.settings.path


@dataclass
class Finding:
    status: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)


def event_time(e: dict[str, Any]) -> datetime:
    """A parsed ledger entry's time (RFC 3339 with Z)."""
    return parse_utc(str(e["time"]))


@dataclass
class AuditContext:
    """One audit's inputs and what it computes once and shares: the ledger's verification, its entries
    from `since` (parsed), the whole ledger's events by kind (reconciliation), the models' integrity."""

    svc: ComplianceServices
    now: datetime
    epsilon_cap: float = 10.0
    key_rotation_days: int = 365
    since: int = 0  # incremental: only ledger entries from this sequence number on
    base_root: bytes | None = None  # the root the previous audit saw at size `since`
    reconcile_evidence: dict[str, Any] = field(default_factory=dict)  # RECON-1's counts, by reconcilers
    _entries: list[dict[str, Any]] | None = None
    _verify: VerifyReport | RangeReport | None = None
    _events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _models: dict[str, list[str]] | None = None
    _head: Head | None = None

    def head(self) -> Head:
        """The ledger's head as this audit found it, read once: the scope, LEDGER-1's evidence and the
        metrics all state this size, before the audit appends its incidents and its own entry."""
        if self._head is None:
            self._head = self.svc.ledger.head()
        return self._head

    def verify(self) -> VerifyReport | RangeReport:
        """The ledger's verification, once per audit: of the entries since `since` when the previous
        audit's root is known, else of the whole ledger."""
        if self._verify is None:
            if self.since and self.base_root is not None:
                self._verify = verify_range(self.svc.ledger, self.since, self.base_root)
            else:
                self._verify = verify_ledger(self.svc.ledger)
        return self._verify

    def entries(self) -> list[dict[str, Any]]:
        """Every ledger entry's event from `since`, parsed once, with its sequence number as `_seq`."""
        if self._entries is None:
            out = []
            with self.svc.store.read() as conn:
                q = select(ledger_entries.c.seq, ledger_entries.c.data).where(ledger_entries.c.seq >= self.since)
                for seq, data in conn.execute(q.order_by(ledger_entries.c.seq)):
                    try:
                        e = json.loads(bytes(data))
                    except ValueError:
                        e = {"type": "unreadable"}
                    e["_seq"] = int(seq)
                    out.append(e)
            self._entries = out
        return self._entries

    def events(self, *kinds: str) -> list[dict[str, Any]]:
        """Every ledger event of these kinds (the whole ledger, also in incremental audits, in order),
        parsed, with its sequence number as `_seq`; read once per kind."""
        missing = [k for k in kinds if k not in self._events]
        if missing:
            for k in missing:
                self._events[k] = []
            with self.svc.store.read() as conn:
                for seq, kind, data in self.svc.ledger.scan(conn, missing):
                    try:
                        ev = json.loads(data)
                    except ValueError:
                        continue  # LEDGER-1 names an unreadable entry
                    ev["_seq"] = seq
                    self._events[kind].append(ev)
        return sorted((ev for k in kinds for ev in self._events[k]), key=lambda ev: int(ev["_seq"]))

    def models_checked(self) -> dict[str, list[str]]:
        """Every stored model's integrity problems (Models.check), computed once per audit: DP-1 and
        RECON-1 both report them, and checking hashes every model's weights."""
        if self._models is None:
            self._models = self.svc.models.check()
        return dict(self._models)
