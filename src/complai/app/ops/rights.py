"""Session operations: Subject rights, consent and retention."""

from __future__ import annotations

from typing import Any

from complai.app.core import SessionCore


class RightsOps(SessionCore):
    def export_subject(self, subject: str) -> dict[str, Any]:
        self._check("export")
        return self._svc.vault.export(subject, self.principal)

    def erase_subject(self, subject: str) -> int:
        self._check("erase")
        return self._svc.vault.erase(subject, self.principal)

    def rectify(self, subject: str, dataset: str, field: str, value: Any) -> int:
        self._check("ingest", dataset)
        return self._svc.vault.rectify(subject, dataset, field, value, self.principal)

    def restrict(self, subject: str, reason: str = "", lift: bool = False) -> int:
        self._check("erase")
        return self._svc.vault.restrict(subject, self.principal, reason, lift)

    def object(self, subject: str, purpose: str, kind: str = "objection") -> int:
        self._check("erase")
        return self._svc.vault.object(subject, purpose, self.principal, kind)

    def grant_consent(
        self,
        subject: str,
        purpose: str,
        basis: str = "gdpr.consent",
        notice_version: str = "unspecified",
        source: str = "cli",
    ) -> int:
        self._check("admin")
        return self._svc.vault.grant_consent(subject, purpose, self.principal, basis, notice_version, source)

    def withdraw_consent(self, subject: str, purpose: str) -> int:
        self._check("admin")
        return self._svc.vault.withdraw_consent(subject, purpose, self.principal)

    def retention_sweep(self) -> dict[str, Any]:
        self._check("admin")
        return self._svc.vault.retention_sweep(self.principal)
