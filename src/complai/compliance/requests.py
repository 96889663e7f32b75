"""The data subject request register: requests with their legal deadlines, identity verification,
fulfilment through the vault's primitives step by step, and overdue detection.

Deadlines by the regime of the jurisdiction (taxonomy jurisdictions): GDPR one calendar month from
receipt, extendable once by two further months with notice (Art. 12(3)); CCPA/CPRA 45 days, extendable
once by 45 with notice, and an acknowledgement within 10 days (Cal. Code Regs. tit. 11 section 7021);
PIPL "in a timely manner": the taxonomy's 15 days, or COMPLAI_PIPL_REQUEST_DAYS (config.py). When the subject's data
sits under several jurisdictions the earliest deadline applies.

Fulfilment runs one step per store or action and records each step's status, so that a failing step
(a key that cannot be loaded, say) leaves the others done and the request "partial", to be retried
for the failed steps only. Identity must be verified first (except a CCPA opt-out, which needs none).
The steps run through the caller's session (SubjectRights), so the policy applies and each primitive
records its own event.
"""

from __future__ import annotations

import builtins
import json
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from dateutil.relativedelta import relativedelta
from sqlalchemy import Row, select, update

from complai.clock import Clock, as_utc, parse_utc, utc_iso
from complai.compliance.recorded import Recorded
from complai.config import pipl_request_days
from complai.errors import ComplaiError, InvalidInput, NotFound, PolicyDenied
from complai.events import RequestOpened, RequestUpdated
from complai.ledger.log import Ledger
from complai.store import Store
from complai.store.tables import records, subject_requests, subjects
from complai.taxonomy import Taxonomy
from complai.vault.catalog import Catalog
from complai.vault.service import Vault

KINDS = ("access", "portability", "erasure", "rectification", "restriction", "objection", "opt-out")
VERIFICATION = ("account", "document", "email", "in-person", "authorised-agent")
OPEN_STATES = ("open", "partial")


class SubjectRights(Protocol):
    """The session operations a request's fulfilment runs, as the principal fulfilling it (each one
    authorises and records itself)."""

    @property
    def principal(self) -> str: ...

    def export_subject(self, subject: str) -> dict[str, Any]: ...

    def erase_subject(self, subject: str) -> builtins.object: ...

    def restrict(self, subject: str, reason: str) -> builtins.object: ...

    def rectify(self, subject: str, dataset: str, field: str, value: Any) -> builtins.object: ...

    def object(self, subject: str, purpose: str, kind: str = ...) -> builtins.object: ...


Step = Callable[[SubjectRights, str], builtins.object]


def deadlines(
    taxonomy: Taxonomy, jurisdiction: str, opened: datetime
) -> tuple[datetime, datetime | None, relativedelta | None]:
    """(due, acknowledgement due or None, extension as a relativedelta) for a request opened then."""
    term = taxonomy.jurisdiction(jurisdiction)
    regime = term.attrs.get("regime")
    if regime == "gdpr":
        return opened + relativedelta(months=1), None, relativedelta(months=2)
    if regime == "ccpa":
        ext = relativedelta(days=int(term.attrs.get("request_extension_days", 45)))
        ack = opened + timedelta(days=int(term.attrs.get("acknowledge_days", 10)))
        return opened + timedelta(days=int(term.attrs.get("request_deadline_days", 45))), ack, ext
    if regime == "pipl":
        days = pipl_request_days() or int(term.attrs.get("request_deadline_days", 15))
        return opened + timedelta(days=days), None, None
    raise InvalidInput(f"jurisdiction {jurisdiction} has no subject-request regime")


class Requests:
    def __init__(
        self, store: Store, ledger: Ledger, vault: Vault, catalog: Catalog, taxonomy: Taxonomy, clock: Clock
    ) -> None:
        self.store, self.ledger, self.vault, self.catalog, self.taxonomy, self.clock = (
            store,
            ledger,
            vault,
            catalog,
            taxonomy,
            clock,
        )

    # --- register ----------------------------------------------------------------------------------

    def open(self, kind: str, subject: str, actor: str, jurisdiction: str | None = None) -> Recorded[dict[str, Any]]:
        if kind not in KINDS:
            raise InvalidInput(f"unknown request type {kind!r} (types: {', '.join(KINDS)})")
        if not subject or not subject.strip():
            raise InvalidInput("subject id is empty")
        pseudonym = self.vault.pseudonyms.subject(subject.strip())
        now = self.clock.now()
        candidates = [jurisdiction] if jurisdiction else self._jurisdictions(pseudonym)
        if not candidates:
            raise InvalidInput("the subject holds no data here; say which jurisdiction applies (--jurisdiction)")
        best = None
        for j in candidates:
            due, ack, _ = deadlines(self.taxonomy, j, now)
            if best is None or due < best[1]:
                best = (j, due, ack)
        assert best is not None
        j, due, ack = best
        rid = "req-" + secrets.token_hex(6)
        with self.store.write() as conn:
            conn.execute(
                subject_requests.insert().values(
                    id=rid,
                    kind=kind,
                    subject=pseudonym,
                    jurisdiction=j,
                    opened_at=now,
                    due_at=due,
                    ack_due_at=ack,
                    status="open",
                    steps_json="[]",
                    opened_by=actor,
                )
            )
            seq = self.ledger.emit(
                conn,
                RequestOpened,
                time=now,
                actor=actor,
                purpose="subject_request",
                request=rid,
                request_kind=kind,
                subject=pseudonym,
                jurisdiction=j,
                due_at=due,
                ack_due_at=ack,
            )
        return Recorded(self.get(rid), seq)

    def _jurisdictions(self, pseudonym: str) -> list[str]:
        with self.store.read() as conn:
            names = conn.execute(
                select(records.c.dataset)
                .select_from(records.join(subjects, subjects.c.id == records.c.subject_id))
                .where(subjects.c.pseudonym == pseudonym)
                .distinct()
            ).scalars()
            return sorted({self.catalog.get(n).schema.jurisdiction for n in names})

    def get(self, rid: str) -> dict[str, Any]:
        with self.store.read() as conn:
            row = conn.execute(select(subject_requests).where(subject_requests.c.id == rid)).first()
        if row is None:
            raise NotFound(f"no request {rid!r}")
        return self._view(row)

    def list(self, overdue_only: bool = False) -> builtins.list[dict[str, Any]]:
        with self.store.read() as conn:
            rows = conn.execute(select(subject_requests).order_by(subject_requests.c.opened_at)).all()
        out = [self._view(r) for r in rows]
        return [r for r in out if r["overdue"]] if overdue_only else out

    def _view(self, r: Row[Any]) -> dict[str, Any]:
        now = self.clock.now()
        due = as_utc(r.due_at)
        closed = as_utc(r.closed_at) if r.closed_at else None
        ack_due = as_utc(r.ack_due_at) if r.ack_due_at else None
        overdue = (closed is None and due < now) or (closed is not None and closed > due)
        ack_late = ack_due is not None and (
            (r.acknowledged_at is None and ack_due < now)
            or (r.acknowledged_at is not None and as_utc(r.acknowledged_at) > ack_due)
        )
        return {
            "id": r.id,
            "type": r.kind,
            "subject": r.subject,
            "jurisdiction": r.jurisdiction,
            "status": r.status,
            "opened_at": utc_iso(as_utc(r.opened_at)),
            "due_at": utc_iso(due),
            "extended": r.extended_at is not None,
            "acknowledgement_due": utc_iso(ack_due) if ack_due else None,
            "acknowledged_at": utc_iso(as_utc(r.acknowledged_at)) if r.acknowledged_at else None,
            "verified": r.verified_at is not None,
            "verification": r.verification,
            "steps": json.loads(r.steps_json),
            "closed_at": utc_iso(closed) if closed else None,
            "overdue": bool(overdue),
            "acknowledgement_late": bool(ack_late),
            "days_left": None if closed else round((due - now).total_seconds() / 86400, 1),
        }

    # --- changes -----------------------------------------------------------------------------------

    def _change(
        self,
        rid: str,
        actor: str,
        change: str,
        values: dict[str, Any],
        steps: builtins.list[dict[str, Any]] | None = None,
    ) -> Recorded[dict[str, Any]]:
        now = self.clock.now()
        with self.store.write() as conn:
            row = conn.execute(select(subject_requests).where(subject_requests.c.id == rid).with_for_update()).first()
            if row is None:
                raise NotFound(f"no request {rid!r}")
            if row.status not in OPEN_STATES:
                raise InvalidInput(f"request {rid} is {row.status}")
            vals = dict(values)
            if steps is not None:
                vals["steps_json"] = json.dumps(steps)
            conn.execute(update(subject_requests).where(subject_requests.c.id == rid).values(**vals))
            new = conn.execute(select(subject_requests).where(subject_requests.c.id == rid)).one()
            seq = self.ledger.emit(
                conn,
                RequestUpdated,
                time=now,
                actor=actor,
                purpose="subject_request",
                request=rid,
                change=change,
                status=new.status,
                due_at=as_utc(new.due_at),
                steps=json.loads(new.steps_json),
            )
        return Recorded(self.get(rid), seq)

    def verify_identity(self, rid: str, method: str, actor: str) -> Recorded[dict[str, Any]]:
        if method not in VERIFICATION:
            raise InvalidInput(f"unknown verification method {method!r} (methods: {', '.join(VERIFICATION)})")
        return self._change(
            rid, actor, f"identity verified ({method})", {"verified_at": self.clock.now(), "verification": method}
        )

    def acknowledge(self, rid: str, actor: str) -> Recorded[dict[str, Any]]:
        return self._change(rid, actor, "acknowledged", {"acknowledged_at": self.clock.now()})

    def extend(self, rid: str, actor: str, reason: str) -> Recorded[dict[str, Any]]:
        """Extend once, with notice to the subject (the reason is recorded by the register, not sent)."""
        if not reason.strip():
            raise InvalidInput("an extension needs a reason (it is given to the subject)")
        current = self.get(rid)
        if current["extended"]:
            raise InvalidInput(f"request {rid} was already extended")
        opened = parse_utc(current["opened_at"])
        due, _, ext = deadlines(self.taxonomy, current["jurisdiction"], opened)
        if ext is None:
            raise InvalidInput(f"{current['jurisdiction']} allows no extension")
        return self._change(rid, actor, "extended with notice", {"due_at": due + ext, "extended_at": self.clock.now()})

    def reject(self, rid: str, actor: str, reason: str) -> Recorded[dict[str, Any]]:
        if not reason.strip():
            raise InvalidInput("a rejection needs a reason")
        return self._change(rid, actor, "rejected", {"status": "rejected", "closed_at": self.clock.now()})

    def fulfil(
        self,
        session: SubjectRights,
        rid: str,
        subject: str,
        *,
        purpose: str | None = None,
        changes: Sequence[tuple[str, str, Any]] = (),
        reason: str = "subject request",
    ) -> tuple[Recorded[dict[str, Any]], dict[str, Any] | None]:
        """Run the request's steps through the session (so the policy applies and each primitive records
        its own event); returns (request, output: the export document for access/portability).
        `purpose`: an objection's or opt-out's; `changes`: a rectification's (dataset, field, value);
        `reason`: a restriction's."""
        req = self.get(rid)
        if req["status"] not in OPEN_STATES:
            raise InvalidInput(f"request {rid} is {req['status']}")
        if self.vault.pseudonyms.subject(subject.strip()) != req["subject"]:
            raise PolicyDenied("the subject id does not match the request's subject")
        if not req["verified"] and not (req["type"] == "opt-out" and req["jurisdiction"] == "US-CA"):
            raise PolicyDenied(f"verify the requester's identity first (complai request verify {rid})")
        plan = self._plan(req["type"], purpose, changes, reason)
        done = {s["step"]: s for s in req["steps"] if s["status"] == "done"}
        steps: builtins.list[dict[str, Any]] = []
        output: dict[str, Any] | None = None
        for name, action in plan:
            if name in done:
                steps.append(done[name])
                continue
            try:
                result = action(session, subject)
                if name == "export" and isinstance(result, dict):
                    output = result
                steps.append({"step": name, "status": "done", "at": utc_iso(self.clock.now())})
            except ComplaiError as exc:
                steps.append({"step": name, "status": "failed", "error": exc.message, "at": utc_iso(self.clock.now())})
        ok = all(s["status"] == "done" for s in steps)
        values: dict[str, Any] = {"status": "fulfilled" if ok else "partial"}
        if ok:
            values["closed_at"] = self.clock.now()
        return self._change(rid, session.principal, "fulfilled" if ok else "partially fulfilled", values, steps), output

    @staticmethod
    def _plan(
        kind: str, purpose: str | None, changes: Sequence[tuple[str, str, Any]], reason: str
    ) -> builtins.list[tuple[str, Step]]:
        if kind in ("access", "portability"):
            return [("export", lambda s, subj: s.export_subject(subj))]
        if kind == "erasure":
            return [("erase", lambda s, subj: s.erase_subject(subj))]
        if kind == "restriction":
            return [("restrict", lambda s, subj: s.restrict(subj, reason))]
        if kind == "objection":
            objected = purpose or "*"
            return [("object", lambda s, subj: s.object(subj, objected))]
        if kind == "opt-out":
            opted = purpose or "marketing.advertising.third_party"
            return [("opt-out", lambda s, subj: s.object(subj, opted, kind="opt_out"))]
        if kind == "rectification":
            if not changes:
                raise InvalidInput("rectification needs the corrections (dataset, field, value)")
            return [(f"rectify {d}.{f}", _rectify(d, f, v)) for d, f, v in changes]
        raise InvalidInput(f"unknown request type {kind!r}")


def _rectify(dataset: str, field: str, value: Any) -> Step:
    return lambda s, subject: s.rectify(subject, dataset, field, value)
