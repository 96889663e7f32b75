"""Encrypted, verifiable backup archives: the vault's part of backup and restore.

A backup is one file: a clear header (format, workspace id, created time, key id) followed by a
chunked AES-256-GCM stream (crypto/stream.py) of a tar archive: one JSON-lines file per table from a
single consistent snapshot, the workspace's key files and settings, and a manifest with each file's
SHA-256, the schema revision, the ledger size and the signed checkpoint the snapshot corresponds to.

This module holds the archive format, the row encoding and the backup key; `read_backup` decrypts and
checks everything before anything is written, and `build_workspace` rebuilds a workspace's files and
database from a checked archive. When a backup is taken and recorded, and how a restore re-applies the
erasures made after it, is orchestration across services: app/backup.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import DateTime, LargeBinary, RowMapping, Table, insert, select

from complai.clock import as_utc, parse_utc, utc_iso
from complai.config import CONFIG_FILE, Settings, load_settings
from complai.crypto.keyfiles import read_secret, write_secret
from complai.crypto.stream import DecryptingReader, EncryptingWriter, read_header
from complai.errors import IntegrityError, InvalidInput
from complai.files import atomic_output, check_output, workspace_protected
from complai.inputs import json_object, open_input
from complai.ledger.checkpoint import Checkpoint, sign_checkpoint
from complai.ledger.log import Ledger
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


def _encode_row(table: Table, row: RowMapping) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col in table.columns:
        v = row[col.name]
        if v is None:
            out[col.name] = None
        elif isinstance(col.type, LargeBinary):
            out[col.name] = base64.b64encode(bytes(v)).decode()
        elif isinstance(col.type, DateTime):
            out[col.name] = utc_iso(as_utc(v))
        else:
            out[col.name] = v
    return out


def _decode_row(table: Table, obj: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for col in table.columns:
        if col.name not in obj:
            continue  # a column added after the backup's schema revision: its migration fills it
        v = obj[col.name]
        if v is not None and isinstance(col.type, LargeBinary):
            v = base64.b64decode(v)
        elif v is not None and isinstance(col.type, DateTime):
            v = parse_utc(v)
        out[col.name] = v
    return out


def _tables() -> list[Table]:
    return list(metadata.sorted_tables)


class KeysMoved(Exception):
    """A key rotation retired a KEK version between the snapshot and the read of the key file: the
    archive is incomplete (and not left behind); take the backup again."""


def _kek_versions(data: bytes) -> set[int]:
    try:
        return {int(v) for v in json.loads(data)["versions"]}
    except (ValueError, KeyError, TypeError):
        raise IntegrityError("the key-encryption key file is not readable") from None


@dataclass(frozen=True)
class Archive:
    """A backup file once written: its manifest and whether the checkpoint it carries is one the ledger
    keeps already (otherwise the caller stores it, now that the file is complete)."""

    manifest: dict[str, Any]
    checkpoint_stored: bool


def write_archive(
    path: Path,
    key: bytes,
    *,
    settings: Settings,
    store: Store,
    ledger: Ledger,
    created: datetime,
    progress: Callable[[str], None] | None = None,
) -> Archive:
    """Write the encrypted archive of the workspace at `settings.path` to `path` (refuses to overwrite);
    no file is left unless it is complete (complai.files writes it). The key file is read after the
    database snapshot: every KEK version the snapshot's data keys use must be in it, or KeysMoved."""
    path = Path(path)
    home = settings.path
    forbidden = workspace_protected(home)
    if os.path.lexists(path) and not os.path.islink(path) and not os.path.isdir(path):
        raise InvalidInput(f"{path} already exists; choose a new backup file")
    check_output(path, forbidden=forbidden)
    header = json.dumps(
        {
            "format": MAGIC.decode(),
            "workspace_id": settings.workspace_id,
            "created": utc_iso(created),
            "key_id": _key_id(key),
            "cipher": "AES-256-GCM STREAM, 1 MiB chunks",
        },
        sort_keys=True,
    ).encode()
    manifest: dict[str, Any] = {"files": {}, "tables": {}}
    stored = []
    used: set[int] = set()  # KEK versions the snapshot's data keys are wrapped under
    with atomic_output(path, forbidden=forbidden) as raw:
        writer = EncryptingWriter(raw, key, header)
        with tarfile.open(fileobj=writer, mode="w|") as tar:  # type: ignore[call-overload]
            with store.snapshot() as conn:
                revision = store.current_revision(conn)
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
                data = read_secret(settings.keys_dir / name)
                if name == "kek.json" and not used <= _kek_versions(data):
                    raise KeysMoved
                _add(tar, f"keys/{name}", io.BytesIO(data), hashlib.sha256(data).hexdigest(), manifest)
            toml = (home / CONFIG_FILE).read_bytes()
            _add(tar, CONFIG_FILE, io.BytesIO(toml), hashlib.sha256(toml).hexdigest(), manifest)
            # trained models' weights, cards and audit reports: the registry's digests point at them
            models_dir = home / MODELS_DIR
            for f in sorted(models_dir.rglob("*")) if models_dir.is_dir() else []:
                if f.is_file() and not f.is_symlink() and not f.name.startswith("."):
                    data = f.read_bytes()
                    name = f"{MODELS_DIR}/{f.relative_to(models_dir).as_posix()}"
                    _add(tar, name, io.BytesIO(data), hashlib.sha256(data).hexdigest(), manifest)
            # the checkpoint of exactly this snapshot: a stored one (with its cosignatures) or a new
            # signature, stored (by the caller) only once the backup is complete
            stored = [n for n in ledger.checkpoints() if n.checkpoint.size == int(head.size)]
            notes = stored or [
                sign_checkpoint(Checkpoint(ledger.origin, int(head.size), bytes(head.root)), ledger.signer)
            ]
            manifest.update(
                {
                    "format": MAGIC.decode(),
                    "workspace_id": settings.workspace_id,
                    "source_path": str(home.resolve()),
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
    return Archive(manifest, checkpoint_stored=bool(stored))


def _add(tar: tarfile.TarFile, name: str, fileobj: IO[bytes], sha: str, manifest: dict[str, Any]) -> None:
    fileobj.seek(0, os.SEEK_END)
    info = tarfile.TarInfo(name)
    info.size = fileobj.tell()
    fileobj.seek(0)
    tar.addfile(info, fileobj)
    manifest["files"][name] = sha


def file_digest(path: Path) -> str:
    """`sha256:<hex>` of a backup file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


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
        manifest: dict[str, Any] = json.loads((into / "manifest.json").read_text())
    except (FileNotFoundError, ValueError):
        raise IntegrityError("backup has no valid manifest") from None
    for name, sha in manifest["files"].items():
        f = into / name
        if not f.is_file() or hashlib.sha256(f.read_bytes()).hexdigest() != sha:
            raise IntegrityError(f"backup file {name} does not match its manifest digest")
    return manifest


def build_workspace(home: Path, staging: Path, manifest: dict[str, Any], database_url: str | None) -> None:
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
