"""Envelope encryption: versioned key-encryption keys (KEK) behind a provider, per-subject data keys
(DEK) wrapped by the current KEK and kept in the store.

The default provider keeps KEK versions in `keys/kek.json` (mode 0600, replaced atomically). The
`KeyProvider` protocol is what a KMS (HashiCorp Vault transit, a cloud KMS) would implement: wrap,
unwrap, add a version, retire a version; the vault never sees KEK bytes.

Which KEK version new data keys are wrapped under is decided by the database, not by a process's copy
of the key file: the `meta` row `kek_current` is read, and locked, inside every transaction that wraps
(FOR SHARE on PostgreSQL; SQLite writers already hold the database lock from BEGIN IMMEDIATE), and a
process whose key file copy is stale reloads it. Rotation changes that row under an exclusive lock, and
retires a version only under the same lock once no data key uses it, so no writer can wrap under a
retired version (see vault/keys.py).

A subject may hold several DEK versions: a new one is made when the current one has sealed
MAX_ENCRYPTIONS values, far below AES-GCM's 2^32 random-nonce limit. Destroying a subject's DEKs
(crypto-shredding) makes every ciphertext sealed for it unreadable, backups included.
"""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from complai.clock import Clock, parse_utc, utc_iso
from complai.crypto.aead import DataKey
from complai.crypto.keyfiles import read_secret, write_secret
from complai.errors import IntegrityError, NotFound, WorkspaceError
from complai.store import bulk_insert, placeholder
from complai.store.tables import meta, subject_keys

MAX_ENCRYPTIONS = 1 << 30
KEK_FILE = "kek.json"
KEK_CURRENT = "kek_current"  # meta key: the KEK version new data keys are wrapped under


class KeyProvider(Protocol):
    def current_version(self) -> int: ...
    def versions(self) -> dict[int, str]: ...  # version -> creation time
    def wrap(self, dek: bytes, ad: bytes, version: int | None = None) -> tuple[int, bytes]: ...
    def unwrap(self, version: int, blob: bytes, ad: bytes) -> bytes: ...
    def add_version(self) -> int: ...
    def retire(self, version: int) -> None: ...
    def refresh(self) -> None: ...  # re-read versions another process may have added or retired


@dataclass(frozen=True)
class _KekState:
    current: int
    keys: dict[int, DataKey]
    created: dict[int, str]
    raw: dict[int, str]


class FileKeyProvider:
    """KEK versions in a local key file.

    Several processes share the file: each holds a snapshot of it, swapped whole on reload (threads
    never see half of one), and reloads when asked for a version it does not hold. Changes (add,
    retire) re-read the file first, so that they never write back a stale copy. A version retired
    since this process loaded it still unwraps here (a read snapshot taken before the re-wrap may
    still name it) but is no longer listed, wrapped under, or written back.
    """

    def __init__(self, keys_dir: Path, clock: Clock) -> None:
        self.path = Path(keys_dir) / KEK_FILE
        self.clock = clock
        self._lock = threading.Lock()
        self._state = self._read()
        self._loaded: dict[int, DataKey] = dict(self._state.keys)  # every version this process has held

    @classmethod
    def create(cls, keys_dir: Path, clock: Clock) -> FileKeyProvider:
        doc = {"current": 1, "versions": {"1": {"key": _b64(os.urandom(32)), "created": utc_iso(clock.now())}}}
        write_secret(Path(keys_dir) / KEK_FILE, json.dumps(doc).encode())
        return cls(keys_dir, clock)

    def _read(self) -> _KekState:
        try:
            doc = json.loads(read_secret(self.path))
            state = _KekState(
                current=int(doc["current"]),
                keys={int(v): DataKey(base64.b64decode(e["key"])) for v, e in doc["versions"].items()},
                created={int(v): str(e["created"]) for v, e in doc["versions"].items()},
                raw={int(v): str(e["key"]) for v, e in doc["versions"].items()},
            )
        except (ValueError, KeyError, TypeError):
            raise WorkspaceError(f"key file {self.path.name} is corrupt") from None
        if state.current not in state.keys:
            raise WorkspaceError(f"key file {self.path.name} names a current version it does not hold")
        return state

    def refresh(self) -> None:
        self._install(self._read())

    def _install(self, state: _KekState) -> None:
        self._loaded = {**self._loaded, **state.keys}
        self._state = state

    def _save(self, state: _KekState) -> None:
        doc = {
            "current": state.current,
            "versions": {str(v): {"key": state.raw[v], "created": state.created[v]} for v in sorted(state.raw)},
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(json.dumps(doc).encode())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._install(state)

    def current_version(self) -> int:
        return self._state.current

    def versions(self) -> dict[int, str]:
        return dict(self._state.created)

    def _key(self, version: int, *, retired_ok: bool = False) -> DataKey:
        key = self._state.keys.get(version)
        if key is None and retired_ok:
            key = self._loaded.get(version)
        if key is None:  # another process may have added it since this one read the file
            self.refresh()
            key = self._state.keys.get(version)
        if key is None:
            raise IntegrityError(f"key-encryption key version {version} is not available")
        return key

    def wrap(self, dek: bytes, ad: bytes, version: int | None = None) -> tuple[int, bytes]:
        """Wrap under `version` (what the database names as current), default this copy's current."""
        v = self._state.current if version is None else int(version)
        return v, self._key(v).seal(dek, ad)

    def unwrap(self, version: int, blob: bytes, ad: bytes) -> bytes:
        return self._key(version, retired_ok=True).open(blob, ad)

    def add_version(self) -> int:
        with self._lock:
            st = self._read()
            new = max(st.raw) + 1
            raw = _b64(os.urandom(32))
            self._save(
                _KekState(
                    current=new,
                    keys={**st.keys, new: DataKey(base64.b64decode(raw))},
                    created={**st.created, new: utc_iso(self.clock.now())},
                    raw={**st.raw, new: raw},
                )
            )
            return new

    def retire(self, version: int) -> None:
        with self._lock:
            st = self._read()
            if version == st.current:
                raise ValueError("the current key-encryption key cannot be retired")
            if version not in st.raw:
                self._install(st)
                return
            self._save(
                _KekState(
                    current=st.current,
                    keys={v: k for v, k in st.keys.items() if v != version},
                    created={v: c for v, c in st.created.items() if v != version},
                    raw={v: r for v, r in st.raw.items() if v != version},
                )
            )


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

    # --- the current KEK version, bound in the database ------------------------------------------

    def kek_version(self, conn: Connection, *, exclusive: bool = False) -> int:
        """The KEK version to wrap under, read inside the caller's write transaction and locked until it
        ends: shared for writers (FOR SHARE), exclusive for rotation (FOR UPDATE). On SQLite the write
        transaction (BEGIN IMMEDIATE) already excludes every other writer. A workspace without the row
        (created before it existed) takes the key file's current version."""
        q = select(meta.c.value).where(meta.c.key == KEK_CURRENT).with_for_update(read=not exclusive)
        value = conn.execute(q).scalar()
        if value is None:
            self.provider.refresh()
            ins = (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(meta)
            conn.execute(
                ins.values(key=KEK_CURRENT, value=str(self.provider.current_version())).on_conflict_do_nothing()
            )
            value = conn.execute(q).scalar_one()
        return int(value)

    def current_kek(self, conn: Connection) -> int:
        """The current KEK version for readers (no lock, writes nothing)."""
        value = conn.execute(select(meta.c.value).where(meta.c.key == KEK_CURRENT)).scalar()
        return int(value) if value is not None else self.provider.current_version()

    def set_kek_version(self, conn: Connection, version: int) -> None:
        """Make `version` current; the caller holds kek_version(conn, exclusive=True)."""
        conn.execute(update(meta).where(meta.c.key == KEK_CURRENT).values(value=str(int(version))))

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
        kek = self.kek_version(conn)
        rows, out = [], {}
        for sid in subject_ids:
            raw = (raw_keys or {}).get(sid) or new_raw_key()
            kek_version, wrapped = self.provider.wrap(raw, _dek_ad(sid, version), kek)
            rows.append((sid, version, kek_version, wrapped, (sealed or {}).get(sid, 0), now))
            out[sid] = (version, DataKey(raw))
        self._insert(conn, rows)
        return out

    def create_prepared(
        self, conn: Connection, keys: dict[int, tuple[bytes, DataKey]], sealed: dict[int, int]
    ) -> dict[int, tuple[int, DataKey]]:
        """Store first-version DEKs the caller already generated and used (raw bytes, DataKey)."""
        now = self.clock.now()
        kek = self.kek_version(conn)
        rows = []
        for sid, (raw, _) in keys.items():
            kek_version, wrapped = self.provider.wrap(raw, _dek_ad(sid, 1), kek)
            rows.append((sid, 1, kek_version, wrapped, sealed.get(sid, 0), now))
        self._insert(conn, rows)
        return {sid: (1, key) for sid, (_, key) in keys.items()}

    @staticmethod
    def _insert(conn: Connection, rows: Sequence[tuple[object, ...]]) -> None:
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
        current = self.kek_version(conn)
        c = subject_keys.c
        q = select(c.subject_id, c.version, c.kek_version, c.wrapped).where(c.kek_version != current)
        if after is not None:
            q = q.where(tuple_(c.subject_id, c.version) > tuple_(*after))
        rows = conn.execute(q.order_by(c.subject_id, c.version).limit(limit)).all()
        updates = []
        for sid, ver, kv, wrapped in rows:
            ad = _dek_ad(int(sid), int(ver))
            raw = self.provider.unwrap(int(kv), bytes(wrapped), ad)
            new_kv, new_wrapped = self.provider.wrap(raw, ad, current)
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
            "kek_current": self.current_kek(conn),
            "kek_versions": {str(k): v for k, v in sorted(self.provider.versions().items())},
            "deks_by_kek_version": {str(k): v for k, v in sorted(by_kek.items())},
            "deks": sum(by_kek.values()),
            "max_encryptions_per_dek": int(worn),
            "dek_encryption_limit": self.max_encryptions,
        }

    def check_decryptable(self, conn: Connection, sample: int = 16) -> tuple[dict[str, object], list[str]]:
        """Evidence that the data keys can still be opened, and the problems found: the database's
        current KEK version and every version that wraps a data key are held by the provider, and up to
        `sample` randomly chosen keys per version unwrap (bound to their subject and version)."""
        self.provider.refresh()
        held = set(self.provider.versions())
        current = self.current_kek(conn)
        c = subject_keys.c
        by_kek = {int(k): int(n) for k, n in conn.execute(select(c.kek_version, func.count()).group_by(c.kek_version))}
        problems = []
        if current not in held:
            problems.append(f"the current key-encryption key version {current} is not held by the key provider")
        lost = {v: n for v, n in by_kek.items() if v not in held}
        if lost:
            problems.append(
                f"{sum(lost.values())} data keys are wrapped under key-encryption key version(s) "
                f"{sorted(lost)} that the key provider no longer holds: their subjects are unreadable"
            )
        rng = random.SystemRandom()
        sampled = failed = 0
        lo, hi = conn.execute(select(func.min(c.subject_id), func.max(c.subject_id))).one()
        for v in sorted(set(by_kek) - set(lost)):
            picked: dict[tuple[int, int], bytes] = {}
            q = select(c.subject_id, c.version, c.wrapped).where(c.kek_version == v)
            ordered = q.order_by(c.subject_id, c.version).limit(1)
            if by_kek[v] <= 4 * sample:
                rows = conn.execute(q).all()
                rows = rng.sample(rows, min(sample, len(rows)))
            else:
                rows = []
                for _ in range(sample):
                    start = rng.randint(int(lo), int(hi))
                    row = conn.execute(ordered.where(c.subject_id >= start)).first()
                    rows.append(row or conn.execute(ordered).one())
            for sid, ver, wrapped in rows:
                picked[(int(sid), int(ver))] = bytes(wrapped)
            for (sid, ver), wrapped in picked.items():
                sampled += 1
                try:
                    self.provider.unwrap(v, wrapped, _dek_ad(sid, ver))
                except IntegrityError:
                    failed += 1
        if failed:
            problems.append(f"{failed} of {sampled} sampled data keys do not unwrap")
        evidence: dict[str, object] = {
            "kek_current": current,
            "kek_versions_held": sorted(held),
            "deks_by_kek_version": {str(k): n for k, n in sorted(by_kek.items())},
            "deks_under_missing_kek": sum(lost.values()),
            "deks_sampled": sampled,
            "deks_failed_to_unwrap": failed,
        }
        return evidence, problems


def kek_age_days(provider: KeyProvider, now: datetime) -> float:
    created = provider.versions()[provider.current_version()]
    return (now - parse_utc(created)).total_seconds() / 86400
