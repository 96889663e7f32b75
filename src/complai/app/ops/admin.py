"""Session operations: Workspace administration: status, keys, backups."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from complai.app.backup import BackupResult, create_backup
from complai.app.core import ALL, SessionCore
from complai.app.services import Status, status
from complai.errors import InvalidInput
from complai.taxonomy import Term
from complai.taxonomy.loader import KINDS
from complai.vault.backup import load_backup_key, new_backup_key

BACKUP_KEY = "backup.key"


class AdminOps(SessionCore):
    def authorise(self, action: str, dataset: str = ALL) -> None:
        """Refuse now (recorded) what an operation of this session would be refused: the service
        authorises an operation before queueing it as a job, so a refusal is an answer, not a failed job
        (the job's own session checks again when it runs)."""
        self._check(action, dataset)

    def status(self) -> Status:
        """The workspace's status (ledger head, schema revision, counts of datasets and checkpoints):
        for principals who oversee it (audit or admin)."""
        self._check_oversight()
        return status(self._svc)

    def vocabulary(self, kind: str) -> list[Term]:
        """The workspace's taxonomy terms of one kind (data_categories, data_uses, data_subjects,
        legal_bases, jurisdictions), in their declared order. Public vocabulary: it reads no personal
        data and changes nothing, so it needs no authorisation and records nothing."""
        if kind not in KINDS:
            raise InvalidInput(f"unknown vocabulary {kind!r} (one of {', '.join(KINDS)})")
        taxonomy = self._svc.taxonomy
        return [taxonomy.get(kind, key) for key in taxonomy.keys(kind)]

    def key_status(self) -> dict[str, object]:
        """Key versions and rotation state: for principals who oversee the workspace (audit or admin)."""
        self._check_oversight()
        return self._svc.keys.status()

    def rotate_keys(
        self, batch_size: int = 2000, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, object]:
        """A new key-encryption key; every data key re-wrapped under it, `batch_size` per transaction
        (resumes an interrupted rotation): an admin action, recorded."""
        self._check("admin")
        return self._svc.keys.rotate(self.principal, batch_size, progress)

    def backup(self, path: Path, key: bytes, progress: Callable[[str], None] | None = None) -> BackupResult:
        """An encrypted backup of the whole workspace under `key`, recorded: an admin action."""
        self._check("admin")
        return create_backup(self._svc, path, key, self.principal, progress)

    def backup_with_key_file(
        self, path: Path, key_file: Path | None = None, progress: Callable[[str], None] | None = None
    ) -> tuple[BackupResult, Path | None]:
        """A backup under the key in `key_file`, by default the workspace's keys/backup.key, created if
        missing; returns the result and the key file if it was created. Authorised before anything is
        written: a refused or failed backup leaves no new key file behind."""
        self._check("admin")
        key_path = key_file or self._svc.settings.keys_dir / BACKUP_KEY
        created = not key_path.exists()
        if created:
            new_backup_key(key_path)
        try:
            result = self.backup(path, load_backup_key(key_path), progress)
        except BaseException:
            if created:
                key_path.unlink(missing_ok=True)
            raise
        return result, key_path if created else None
