"""Session operations: Workspace administration: status, keys, backups, witnesses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from complai.app.core import SessionCore
from complai.app.services import status


class AdminOps(SessionCore):
    def status(self) -> Any:
        """The workspace's status (ledger head, schema revision, counts of datasets and checkpoints):
        for principals who oversee it (audit or admin)."""
        self._check_oversight()
        return status(self._svc)

    def key_status(self) -> dict[str, object]:
        """Key versions and rotation state: for principals who oversee the workspace (audit or admin)."""
        self._check_oversight()
        return self._svc.keys.status()

    def rotate_keys(self, **kw: Any) -> dict[str, object]:
        self._check("admin")
        return self._svc.keys.rotate(self.principal, **kw)

    def backup(self, path: Path, key: bytes, **kw: Any) -> dict[str, Any]:
        from complai.vault.backup import create_backup

        self._check("admin")
        return create_backup(self._svc, path, key, self.principal, **kw)

    def audit_access(self) -> None:
        """Ledger and audit views: the auditor's action (no personal data involved)."""
        self._check("audit")
