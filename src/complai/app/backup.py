"""Backups and restores of a whole workspace: orchestration across the store, the ledger, the vault and
the key files. The archive itself (format, encryption, row encoding) is vault/backup.py's.

A backup is recorded (its checkpoint stored, `backup.created`) only once its file is complete. A restore
decrypts and checks everything before writing anything, rebuilds the database at the backup's schema
revision, upgrades it, verifies the ledger against the backup's checkpoint, and then re-applies every
erasure recorded after the backup in the newer ledgers it can consult (the live workspace or exports),
after checking each is a consistent extension of the backup's: a restore never resurrects an erasure.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from sqlalchemy import select

from complai.app.services import Services
from complai.clock import Clock
from complai.config import CONFIG_FILE, load_settings
from complai.crypto.digest import digest
from complai.errors import ComplaiError, IntegrityError, InvalidInput
from complai.events import BackupCreated, BackupRestored, DatasetDropped, SubjectErased
from complai.files import staged_output_dir
from complai.ledger import merkle
from complai.ledger.checkpoint import verify_note
from complai.ledger.verify import verify_export, verify_ledger
from complai.store import Store
from complai.store.tables import datasets
from complai.vault.backup import KeysMoved, build_workspace, file_digest, read_backup, write_archive

OpenServices = Callable[[Path, Clock | None], AbstractContextManager[Services]]
"""Opens the workspace at a path (with a clock, or the system's) for the length of a block: the
composition root hands this in (app/workspace.py), so orchestration never wires services itself."""


class BackupResult(TypedDict):
    file: str
    digest: str
    ledger_size: int
    tables: dict[str, int]
    seq: int


class RestoreResult(TypedDict):
    workspace: str
    tables: dict[str, int]
    backup_ledger_size: int
    erasures_reapplied: int
    drops_reapplied: int
    later_ledger_checked: bool
    later_ledgers: list[str]
    ledgers_consulted: list[str]
    expired_records_removed: int


def create_backup(
    svc: Services, path: Path, key: bytes, actor: str, progress: Callable[[str], None] | None = None
) -> BackupResult:
    """Write an encrypted backup of the workspace to `path` (refuses to overwrite) and record it.

    Nothing is recorded and no file is left unless the backup is complete: the checkpoint and the
    `backup.created` event are stored after the file is in place. A key rotation may retire a KEK
    version between the database snapshot and the read of the key file; the backup is then taken again."""
    path = Path(path)
    created = svc.clock.now()
    for attempt in range(3):
        try:
            archive = write_archive(
                path, key, settings=svc.settings, store=svc.store, ledger=svc.ledger, created=created, progress=progress
            )
            break
        except KeysMoved:
            if attempt == 2:
                raise IntegrityError(
                    "key rotations kept retiring key-encryption key versions during the backup; run it again "
                    "once the rotation has finished"
                ) from None
    manifest = archive.manifest
    if not archive.checkpoint_stored:
        svc.ledger.checkpoint(actor)
    backup_digest = file_digest(path)
    seq = svc.ledger.emit(
        None,
        BackupCreated,
        actor=actor,
        purpose="security",
        time=created,
        backup_digest=backup_digest,
        ledger_size=manifest["ledger_size"],
        tables=manifest["tables"],
    )
    return {
        "file": str(path),
        "digest": backup_digest,
        "ledger_size": manifest["ledger_size"],
        "tables": manifest["tables"],
        "seq": seq,
    }


@dataclass
class _Source:
    """A newer ledger consulted by a restore: its erasures after the backup, and whether it can vouch
    that it knows every erasure made since the backup (it is newer, and not itself a stale restore)."""

    path: Path
    erasures: list[tuple[int, str]] = field(default_factory=list)
    drops: list[tuple[int, str]] = field(default_factory=list)  # datasets dropped after the backup
    size: int = 0
    signed: int = 0  # how far a signature covers it (a live workspace is verified whole instead)
    stale_restore: bool = False

    @property
    def vouches(self) -> bool:
        return not self.stale_restore and self.signed > 0

    def describe(self) -> str:
        return str(self.path)

    def take(self, seq: int, data: bytes) -> None:
        ev = json.loads(data)
        if ev.get("type") == SubjectErased.kind:
            self.erasures.append((seq, ev["subject"]))
        elif ev.get("type") == DatasetDropped.kind:
            self.drops.append((seq, ev["dataset"]))
        elif ev.get("type") == BackupRestored.kind and ev.get("later_ledger_checked") is False:
            self.stale_restore = True  # restored blind: erasures between its backup and then are unknown


def _later_erasures(
    source: Path, backup_size: int, backup_root: bytes, log_key: str, open_services: OpenServices
) -> _Source:
    """The erasures after the backup in a newer ledger (a workspace or an export), which must verify,
    be signed with the backup's own log key, and extend the backup's ledger."""
    out = _Source(source)
    not_extension = f"the newer ledger in {source} is not an extension of the backup's ledger"
    if (source / CONFIG_FILE).exists():
        with open_services(source, None) as live:
            if live.ledger.verifier.encode() != log_key:
                raise IntegrityError(f"the newer ledger in {source} is signed with another log key")
            out.size = live.ledger.head().size
            if out.size < backup_size or live.ledger.root_at(backup_size) != backup_root:
                raise IntegrityError(not_extension)
            # its erasures count only if it verifies (an erasure entry hidden at rest would otherwise
            # bring the subject back), and they are read from each entry's data, not its indexed kind
            report = verify_ledger(live.ledger)
            if not report.ok:
                raise IntegrityError(f"the newer ledger in {source} does not verify ({report.problem})")
            for e in live.ledger.entries(start=backup_size):
                out.take(e.seq, e.data)
        out.signed = out.size
        return out
    entries = source / "entries.jsonl"
    if not entries.is_file():
        raise InvalidInput(f"{source} is neither a workspace nor a ledger export")

    try:
        exported_key = (source / "keys" / "log.vkey").read_text().strip()
    except (OSError, UnicodeDecodeError):
        raise InvalidInput(f"{source} is not a complete ledger export") from None
    if exported_key != log_key:
        raise IntegrityError(f"the newer ledger in {source} is signed with another log key")
    report = verify_export(source)
    if not report.ok:
        raise IntegrityError(f"the newer ledger in {source} does not verify ({report.problem})")
    leaves: list[bytes] = []  # the backup's part of the log: its root must be the backup's
    h = hashlib.sha256()
    with open(entries, "rb") as fh:
        for seq, line in enumerate(fh):
            h.update(line)
            data = line.rstrip(b"\n")
            if seq < backup_size:
                leaves.append(merkle.leaf_hash(data))
            else:
                out.take(seq, data)
            out.size = seq + 1
    if out.size < backup_size or merkle.root_of(leaves) != backup_root:
        raise IntegrityError(not_extension)
    try:
        manifest = json.loads((source / "manifest.json").read_text())
        listed = (int(manifest["size"]), str(manifest["entries_sha256"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise IntegrityError(f"the ledger export in {source} has no readable manifest") from None
    if listed != (out.size, h.hexdigest()):
        raise IntegrityError(f"the ledger export in {source} does not match its manifest (cut short or edited)")
    # the entries after its last signed checkpoint could have been cut or edited unnoticed: an export
    # vouches for the erasures since the backup only as far as a signature covers it
    notes = sorted(int(p.stem) for p in (source / "checkpoints").glob("*.note") if p.stem.isdigit())
    out.signed = notes[-1] if notes and notes[-1] > backup_size else 0
    return out


def restore_backup(
    path: Path,
    target: Path,
    key: bytes,
    actor: str,
    *,
    open_services: OpenServices,
    ledger_from: Path | Sequence[Path] | None = None,
    database_url: str | None = None,
    clock: Clock | None = None,
    accept_stale: bool = False,
) -> RestoreResult:
    """Restore a backup into a new workspace directory; erasures recorded after it are re-applied.

    Erasures come from every newer ledger available: the live workspace the manifest names (when it is
    still there) and each ledger given in `ledger_from` (workspaces or exports); each must verify, be
    signed with the backup's log key and extend the backup's ledger. Unless one of them is longer than
    the backup's ledger and was not itself restored blind, erasures made after the backup cannot be
    known, and the restore is refused unless `accept_stale` says the caller takes that risk.

    The workspace is built in a private temporary folder beside `target` (the decrypted backup too) and
    takes its name only once the erasures are re-applied: a failure or a kill never leaves a workspace
    that holds an erased subject, nor decrypted keys in a shared temporary directory."""
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InvalidInput(f"{target} exists and is not empty; restore into a new directory")
    backup_digest = file_digest(Path(path)) if Path(path).is_file() else ""
    if database_url:
        probe = Store(database_url)
        try:
            probe.check_reachable()
        finally:
            probe.dispose()
    with staged_output_dir(target) as home:
        staging = home / ".backup"
        staging.mkdir(mode=0o700)
        manifest = read_backup(Path(path), key, staging)
        backup_size = int(manifest["ledger_size"])
        backup_root = bytes.fromhex(manifest["ledger_root"])
        candidates = _newer_ledgers(manifest, ledger_from)
        build_workspace(home, staging, manifest, database_url)
        with open_services(home, clock) as svc:
            report = verify_ledger(svc.ledger)
            if not report.ok:
                raise IntegrityError(f"restored ledger does not verify: {report.problem}")
            if manifest.get("checkpoint"):
                note = verify_note(manifest["checkpoint"], svc.ledger.verifier)
                if svc.ledger.root_at(note.checkpoint.size) != note.checkpoint.root:
                    raise IntegrityError("restored ledger does not match the backup's signed checkpoint")
            # every newer ledger is resolved before anything is re-applied: a bad one refuses the restore
            log_key = svc.ledger.verifier.encode()
            sources = [_later_erasures(c, backup_size, backup_root, log_key, open_services) for c in candidates]
            vouching = [src for src in sources if src.size > backup_size and src.vouches]
            checked = bool(vouching)
            if not checked and not accept_stale:
                raise InvalidInput(
                    f"no ledger newer than the backup can be consulted ({_why_stale(sources, backup_size)}): "
                    "erasures made after the backup would come back; give a newer ledger, or pass --accept-stale "
                    "to restore anyway"
                )
            reapplied, drops = _reapply_erasures(
                svc, sources, actor, backup_digest, backup_size, checked, len(vouching)
            )
            sweep = svc.vault.retention_sweep(actor)
        shutil.rmtree(staging)
    return {
        "workspace": str(target),
        "tables": manifest["tables"],
        "backup_ledger_size": backup_size,
        "erasures_reapplied": reapplied,
        "drops_reapplied": drops,
        "later_ledger_checked": checked,
        "later_ledgers": [src.describe() for src in vouching],
        "ledgers_consulted": [src.describe() for src in sources],
        "expired_records_removed": sweep["records_deleted"],
    }


def _why_stale(sources: list[_Source], backup_size: int) -> str:
    """Why no newer ledger vouches for the erasures since the backup (the refusal says what to do)."""
    unsigned = [src.describe() for src in sources if src.size > backup_size and not src.signed]
    if not sources:
        return "the workspace it was taken from is gone and no --ledger-from was given"
    if unsigned:
        return (
            f"no signed checkpoint after the backup in {', '.join(unsigned)}; export again with "
            "`complai ledger export`, which signs the head first"
        )
    return "none of the ledgers given is newer than the backup, or each was itself restored without its later erasures"


def _reapply_erasures(
    svc: Services,
    sources: list[_Source],
    actor: str,
    backup_digest: str,
    backup_size: int,
    checked: bool,
    vouching: int,
) -> tuple[int, int]:
    """Erase again, in one transaction with the `backup.restored` entry, every subject a newer ledger
    erased (each once, from its earliest erasure), and drop again every dataset a newer ledger dropped
    (its records go, and the subjects it leaves without records are shredded, so none comes back);
    returns how many erasures and drops were still there to re-apply."""
    erased: dict[str, int] = {}
    dropped: dict[str, int] = {}
    for src in sources:
        for seq, pseudonym in src.erasures:
            erased.setdefault(pseudonym, seq)
        for seq, name in src.drops:
            dropped.setdefault(name, seq)
    later = sorted(((seq, p) for p, seq in erased.items()), key=lambda x: x[0])
    reapplied = drops = 0
    with svc.store.write() as conn:
        for seq, pseudonym in later:
            if svc.vault.erase_pseudonym(conn, pseudonym, actor, reapplied_from=seq):
                reapplied += 1
        live = set(conn.execute(select(datasets.c.name).where(datasets.c.dropped_at.is_(None))).scalars())
        for name, seq in sorted(dropped.items(), key=lambda x: x[1]):
            if name in live:
                svc.vault.drop_dataset_in(conn, name, actor, reapplied_from=seq)
                drops += 1
        svc.ledger.emit(
            conn,
            BackupRestored,
            actor=actor,
            purpose="security",
            backup_digest=backup_digest or digest(b""),
            backup_ledger_size=backup_size,
            erasures_reapplied=reapplied,
            later_ledger_checked=checked,
            later_ledgers=vouching,
        )
    if reapplied or drops:
        svc.store.purge_freed()
    return reapplied, drops


def _same_workspace(path: Path, manifest: dict[str, Any]) -> bool:
    """Whether `path` still holds the workspace the backup was taken from (not a new one made there since)."""
    try:
        return (path / CONFIG_FILE).is_file() and load_settings(path).workspace_id == manifest.get("workspace_id")
    except (OSError, ValueError, KeyError, ComplaiError):
        return False


def _newer_ledgers(manifest: dict[str, Any], given: Path | Sequence[Path] | None) -> list[Path]:
    """Every newer ledger to take erasures from: the live workspace the backup came from, if it is still
    a workspace, and each one given; each at most once."""
    given_list = [] if given is None else [Path(given)] if isinstance(given, (str, Path)) else [Path(g) for g in given]
    source = manifest.get("source_path")
    live = [Path(source)] if source and _same_workspace(Path(source), manifest) else []
    out: list[Path] = []
    seen: set[Path] = set()
    for path in live + given_list:
        if not path.exists():
            raise InvalidInput(f"newer ledger {path} does not exist")
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out
