"""Encrypted, verifiable backups of a whole workspace, and restores that never resurrect an erasure.

A backup is one file: a clear header (format, workspace id, created time, key id) followed by a
chunked AES-256-GCM stream (crypto/stream.py) of a tar archive: one JSON-lines file per table from a
single consistent snapshot, the workspace's key files and settings, and a manifest with each file's
SHA-256, the schema revision, the ledger size and the signed checkpoint the snapshot corresponds to.

Restore decrypts and checks everything before writing anything, rebuilds the database at the backup's
schema revision, upgrades it, verifies the ledger against the checkpoint, and then re-applies every
erasure recorded after the backup in the newer ledger it is given (the live workspace or an export),
after checking that ledger is a consistent extension of the backup's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, LargeBinary, Table, insert, select

from complai.clock import Clock, as_utc, utc_iso
from complai.config import CONFIG_FILE, load_settings
from complai.crypto.keyfiles import read_secret, write_secret
from complai.crypto.digest import digest
from complai.crypto.stream import DecryptingReader, EncryptingWriter, read_header
from complai.errors import ComplaiError, IntegrityError, InvalidInput
from complai.events import BackupCreated, BackupRestored, SubjectErased
from complai.files import atomic_output, check_output, staged_output_dir, workspace_protected
from complai.inputs import json_object, open_input
from complai.ledger import merkle
from complai.ledger.checkpoint import Checkpoint, sign_checkpoint, verify_note
from complai.ledger.verify import verify_export, verify_ledger
from complai.store import Store, metadata
from complai.store.tables import ledger_head

MAGIC = b"complai-backup/1"
KEY_FILES = ("ledger.key", "pseudonym.key", "kek.json")
MODELS_DIR = "models"


def new_backup_key(path: Path) -> None:
    write_secret(path, os.urandom(32))


def load_backup_key(path: Path) -> bytes:
    return read_secret(Path(path), size=32)


def _key_id(key: bytes) -> str:
    return hmac.digest(key, b"complai backup key id", hashlib.sha256)[:8].hex()


def _encode_row(table: Table, row: Any) -> dict[str, Any]:
    out = {}
    for col in table.columns:
        v = row[col.name]
        if v is None:
            out[col.name] = None
        elif isinstance(col.type, LargeBinary):
            out[col.name] = base64.b64encode(bytes(v)).decode()
        elif isinstance(col.type, DateTime):
            out[col.name] = utc_iso(as_utc(v))  # type: ignore[arg-type]
        else:
            out[col.name] = v
    return out


def _decode_row(table: Table, obj: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for col in table.columns:
        v = obj.get(col.name)
        if v is not None and isinstance(col.type, LargeBinary):
            v = base64.b64decode(v)
        elif v is not None and isinstance(col.type, DateTime):
            v = datetime.fromisoformat(v.replace("Z", "+00:00"))
        out[col.name] = v
    return out


def _tables() -> list[Table]:
    return [t for t in metadata.sorted_tables]


class _KeysMoved(Exception):
    """A key rotation retired a KEK version between the snapshot and the read of the key file."""


def create_backup(
    ws: Any, path: Path, key: bytes, actor: str, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Write an encrypted backup of the workspace `ws` to `path` (refuses to overwrite).

    Nothing is recorded and no file is left unless the backup is complete: the checkpoint and the
    `backup.created` event are stored after the file is in place (complai.files writes it). The key
    file is read after the database snapshot; a rotation may retire a KEK version in between, so every
    version the snapshot's data keys use must be in the copy taken, or the backup is taken again."""
    for attempt in range(3):
        try:
            return _create_backup(ws, path, key, actor, progress)
        except _KeysMoved:
            if attempt == 2:
                raise IntegrityError(
                    "key rotations kept retiring key-encryption key versions during the backup; run it again "
                    "once the rotation has finished"
                ) from None
    raise AssertionError("unreachable")


def _kek_versions(data: bytes) -> set[int]:
    try:
        return {int(v) for v in json.loads(data)["versions"]}
    except (ValueError, KeyError, TypeError):
        raise IntegrityError("the key-encryption key file is not readable") from None


def _create_backup(
    ws: Any, path: Path, key: bytes, actor: str, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    path = Path(path)
    forbidden = workspace_protected(ws.path)
    if os.path.lexists(path) and not os.path.islink(path) and not os.path.isdir(path):
        raise InvalidInput(f"{path} already exists; choose a new backup file")
    check_output(path, forbidden=forbidden)
    created = ws.clock.now()
    header = json.dumps(
        {
            "format": MAGIC.decode(),
            "workspace_id": ws.settings.workspace_id,
            "created": utc_iso(created),
            "key_id": _key_id(key),
            "cipher": "AES-256-GCM STREAM, 1 MiB chunks",
        },
        sort_keys=True,
    ).encode()
    manifest: dict[str, Any] = {"files": {}, "tables": {}}
    stored: list[Any] = []
    used: set[int] = set()  # KEK versions the snapshot's data keys are wrapped under
    with atomic_output(path, forbidden=forbidden) as raw:
        writer = EncryptingWriter(raw, key, header)
        with tarfile.open(fileobj=writer, mode="w|") as tar:  # type: ignore[call-overload]
            with ws.store.snapshot() as conn:
                revision = ws.store.current_revision(conn)
                head = conn.execute(select(ledger_head.c.size, ledger_head.c.root)).one()
                for table in _tables():
                    if progress:
                        progress(table.name)
                    with tempfile.SpooledTemporaryFile(max_size=64 << 20) as spool:
                        h = hashlib.sha256()
                        n = 0
                        if table.name == "subject_keys":
                            used = set(conn.execute(select(table.c.kek_version).distinct()).scalars())
                        for row in conn.execute(select(table)).mappings():
                            line = json.dumps(_encode_row(table, row), sort_keys=True).encode() + b"\n"
                            spool.write(line)
                            h.update(line)
                            n += 1
                        _add(tar, f"tables/{table.name}.jsonl", spool, h.hexdigest(), manifest)
                        manifest["tables"][table.name] = n
            for name in KEY_FILES:
                data = read_secret(ws.settings.keys_dir / name)
                if name == "kek.json" and not used <= _kek_versions(data):
                    raise _KeysMoved
                _add(tar, f"keys/{name}", io.BytesIO(data), hashlib.sha256(data).hexdigest(), manifest)
            toml = (ws.path / CONFIG_FILE).read_bytes()
            _add(tar, CONFIG_FILE, io.BytesIO(toml), hashlib.sha256(toml).hexdigest(), manifest)
            # trained models' weights, cards and audit reports: the registry's digests point at them
            models_dir = Path(ws.path) / MODELS_DIR
            for f in sorted(models_dir.rglob("*")) if models_dir.is_dir() else []:
                if f.is_file() and not f.is_symlink() and not f.name.startswith("."):
                    data = f.read_bytes()
                    name = f"{MODELS_DIR}/{f.relative_to(models_dir).as_posix()}"
                    _add(tar, name, io.BytesIO(data), hashlib.sha256(data).hexdigest(), manifest)
            # the checkpoint of exactly this snapshot: a stored one (with its cosignatures) or a new
            # signature, stored only once the backup is complete
            stored = [n for n in ws.ledger.checkpoints() if n.checkpoint.size == int(head.size)]
            notes = stored or [
                sign_checkpoint(Checkpoint(ws.ledger.origin, int(head.size), bytes(head.root)), ws.ledger.signer)
            ]
            manifest.update(
                {
                    "format": MAGIC.decode(),
                    "workspace_id": ws.settings.workspace_id,
                    "source_path": str(Path(ws.path).resolve()),
                    "created": utc_iso(created),
                    "schema_revision": revision,
                    "ledger_size": int(head.size),
                    "ledger_root": bytes(head.root).hex(),
                    "checkpoint": notes[-1].text() if notes else None,
                }
            )
            blob = json.dumps(manifest, indent=1, sort_keys=True).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        writer.close()
    if not stored:
        ws.ledger.checkpoint(actor)
    file_digest = "sha256:" + _file_sha256(path)
    seq = ws.ledger.record(
        BackupCreated(
            time=created,
            actor=actor,
            purpose="security",
            backup_digest=file_digest,
            ledger_size=manifest["ledger_size"],
            tables=manifest["tables"],
        )
    )
    return {
        "file": str(path),
        "digest": file_digest,
        "ledger_size": manifest["ledger_size"],
        "tables": manifest["tables"],
        "seq": seq,
    }


def _add(tar: tarfile.TarFile, name: str, fileobj: Any, sha: str, manifest: dict[str, Any]) -> None:
    fileobj.seek(0, os.SEEK_END)
    info = tarfile.TarInfo(name)
    info.size = fileobj.tell()
    fileobj.seek(0)
    tar.addfile(info, fileobj)
    manifest["files"][name] = sha


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_backup(path: Path, key: bytes, into: Path) -> dict[str, Any]:
    """Decrypt and verify a backup into the directory `into`; returns its manifest."""
    src = open_input(path, "backup file")
    with src:
        header = read_header(src)
        meta = json_object(header)  # anything but a JSON object (a list, deep nesting) is damage
        if meta is None:
            raise IntegrityError("backup header is damaged")
        if meta.get("format") != MAGIC.decode():
            raise IntegrityError("not a complai backup (or an unsupported format)")
        if meta.get("key_id") != _key_id(key):
            raise InvalidInput("this backup was made with another backup key")
        reader = DecryptingReader(src, key, header)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    target = (into / member.name).resolve()
                    if not member.isfile() or not str(target).startswith(str(into.resolve()) + os.sep):
                        raise IntegrityError(f"backup holds an unexpected entry {member.name!r}")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    fh = tar.extractfile(member)
                    assert fh is not None
                    target.write_bytes(fh.read())
        except tarfile.TarError:
            raise IntegrityError("backup archive is damaged") from None
    try:
        manifest = json.loads((into / "manifest.json").read_text())
    except (FileNotFoundError, ValueError):
        raise IntegrityError("backup has no valid manifest") from None
    for name, sha in manifest["files"].items():
        f = into / name
        if not f.is_file() or hashlib.sha256(f.read_bytes()).hexdigest() != sha:
            raise IntegrityError(f"backup file {name} does not match its manifest digest")
    return manifest


class _Source:
    """A newer ledger consulted by a restore: its erasures after the backup, and whether it can vouch
    that it knows every erasure made since the backup (it is newer, and not itself a stale restore)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.erasures: list[tuple[int, str]] = []
        self.size = 0
        self.signed = 0  # how far a signature covers it (a live workspace is verified whole instead)
        self.stale_restore = False

    @property
    def vouches(self) -> bool:
        return not self.stale_restore and self.signed > 0

    def describe(self) -> str:
        return str(self.path)


def _later_erasures(
    source: Path, backup_size: int, backup_root: bytes, log_key: str, open_workspace: Callable[..., Any]
) -> _Source:
    """The erasures after the backup in a newer ledger (a workspace or an export), which must verify,
    be signed with the backup's own log key, and extend the backup's ledger."""
    out = _Source(source)

    def take(seq: int, data: bytes) -> None:
        ev = json.loads(data)
        if ev.get("type") == SubjectErased.kind:
            out.erasures.append((seq, ev["subject"]))
        elif ev.get("type") == BackupRestored.kind and ev.get("later_ledger_checked") is False:
            out.stale_restore = True  # restored blind: erasures between its backup and then are unknown

    not_extension = f"the newer ledger in {source} is not an extension of the backup's ledger"
    if (source / CONFIG_FILE).exists():
        with open_workspace(source) as live:
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
                take(e.seq, e.data)
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
                take(seq, data)
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
    ledger_from: Path | Sequence[Path] | None = None,
    database_url: str | None = None,
    clock: Clock | None = None,
    open_workspace: Callable[..., Any] | None = None,
    accept_stale: bool = False,
) -> dict[str, Any]:
    """Restore a backup into a new workspace directory; erasures recorded after it are re-applied.

    Erasures come from every newer ledger available: the live workspace the manifest names (when it is
    still there) and each ledger given in `ledger_from` (workspaces or exports); each must verify, be
    signed with the backup's log key and extend the backup's ledger. Unless one of them is longer than
    the backup's ledger and was not itself restored blind, erasures made after the backup cannot be
    known, and the restore is refused unless `accept_stale` says the caller takes that risk.

    The workspace is built in a private temporary folder beside `target` (the decrypted backup too) and
    takes its name only once the erasures are re-applied: a failure or a kill never leaves a workspace
    that holds an erased subject, nor decrypted keys in a shared temporary directory.

    `open_workspace(path, clock=...)` opens a workspace (Workspace.open): the vault does not import the
    composition root above it, the caller hands it in."""
    if open_workspace is None:
        raise ValueError("restore_backup needs open_workspace (Workspace.open)")
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InvalidInput(f"{target} exists and is not empty; restore into a new directory")
    file_digest = "sha256:" + _file_sha256(Path(path)) if Path(path).is_file() else ""
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
        _build(home, staging, manifest, database_url)
        with open_workspace(home, clock=clock) as ws:
            report = verify_ledger(ws.ledger)
            if not report.ok:
                raise IntegrityError(f"restored ledger does not verify: {report.problem}")
            if manifest.get("checkpoint"):
                note = verify_note(manifest["checkpoint"], ws.ledger.verifier)
                if ws.ledger.root_at(note.checkpoint.size) != note.checkpoint.root:
                    raise IntegrityError("restored ledger does not match the backup's signed checkpoint")
            # every newer ledger is resolved before anything is re-applied: a bad one refuses the restore
            log_key = ws.ledger.verifier.encode()
            sources = [_later_erasures(c, backup_size, backup_root, log_key, open_workspace) for c in candidates]
            vouching = [src for src in sources if src.size > backup_size and src.vouches]
            unsigned = [src.describe() for src in sources if src.size > backup_size and not src.signed]
            checked = bool(vouching)
            if not checked and not accept_stale:
                why = (
                    "the workspace it was taken from is gone and no --ledger-from was given"
                    if not sources
                    else f"no signed checkpoint after the backup in {', '.join(unsigned)}; export again with "
                    "`complai ledger export`, which signs the head first"
                    if unsigned
                    else "none of the ledgers given is newer than the backup, or each was itself restored "
                    "without its later erasures"
                )
                raise InvalidInput(
                    f"no ledger newer than the backup can be consulted ({why}): erasures made after the backup "
                    "would come back; give a newer ledger, or pass --accept-stale to restore anyway"
                )
            erased: dict[str, int] = {}
            for src in sources:
                for seq, pseudonym in src.erasures:
                    erased.setdefault(pseudonym, seq)
            later = sorted(((seq, p) for p, seq in erased.items()), key=lambda x: x[0])
            reapplied = 0
            with ws.store.write() as conn:
                for seq, pseudonym in later:
                    if ws.vault.erase_pseudonym(conn, pseudonym, actor, reapplied_from=seq):
                        reapplied += 1
                ws.ledger.append(
                    conn,
                    BackupRestored(
                        time=ws.clock.now(),
                        actor=actor,
                        purpose="security",
                        backup_digest=file_digest or digest(b""),
                        backup_ledger_size=backup_size,
                        erasures_reapplied=reapplied,
                        later_ledger_checked=checked,
                        later_ledgers=len(vouching),
                    ),
                )
            if reapplied:
                ws.store.purge_freed()
            sweep = ws.vault.retention_sweep(actor)
        shutil.rmtree(staging)
    return {
        "workspace": str(target),
        "tables": manifest["tables"],
        "backup_ledger_size": backup_size,
        "erasures_reapplied": reapplied,
        "later_ledger_checked": checked,
        "later_ledgers": [src.describe() for src in vouching],
        "ledgers_consulted": [src.describe() for src in sources],
        "expired_records_removed": sweep["records_deleted"],
    }


def _build(home: Path, staging: Path, manifest: dict[str, Any], database_url: str | None) -> None:
    """Key files, settings, models and every table of the backup, into the workspace folder `home`."""
    keys = home / "keys"
    keys.mkdir(mode=0o700)
    for name in KEY_FILES:
        write_secret(keys / name, (staging / "keys" / name).read_bytes())
    (home / CONFIG_FILE).write_bytes((staging / CONFIG_FILE).read_bytes())
    for name in sorted(manifest["files"]):
        if name.startswith(MODELS_DIR + "/"):
            dest = home / name
            if not dest.resolve().is_relative_to((home / MODELS_DIR).resolve()):
                raise IntegrityError(f"backup holds an unexpected entry {name!r}")
            dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_secret(dest, (staging / name).read_bytes())
    settings = load_settings(home)
    if database_url or settings.database_url:
        from dataclasses import replace

        settings = replace(settings, database_url=database_url)
        settings.write()
    store = Store(settings.resolved_database_url())
    try:
        with store.write() as conn:
            store.migrate(conn, target=manifest["schema_revision"])
            present = [t for t in _tables() if (staging / "tables" / f"{t.name}.jsonl").exists()]
            for table in reversed(present):  # rows the migrations seeded (head, owner) come from the backup
                conn.execute(table.delete())
            for table in present:
                f = staging / "tables" / f"{table.name}.jsonl"
                batch: list[dict[str, Any]] = []
                with open(f, "rb") as fh:
                    for line in fh:
                        batch.append(_decode_row(table, json.loads(line)))
                        if len(batch) >= 5000:
                            conn.execute(insert(table), batch)
                            batch = []
                if batch:
                    conn.execute(insert(table), batch)
            store.migrate(conn)
            if store.dialect == "postgresql":  # explicit ids do not advance identity sequences
                for table in _tables():
                    for col in table.primary_key.columns:
                        if col.autoincrement is True:
                            conn.exec_driver_sql(
                                f"SELECT setval(pg_get_serial_sequence('{table.name}', '{col.name}'), "
                                f"COALESCE((SELECT MAX({col.name}) FROM {table.name}), 0) + 1, false)"
                            )
    finally:
        store.dispose()


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
