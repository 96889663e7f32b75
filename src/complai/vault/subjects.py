"""Subjects: lookup by external id or pseudonym, insert-or-get, their sealed identity, and the set
digests and id lists by which events and the access log name them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np
from sqlalchemy import Connection

from complai.crypto.aead import DataKey
from complai.crypto.digest import digest
from complai.crypto.keyring import Keyring, new_raw_key
from complai.crypto.pseudonym import Pseudonymizer
from complai.errors import IntegrityError, InvalidInput, NotFound
from complai.store import placeholder
from complai.vault.records import subject_ad

CHUNK = 5000
_PSEUDONYM = re.compile(r"^sp:[0-9a-f]{64}$")

T = TypeVar("T")


@dataclass(frozen=True)
class Subject:
    id: int
    pseudonym: str
    erased: bool
    restricted: bool


def chunks(seq: Sequence[T], n: int = CHUNK) -> Iterable[Sequence[T]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def pack_ids(ids: Iterable[int]) -> bytes:
    """Subject ids as sorted little-endian int64s (the access log's row format)."""
    return np.asarray(sorted(ids), dtype="<i8").tobytes()


def unpack_ids(blob: bytes) -> list[int]:
    ids: list[int] = np.frombuffer(bytes(blob), dtype="<i8").tolist()
    return ids


def set_digest(pseudonyms: Iterable[str]) -> str:
    """Digest of a set of pseudonyms (sorted, one a line): how events name the subjects they touched."""
    return digest(b"".join(p.encode() + b"\n" for p in sorted(set(pseudonyms))))


class Subjects:
    """Subject rows over the store's `subjects` table; callers give the connection (their transaction)."""

    def __init__(self, pseudonyms: Pseudonymizer) -> None:
        self.pseudonyms = pseudonyms

    def by_pseudonym(self, conn: Connection, pseudonyms: Iterable[str]) -> dict[str, Subject]:
        out = {}
        for part in chunks(sorted(set(pseudonyms))):
            # pseudonyms are sp:<64 hex> (checked), so they can be inlined: no per-value bind expansion
            for p in part:
                if not _PSEUDONYM.match(p):
                    raise InvalidInput("malformed pseudonym")
            sql = (
                "SELECT id, pseudonym, erased_at, restricted_at FROM subjects WHERE pseudonym IN ("
                + ",".join(f"'{p}'" for p in part)
                + ")"
            )
            for sid, p, erased, restricted in conn.exec_driver_sql(sql):
                out[p] = Subject(int(sid), p, erased is not None, restricted is not None)
        return out

    @staticmethod
    def insert(conn: Connection, rows: list[tuple[str, bytes, datetime]]) -> set[str]:
        """Insert-or-get: add (pseudonym, sealed external id, created) rows, skipping pseudonyms that
        exist, and return the pseudonyms this transaction inserted. Concurrent ingests of overlapping new
        subjects then all succeed: on PostgreSQL the later one waits for the earlier to commit and skips
        its rows; callers insert in one global order (sorted external ids), so two ingests never wait on
        each other in a cycle."""
        ph = placeholder(conn)
        sqlite = conn.dialect.name == "sqlite"
        mine: set[str] = set()
        for part in chunks(rows, 2000):
            params: list[str | bytes | datetime] = []
            for p, enc, created in part:
                # SQLite: datetimes in SQLAlchemy's own text format, as bulk_insert writes them
                params += [p, enc, created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else created]
            sql = (
                "INSERT INTO subjects (pseudonym, external_enc, created_at) VALUES "
                + ",".join([f"({ph}, {ph}, {ph})"] * len(part))
                + " ON CONFLICT (pseudonym) DO NOTHING RETURNING pseudonym"
            )
            mine.update(str(r[0]) for r in conn.exec_driver_sql(sql, tuple(params)).all())
        return mine

    def get(self, conn: Connection, external_id: str) -> Subject:
        """Look up a live (not erased) subject by external id."""
        if not external_id or not external_id.strip():
            raise InvalidInput("subject id is empty")
        p = self.pseudonyms.subject(external_id.strip())
        found = self.by_pseudonym(conn, [p]).get(p)
        if found is None:
            raise NotFound("no such subject")
        if found.erased:
            raise NotFound("the subject was erased")
        return found


def create_subjects(
    conn: Connection,
    subjects: Subjects,
    keyring: Keyring,
    external_ids: Sequence[str],
    now: datetime,
    sealed: Mapping[str, int] | None = None,
) -> tuple[dict[str, Subject], list[str]]:
    """Insert-or-get the subjects of `external_ids`, as ingest creates them: a fresh data key first, the
    external id sealed under it, the subject row inserted (skipped when a concurrent transaction created
    it), then the key stored, counting the identity seal and `sealed[id]` more. Returns (pseudonym ->
    Subject for every id, the ids this transaction created, sorted)."""
    pseud = {e: subjects.pseudonyms.subject(e) for e in set(external_ids)}
    known = subjects.by_pseudonym(conn, pseud.values())
    new_ext = sorted(e for e in pseud if pseud[e] not in known)
    if not new_ext:
        return known, []
    fresh = {e: new_raw_key() for e in new_ext}
    fresh_keys = {e: DataKey(k) for e, k in fresh.items()}
    mine = subjects.insert(
        conn, [(pseud[e], fresh_keys[e].seal(e.encode(), subject_ad(pseud[e])), now) for e in new_ext]
    )
    known.update(subjects.by_pseudonym(conn, [pseud[e] for e in new_ext]))
    created = [e for e in new_ext if pseud[e] in mine]
    if created:
        counts = sealed or {}
        keyring.create_prepared(
            conn,
            {known[pseud[e]].id: (fresh[e], fresh_keys[e]) for e in created},
            sealed={known[pseud[e]].id: counts.get(e, 0) + 1 for e in created},
        )
    return known, created


def open_external(keys: dict[int, DataKey], pseudonym: str, blob: bytes | None) -> str:
    """A subject's external id, sealed under its first data key (tried against the live versions)."""
    if blob is None:
        raise IntegrityError("subject identity is missing")
    for key in keys.values():
        try:
            return key.open(bytes(blob), subject_ad(pseudonym)).decode()
        except IntegrityError:
            continue
    raise IntegrityError("subject identity cannot be decrypted")
