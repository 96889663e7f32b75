"""Session operations: subject requests, incidents, DPIAs, records of processing and compliance audits.

Each operation that records an event returns its result with the ledger entry's sequence number
(`Recorded`); `last_seq` is set as well."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from complai.access.identity import OWNER
from complai.app.core import SessionCore
from complai.app.ops.external import scan_external
from complai.app.services import Services
from complai.compliance import dpia, engine, report, ropa
from complai.compliance.context import AuditContext, ComplianceServices
from complai.compliance.recorded import Recorded
from complai.compliance.requests import SubjectRights


class _FulfillingSession(SubjectRights, Protocol):
    """A session that holds the subject-rights operations (app/ops/rights.py) besides these."""

    _svc: Services
    last_seq: int | None

    def _check(self, action: str, dataset: str = ...) -> None: ...


def compliance_services(svc: Services) -> ComplianceServices:
    """The services compliance reads and records through (never the whole workspace)."""
    return ComplianceServices(
        settings=svc.settings,
        store=svc.store,
        clock=svc.clock,
        taxonomy=svc.taxonomy,
        ledger=svc.ledger,
        catalog=svc.catalog,
        keyring=svc.keyring,
        models=svc.models,
        requests=svc.requests,
        incidents=svc.incidents,
    )


class ComplianceOps(SessionCore):
    def _compliance(self) -> ComplianceServices:
        return compliance_services(self._svc)

    def _recorded(self, result: Recorded[dict[str, Any]]) -> Recorded[dict[str, Any]]:
        self.last_seq = result.seq
        return result

    @property
    def now(self) -> datetime:
        """The workspace clock's time: what request and incident deadlines are measured against."""
        return self._svc.clock.now()

    # --- subject requests --------------------------------------------------------------------------

    def request_open(self, kind: str, subject: str, jurisdiction: str | None = None) -> Recorded[dict[str, Any]]:
        self._check("admin")
        return self._recorded(self._svc.requests.open(kind, subject, self.principal, jurisdiction))

    def request_verify(self, rid: str, method: str) -> Recorded[dict[str, Any]]:
        """Record that the requester's identity was verified, and how."""
        self._check("admin")
        return self._recorded(self._svc.requests.verify_identity(rid, method, self.principal))

    def request_acknowledge(self, rid: str) -> Recorded[dict[str, Any]]:
        self._check("admin")
        return self._recorded(self._svc.requests.acknowledge(rid, self.principal))

    def request_extend(self, rid: str, reason: str) -> Recorded[dict[str, Any]]:
        """Extend the deadline once, where the jurisdiction allows it (the reason goes to the subject)."""
        self._check("admin")
        return self._recorded(self._svc.requests.extend(rid, self.principal, reason))

    def request_reject(self, rid: str, reason: str) -> Recorded[dict[str, Any]]:
        self._check("admin")
        return self._recorded(self._svc.requests.reject(rid, self.principal, reason))

    def request_fulfil(
        self: _FulfillingSession,
        rid: str,
        subject: str,
        *,
        purpose: str | None = None,
        changes: Sequence[tuple[str, str, Any]] = (),
    ) -> tuple[Recorded[dict[str, Any]], dict[str, Any] | None]:
        """Carry the request out through this session's own rights operations (each authorised and
        recorded); returns the request and, for access or portability, the export. Authorised first as
        the register's other changes are (`admin`): a principal who may not act on the register learns
        nothing of the request and records no attempt on it."""
        self._check("admin")
        result, output = self._svc.requests.fulfil(self, rid, subject, purpose=purpose, changes=changes)
        self.last_seq = result.seq
        return result, output

    def request(self, rid: str) -> dict[str, Any]:
        self._check("audit")
        return self._svc.requests.get(rid)

    def requests(self, overdue_only: bool = False) -> list[dict[str, Any]]:
        self._check("audit")
        return self._svc.requests.list(overdue_only)

    # --- incidents ---------------------------------------------------------------------------------

    def incident_open(
        self, description: str, kind: str = "manual", evidence: dict[str, Any] | None = None
    ) -> Recorded[dict[str, Any]]:
        self._check("admin")
        return self._recorded(self._svc.incidents.open(kind, description, evidence or {}, self.principal))

    def incident_notify(self, iid: str, authority: str) -> Recorded[dict[str, Any]]:
        """Record that the supervisory authority was notified."""
        self._check("admin")
        return self._recorded(self._svc.incidents.notify(iid, authority, self.principal))

    def incident_close(self, iid: str) -> Recorded[dict[str, Any]]:
        self._check("admin")
        return self._recorded(self._svc.incidents.close(iid, self.principal))

    def incidents(self) -> list[dict[str, Any]]:
        self._check("audit")
        return self._svc.incidents.list()

    # --- DPIAs: authorised before the dataset is looked up, so a refusal says nothing of whether it exists

    def dpia_generate(self, dataset: str) -> Recorded[dict[str, Any]]:
        self._check("admin", dataset)
        self._svc.catalog.get(dataset)
        return self._recorded(dpia.generate(self._compliance(), dataset, self.principal, engine.assess))

    def dpia_sign(self, dataset: str, by: str, version: int | None = None) -> Recorded[dict[str, Any]]:
        self._check("admin", dataset)
        self._svc.catalog.get(dataset)
        return self._recorded(dpia.sign(self._compliance(), dataset, by, self.principal, version))

    def dpia_document(self, dataset: str, version: int | None = None) -> dict[str, Any]:
        """A dataset's DPIA document (latest, or `version`) for review before it is signed off."""
        self._check("audit", dataset)
        self._svc.catalog.get(dataset)
        return dpia.document(self._compliance(), dataset, version)

    def dpia_status(self, dataset: str) -> dict[str, Any]:
        self._check("audit", dataset)
        self._svc.catalog.get(dataset)
        return dpia.status(self._compliance(), dataset)

    # --- records of processing and audits ----------------------------------------------------------

    def records_of_processing(self) -> list[dict[str, Any]]:
        """GDPR Art. 30 records, from the datasets' declarations and the sharing agreements."""
        self._check("audit")
        return ropa.records_of_processing(self._svc.store, self._svc.taxonomy)

    def compliance_audit(
        self,
        out: Path,
        formats: tuple[str, ...] = ("json", "md", "html"),
        epsilon_cap: float = 10.0,
        since_last: bool = False,
        force: bool = False,
        verify_external: bool = True,
    ) -> report.AuditResult:
        """Run every control against the workspace and its ledger; write the report; record its digest
        (`ledger_seq` in the result; a notebook shows the result's summary). `since_last`: ledger evidence
        only from where the last recorded audit stopped (its root checked to be a prefix of today's),
        state controls in full. `force` overwrites earlier report files. With `verify_external` (the
        default), open erasure requests to the owner systems of external datasets are first checked
        against their sources through Spark (its own event), so ERASE-2 judges a fresh scan."""
        self._check("audit")
        svc = self._compliance()
        report.check_out(svc, Path(out), formats, force, epsilon_cap=epsilon_cap)
        if verify_external:
            scan_external(self._svc, self.principal)
        since, base = 0, None
        if since_last:
            last = report.last_audit(svc)
            if last is not None:
                since, base = last
        ctx = AuditContext(svc, svc.clock.now(), epsilon_cap=epsilon_cap, since=since, base_root=base)
        doc = report.build(ctx, self.principal, OWNER)
        written = report.write(svc, doc, self.principal, self.purpose, Path(out), formats, force=force)
        self.last_seq = written["ledger_seq"]
        return report.AuditResult({**written, "report": doc})

    def verify_report(self, path: Path) -> dict[str, Any]:
        """A report file against the ledger: unchanged (canonical), recorded, and the ledger sound."""
        self._check("audit")
        return report.verify(self._compliance(), path)

    def consent_coverage(self, dataset: str | None = None) -> list[dict[str, Any]]:
        """Per declared purpose, the subjects with records (in `dataset`, or in every dataset declaring the
        purpose) and how many hold live consent for it now, as an audit reports it: exact counts, for
        those who oversee the workspace (audit or admin); anyone else is refused (recorded) before the
        dataset is looked up."""
        self._check_oversight()
        if dataset is not None:
            self._svc.catalog.get(dataset)
        return report.consent_coverage(self._compliance(), self._svc.clock.now(), dataset)
