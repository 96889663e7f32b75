"""The incident register (GDPR Art. 33, PIPL Art. 57): suspected breaches with a 72-hour clock to notify
the supervisory authority. Audits open incidents themselves when the ledger fails verification or a
principal's read is anomalously large; anyone with admin rights can open one by hand."""

from __future__ import annotations

import builtins
import json
import secrets
import statistics
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, select, update

from complai.clock import Clock, as_utc, utc_iso
from complai.compliance.recorded import Recorded
from complai.errors import InvalidInput, NotFound
from complai.events import IncidentOpened, IncidentUpdated
from complai.ledger.log import Ledger
from complai.store import Store
from complai.store.tables import incidents

NOTIFY_WITHIN = timedelta(hours=72)
KINDS = ("ledger-integrity", "bulk-read", "manual")


class Incidents:
    def __init__(self, store: Store, ledger: Ledger, clock: Clock) -> None:
        self.store, self.ledger, self.clock = store, ledger, clock

    def open(self, kind: str, description: str, evidence: dict[str, Any], actor: str) -> Recorded[dict[str, Any]]:
        if kind not in KINDS:
            raise InvalidInput(f"unknown incident kind {kind!r} (kinds: {', '.join(KINDS)})")
        if not description.strip():
            raise InvalidInput("an incident needs a description")
        now = self.clock.now()
        iid = "inc-" + secrets.token_hex(5)
        with self.store.write() as conn:
            conn.execute(
                incidents.insert().values(
                    id=iid,
                    kind=kind,
                    description=description[:2000],
                    evidence_json=json.dumps(evidence, sort_keys=True),
                    opened_at=now,
                    notify_by=now + NOTIFY_WITHIN,
                    opened_by=actor,
                )
            )
            seq = self.ledger.emit(
                conn,
                IncidentOpened,
                time=now,
                actor=actor,
                purpose="security",
                incident=iid,
                incident_kind=kind,
                notify_by=now + NOTIFY_WITHIN,
                evidence=evidence,
            )
        return Recorded(self.get(iid), seq)

    def _update(self, iid: str, actor: str, change: str, values: dict[str, Any]) -> Recorded[dict[str, Any]]:
        with self.store.write() as conn:
            row = conn.execute(select(incidents).where(incidents.c.id == iid)).first()
            if row is None:
                raise NotFound(f"no incident {iid!r}")
            if row.closed_at is not None:
                raise InvalidInput(f"incident {iid} is closed")
            conn.execute(update(incidents).where(incidents.c.id == iid).values(**values))
            seq = self.ledger.emit(conn, IncidentUpdated, actor=actor, purpose="security", incident=iid, change=change)
        return Recorded(self.get(iid), seq)

    def notify(self, iid: str, authority: str, actor: str) -> Recorded[dict[str, Any]]:
        if not authority.strip():
            raise InvalidInput("name the authority notified")
        return self._update(
            iid, actor, f"authority notified: {authority}", {"notified_at": self.clock.now(), "authority": authority}
        )

    def close(self, iid: str, actor: str) -> Recorded[dict[str, Any]]:
        return self._update(iid, actor, "closed", {"closed_at": self.clock.now()})

    def get(self, iid: str) -> dict[str, Any]:
        with self.store.read() as conn:
            row = conn.execute(select(incidents).where(incidents.c.id == iid)).first()
        if row is None:
            raise NotFound(f"no incident {iid!r}")
        return self._view(row)

    def list(self) -> builtins.list[dict[str, Any]]:
        with self.store.read() as conn:
            rows = conn.execute(select(incidents).order_by(incidents.c.opened_at)).all()
        return [self._view(r) for r in rows]

    def _view(self, r: Row[Any]) -> dict[str, Any]:
        now = self.clock.now()
        due = as_utc(r.notify_by)
        notified = as_utc(r.notified_at) if r.notified_at else None
        return {
            "id": r.id,
            "kind": r.kind,
            "description": r.description,
            "evidence": json.loads(r.evidence_json),
            "opened_at": utc_iso(as_utc(r.opened_at)),
            "notify_by": utc_iso(due),
            "notified_at": utc_iso(notified) if notified else None,
            "authority": r.authority,
            "closed_at": utc_iso(as_utc(r.closed_at)) if r.closed_at else None,
            "late": (notified is None and due < now) or (notified is not None and notified > due),
        }

    # --- detection (run by audits) -----------------------------------------------------------------

    def detect(
        self, entries: builtins.list[dict[str, Any]], ledger_problem: str | None, owner: str, actor: str
    ) -> builtins.list[dict[str, Any]]:
        """Open incidents for what the evidence shows and no incident covers yet: a ledger that fails
        verification, and reads at least 5 times a principal's usual size (median of its earlier reads,
        at least three of them, and at least 1,000 rows)."""
        known = {json.dumps(i["evidence"], sort_keys=True) for i in self.list()}
        opened: builtins.list[dict[str, Any]] = []
        if ledger_problem:
            problem = {"problem": ledger_problem}
            if json.dumps(problem, sort_keys=True) not in known:
                found = f"the ledger failed verification: {ledger_problem}"
                opened.append(self.open("ledger-integrity", found, problem, actor).value)
        history: dict[str, builtins.list[int]] = {}
        for e in entries:
            if e.get("type") != "vault.read":
                continue
            who, rows = str(e.get("actor")), int(e.get("rows", 0))
            past = history.setdefault(who, [])
            if who != owner and len(past) >= 3:
                usual = statistics.median(past)
                if rows >= max(1000, 5 * usual):
                    ev: dict[str, Any] = {"read_seq": e["_seq"], "actor": who, "rows": rows, "usual_rows": usual}
                    if json.dumps(ev, sort_keys=True) not in known:
                        opened.append(
                            self.open(
                                "bulk-read",
                                f"{who} read {rows} rows of {e.get('dataset')} for {e.get('purpose')}, "
                                f"{rows / max(usual, 1):.0f} times its usual {usual:g}",
                                ev,
                                actor,
                            ).value
                        )
            past.append(rows)
        return opened
