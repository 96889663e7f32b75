"""Session operations: Subject requests, incidents, DPIAs and compliance audits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from complai.app.core import SessionCore
from complai.errors import InvalidInput


class ComplianceOps(SessionCore):
    def request_open(self, kind: str, subject: str, jurisdiction: str | None = None) -> dict[str, Any]:
        self._check("admin")
        return self._svc.requests.open(kind, subject, self.principal, jurisdiction)

    def request_update(self, rid: str, change: str, **kw: Any) -> dict[str, Any]:
        """verify (method=), acknowledge, extend (reason=), reject (reason=)."""
        self._check("admin")
        r = self._svc.requests
        if change == "verify":
            return r.verify_identity(rid, kw["method"], self.principal)
        if change == "acknowledge":
            return r.acknowledge(rid, self.principal)
        if change == "extend":
            return r.extend(rid, self.principal, kw.get("reason", ""))
        if change == "reject":
            return r.reject(rid, self.principal, kw.get("reason", ""))
        raise InvalidInput(f"unknown change {change!r}")

    def request_fulfil(self, rid: str, subject: str, **params: Any) -> tuple[dict[str, Any], Any]:
        return self._svc.requests.fulfil(self, rid, subject, **params)

    def incident(self, change: str, iid: str = "", **kw: Any) -> dict[str, Any]:
        """open (kind=, description=), notify (authority=), close."""
        self._check("admin")
        inc = self._svc.incidents
        if change == "open":
            return inc.open(kw.get("kind", "manual"), kw.get("description", ""), kw.get("evidence", {}), self.principal)
        if change == "notify":
            return inc.notify(iid, kw.get("authority", ""), self.principal)
        if change == "close":
            return inc.close(iid, self.principal)
        raise InvalidInput(f"unknown change {change!r}")

    def dpia(self, change: str, dataset: str, **kw: Any) -> dict[str, Any]:
        """generate, sign (by=, version=), status."""
        from complai.compliance import dpia

        self._check("audit" if change == "status" else "admin", dataset)
        self._svc.catalog.get(dataset)  # after the policy: a refusal says nothing about whether it exists
        if change == "status":
            return dpia.status(self._svc, dataset)
        if change == "generate":
            return dpia.generate(self._svc, dataset, self.principal)
        if change == "sign":
            return dpia.sign(self._svc, dataset, kw.get("by", ""), self.principal, kw.get("version"))
        raise InvalidInput(f"unknown change {change!r}")

    def incidents(self) -> list[dict[str, Any]]:
        self._check("audit")
        return self._svc.incidents.list()

    def request(self, rid: str) -> dict[str, Any]:
        self._check("audit")
        return self._svc.requests.get(rid)

    def requests(self, overdue_only: bool = False) -> list[dict[str, Any]]:
        self._check("audit")
        return self._svc.requests.list(overdue_only)

    def compliance_audit(
        self,
        out: Path,
        formats: tuple[str, ...] = ("json", "md", "html"),
        epsilon_cap: float = 10.0,
        since_last: bool = False,
        force: bool = False,
    ) -> dict[str, Any]:
        """Run every control against the workspace and its ledger; write the report; record its digest.
        `since_last`: ledger evidence only from where the last recorded audit stopped (its root checked
        to be a prefix of today's), state controls in full. `force` overwrites earlier report files."""
        from complai.compliance import engine, report

        self._check("audit")
        report.check_out(self._svc, Path(out), formats, force, epsilon_cap=epsilon_cap)
        since, base = 0, None
        if since_last:
            last = report.last_audit(self._svc)
            if last is not None:
                since, base = last
        ctx = engine.AuditContext(
            self._svc, self._svc.clock.now(), epsilon_cap=epsilon_cap, since=since, base_root=base
        )
        from complai.access.identity import OWNER

        doc = report.build(ctx, self.principal, OWNER)
        written = report.write(self._svc, doc, self.principal, self.purpose, Path(out), formats, force=force)
        self.last_seq = written["ledger_seq"]
        return {**written, "report": doc}
