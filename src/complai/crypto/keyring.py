"""Envelope encryption: versioned key-encryption keys (KEK) behind a provider, per-subject data keys
(DEK) wrapped by the current KEK and kept in the store.

The default provider keeps KEK versions in `keys/kek.json` (mode 0600, replaced atomically). The
`KeyProvider` protocol is what a KMS (HashiCorp Vault transit, a cloud KMS) would implement: wrap,
unwrap, add a version, retire a version; the vault never sees KEK bytes.

A subject may hold several DEK versions: a new one is made when the current one has sealed
MAX_ENCRYPTIONS values, far below AES-GCM's 2^32 random-nonce limit. Destroying a subject's DEKs
(crypto-shredding) makes every ciphertext sealed for it unreadable, backups included.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, delete, func, select, tuple_

from complai.clock import Clock, utc_iso
from complai.crypto.aead import DataKey
from complai.crypto.keyfiles import read_secret, write_secret
from complai.errors import IntegrityError, NotFound, WorkspaceError
from complai.store import bulk_insert, placeholder
from complai.store.tables import subject_keys

MAX_ENCRYPTIONS = 1 << 30
KEK_FILE = "kek.json"


class KeyProvider(Protocol):
    def current_version(self) -> int: ...
    def versions(self) -> dict[int, str]: ...  # version -> creation time
    def wrap(self, dek: bytes, ad: bytes) -> tuple[int, bytes]: ...
    def unwrap(self, version: int, blob: bytes, ad: bytes) -> bytes: ...
    def add_version(self) -> int: ...
    def retire(self, version: int) -> None: ...


class FileKeyProvider:
    """KEK versions in a local key file."""

    def __init__(self, keys_dir: Path, clock: Clock) -> None:
        self.path = Path(keys_dir) / KEK_FILE
        self.clock = clock
        self._load()

    @classmethod
    def create(cls, keys_dir: Path, clock: Clock) -> FileKeyProvider:
        doc = {"current": 1, "versions": {"1": {"key": _b64(os.urandom(32)), "created": utc_iso(clock.now())}}}
        write_secret(Path(keys_dir) / KEK_FILE, json.dumps(doc).encode())
        return cls(keys_dir, clock)

    def _load(self) -> None:
        try:
            doc = json.loads(read_secret(self.path))
            self._current = int(doc["current"])
            self._keys = {int(v): DataKey(base64.b64decode(e["key"])) for v, e in doc["versions"].items()}
            self._created = {int(v): str(e["created"]) for v, e in doc["versions"].items()}
            self._raw = {int(v): str(e["key"]) for v, e in doc["versions"].items()}
        except (ValueError, KeyError, TypeError):
            raise WorkspaceError(f"key file {self.path.name} is corrupt") from None
        if self._current not in self._keys:
            raise WorkspaceError(f"key file {self.path.name} names a current version it does not hold")

    def _save(self) -> None:
        doc = {
            "current": self._current,
            "versions": {str(v): {"key": self._raw[v], "created": self._created[v]} for v in sorted(self._raw)},
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(json.dumps(doc).encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def current_version(self) -> int:
        return self._current

    def versions(self) -> dict[int, str]:
        return dict(self._created)

    def wrap(self, dek: bytes, ad: bytes) -> tuple[int, bytes]:
        return self._current, self._keys[self._current].seal(dek, ad)

    def unwrap(self, version: int, blob: bytes, ad: bytes) -> bytes:
        key = self._keys.get(version)
        if key is None:
            raise IntegrityError(f"key-encryption key version {version} is not available")
        return key.open(blob, ad)

    def add_version(self) -> int:
        new = max(self._raw) + 1
        self._raw[new] = _b64(os.urandom(32))
        self._created[new] = utc_iso(self.clock.now())
        self._keys[new] = DataKey(base64.b64decode(self._raw[new]))
        self._current = new
        self._save()
        return new

    def retire(self, version: int) -> None:
        if version == self._current:
            raise ValueError("the current key-encryption key cannot be retired")
        for d in (self._raw, self._created, self._keys):
            d.pop(version, None)
        self._save()


def new_raw_key() -> bytes:
    return os.urandom(32)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _dek_ad(subject_id: int, version: int) -> bytes:
    return b"complai/dek/v1|%d|%d" % (subject_id, version)


class Keyring:
    """Per-subject data keys in the store, wrapped by the provider's KEK."""

    def __init__(self, provider: KeyProvider, clock: Clock, max_encryptions: int = MAX_ENCRYPTIONS) -> None:
        self.provider = provider
        self.clock = clock
        self.max_encryptions = max_encryptions

    def create(
        self,
        conn: Connection,
        subject_ids: Iterable[int],
        version: int = 1,
        sealed: dict[int, int] | None = None,
        raw_keys: dict[int, bytes] | None = None,
    ) -> dict[int, tuple[int, DataKey]]:
        """New DEKs for subjects (fresh random, or `raw_keys` generated by the caller with new_raw_key).

        `sealed` pre-counts what the caller will seal under them. Returns id -> (version, key).
        """
        now = self.clock.now()
        rows, out = [], {}
        for sid in subject_ids:
            raw = (raw_keys or {}).get(sid) or new_raw_key()
            kek_version, wrapped = self.provider.wrap(raw, _dek_ad(sid, version))
            rows.append((sid, version, kek_version, wrapped, (sealed or {}).get(sid, 0), now))
            out[sid] = (version, DataKey(raw))
        self._insert(conn, rows)
        return out

    def create_prepared(
        self, conn: Connection, keys: dict[int, tuple[bytes, DataKey]], sealed: dict[int, int]
    ) -> dict[int, tuple[int, DataKey]]:
        """Store first-version DEKs the caller already generated and used (raw bytes, DataKey)."""
        now = self.clock.now()
        rows = []
        for sid, (raw, _) in keys.items():
            kek_version, wrapped = self.provider.wrap(raw, _dek_ad(sid, 1))
            rows.append((sid, 1, kek_version, wrapped, sealed.get(sid, 0), now))
        self._insert(conn, rows)
        return {sid: (1, key) for sid, (_, key) in keys.items()}

    @staticmethod
    def _insert(conn: Connection, rows: list[tuple[object, ...]]) -> None:
        bulk_insert(conn, subject_keys, rows)

    def load(self, conn: Connection, subject_ids: Iterable[int], chunk: int = 5000) -> dict[int, dict[int, DataKey]]:
        """All live DEK versions of the given subjects: subject id -> {version: key}."""
        ids = sorted(set(subject_ids))
        out: dict[int, dict[int, DataKey]] = {}
        c = subject_keys.c
        for i in range(0, len(ids), chunk):
            part = ids[i : i + chunk]
            q = select(c.subject_id, c.version, c.kek_version, c.wrapped).where(c.subject_id.in_(part))
            for sid, ver, kv, wrapped in conn.execute(q):
                raw = self.provider.unwrap(int(kv), bytes(wrapped), _dek_ad(int(sid), int(ver)))
                out.setdefault(int(sid), {})[int(ver)] = DataKey(raw)
        return out

    def for_sealing(self, conn: Connection, counts: dict[int, int]) -> dict[int, tuple[int, DataKey]]:
        """The DEK with which to seal `counts[s]` new values for each existing subject.

        Moves a subject to a fresh DEK version when its current one would pass max_encryptions; the
        counters are updated in the caller's transaction.
        """
        ids = sorted(counts)
        latest: dict[int, tuple[int, int, int, bytes]] = {}
        for i in range(0, len(ids), 5000):
            part = ",".join(str(int(x)) for x in ids[i : i + 5000])
            sql = (
                "SELECT subject_id, version, encryptions, kek_version, wrapped FROM subject_keys "
                f"WHERE subject_id IN ({part})"
            )
            for sid, ver, enc, kv, wrapped in conn.exec_driver_sql(sql):
                sid = int(sid)
                if sid not in latest or int(ver) > latest[sid][0]:
                    latest[sid] = (int(ver), int(enc), int(kv), bytes(wrapped))
        missing = [s for s in ids if s not in latest]
        if missing:
            raise NotFound(f"{len(missing)} subject(s) have no data key (erased?)")
        out: dict[int, tuple[int, DataKey]] = {}
        bumps = []
        for sid in ids:
            ver, enc, kv, wrapped = latest[sid]
            if enc + counts[sid] > self.max_encryptions:
                out.update(self.create(conn, [sid], version=ver + 1, sealed={sid: counts[sid]}))
            else:
                out[sid] = (ver, DataKey(self.provider.unwrap(kv, wrapped, _dek_ad(sid, ver))))
                bumps.append((counts[sid], sid, ver))
        if bumps:
            ph = placeholder(conn)
            conn.exec_driver_sql(
                f"UPDATE subject_keys SET encryptions = encryptions + {ph} WHERE subject_id = {ph} AND version = {ph}",
                bumps,
            )
        return out

    def destroy(self, conn: Connection, subject_ids: Iterable[int]) -> int:
        """Crypto-shred: delete every DEK version of these subjects. Returns keys destroyed."""
        ids = list(subject_ids)
        n = 0
        for i in range(0, len(ids), 5000):
            n += conn.execute(delete(subject_keys).where(subject_keys.c.subject_id.in_(ids[i : i + 5000]))).rowcount
        return n

    def rewrap_batch(
        self, conn: Connection, limit: int, after: tuple[int, int] | None = None
    ) -> tuple[int, tuple[int, int] | None]:
        """Re-wrap up to `limit` DEKs held under an older KEK with the current one, in key order after
        `after` (keyset pagination: each batch starts where the last ended instead of skipping the rows
        already re-wrapped). Returns (how many, the last key handled)."""
        current = self.provider.current_version()
        c = subject_keys.c
        q = select(c.subject_id, c.version, c.kek_version, c.wrapped).where(c.kek_version != current)
        if after is not None:
            q = q.where(tuple_(c.subject_id, c.version) > tuple_(*after))
        rows = conn.execute(q.order_by(c.subject_id, c.version).limit(limit)).all()
        updates = []
        for sid, ver, kv, wrapped in rows:
            ad = _dek_ad(int(sid), int(ver))
            raw = self.provider.unwrap(int(kv), bytes(wrapped), ad)
            new_kv, new_wrapped = self.provider.wrap(raw, ad)
            updates.append((new_kv, new_wrapped, int(sid), int(ver)))
        if updates:
            ph = placeholder(conn)
            conn.exec_driver_sql(
                # by primary key only: a kek_version predicate lets PostgreSQL's generic plan pick the
                # (unselective) kek_version index and scan every key per update
                f"UPDATE subject_keys SET kek_version = {ph}, wrapped = {ph} "
                f"WHERE subject_id = {ph} AND version = {ph}",
                updates,
            )
        return len(rows), ((int(rows[-1].subject_id), int(rows[-1].version)) if rows else after)

    def status(self, conn: Connection) -> dict[str, object]:
        c = subject_keys.c
        by_kek = {int(k): int(n) for k, n in conn.execute(select(c.kek_version, func.count()).group_by(c.kek_version))}
        worn = conn.execute(select(func.max(c.encryptions))).scalar() or 0
        return {
            "kek_current": self.provider.current_version(),
            "kek_versions": {str(k): v for k, v in sorted(self.provider.versions().items())},
            "deks_by_kek_version": {str(k): v for k, v in sorted(by_kek.items())},
            "deks": sum(by_kek.values()),
            "max_encryptions_per_dek": int(worn),
            "dek_encryption_limit": self.max_encryptions,
        }


def kek_age_days(provider: KeyProvider, now: datetime) -> float:
    created = provider.versions()[provider.current_version()]
    return (now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds() / 86400
