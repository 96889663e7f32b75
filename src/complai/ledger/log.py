"""The persistent Merkle log in the store.

Appends lock the single head row (BEGIN IMMEDIATE on SQLite, SELECT ... FOR UPDATE on PostgreSQL),
so concurrent writers in any number of threads or processes are serialised and nothing is lost. The
head keeps the compact range of the tree (one hash per set bit of its size), so an append computes the
new root without reading older entries.

Interior node storage is stratified: perfect-subtree hashes are kept only at levels that are multiples
of STRATUM (leaf hashes live in the entries table, level 0). Any perfect subtree at level L is then
rebuilt from at most 2**(STRATUM-1) stored hashes one stratum below, so every root and proof needs
O(log n) reads in two range queries, while an append adds only ~1/(2**STRATUM - 1) node rows. This
is the trade Tessera's tiles make, with a shorter tile.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, bindparam, func, insert, select, update

from complai.clock import Clock
from complai.crypto.signing import Signer, VerifierKey
from complai.errors import AlreadyExists, IntegrityError, InvalidInput, NotFound
from complai.events import Event, LedgerCheckpointed, WitnessTrusted
from complai.ledger import merkle
from complai.ledger.checkpoint import (
    Checkpoint,
    SignedNote,
    log_signature_digest,
    parse_note,
    sign_checkpoint,
    verify_cosignature,
    verify_note,
)
from complai.store import Store, bulk_insert
from complai.store.tables import (
    ledger_checkpoints,
    ledger_cosignatures,
    ledger_entries,
    ledger_head,
    ledger_nodes,
    ledger_witnesses,
)

STRATUM = 4


@dataclass(frozen=True)
class Head:
    size: int
    root: bytes


@dataclass(frozen=True)
class Entry:
    seq: int
    kind: str
    leaf_hash: bytes
    data: bytes


def head_range(size: int, blob: bytes) -> merkle.CompactRange:
    """The compact range the head row keeps (its `frontier` column) for a log of `size` entries."""
    try:
        return merkle.CompactRange.decode(size, blob)
    except IntegrityError:
        raise IntegrityError("ledger head is inconsistent with its size") from None


# Built once: the append path runs these for every transaction that records an event.
_HEAD_FOR_UPDATE = select(ledger_head.c.size, ledger_head.c.frontier).where(ledger_head.c.id == 1).with_for_update()
_UPDATE_HEAD = (
    update(ledger_head)
    .where(ledger_head.c.id == 1)
    .values(size=bindparam("new_size"), root=bindparam("new_root"), frontier=bindparam("new_frontier"))
)

_HEAD = select(ledger_head.c.size, ledger_head.c.root).where(ledger_head.c.id == 1)
_SCAN = (
    select(ledger_entries.c.seq, ledger_entries.c.kind, ledger_entries.c.data)
    .where(
        ledger_entries.c.kind.in_(bindparam("kinds", expanding=True)),
        ledger_entries.c.seq >= bindparam("start"),
        ledger_entries.c.seq < bindparam("end"),
    )
    .order_by(ledger_entries.c.seq)
)


def _ints(values: Iterable[int]) -> str:
    return ",".join(str(int(v)) for v in values)


class Ledger:
    """Append events, read entries, compute roots and proofs, sign checkpoints."""

    def __init__(self, store: Store, signer: Signer, origin: str, clock: Clock) -> None:
        self.store = store
        self.signer = signer
        self.origin = origin
        self.clock = clock

    @property
    def verifier(self) -> VerifierKey:
        return self.signer.verifier

    # --- append --------------------------------------------------------------------------------

    def append(self, conn: Connection, event: Event) -> int:
        """Append one event inside the caller's write transaction; returns its sequence number."""
        return self.append_many(conn, [event])[0]

    def append_many(self, conn: Connection, events: Iterable[Event]) -> list[int]:
        return self.append_raw(conn, [(e.kind, e.canonical()) for e in events])

    def append_raw(self, conn: Connection, items: Sequence[tuple[str, bytes]]) -> list[int]:
        """Append canonical event bytes (kind, data); used by append_many and by benchmarks."""
        if not items:
            return []
        row = conn.execute(_HEAD_FOR_UPDATE).one()
        size = int(row.size)
        rng = head_range(size, bytes(row.frontier))
        sha = hashlib.sha256
        entries = [(size + i, kind, sha(b"\x00" + data).digest(), data) for i, (kind, data) in enumerate(items)]
        nodes = rng.extend((e[2] for e in entries), STRATUM)
        bulk_insert(conn, ledger_entries, entries)
        bulk_insert(conn, ledger_nodes, nodes)
        conn.execute(_UPDATE_HEAD, {"new_size": rng.size, "new_root": rng.root(), "new_frontier": rng.encode()})
        return list(range(size, rng.size))

    def emit(
        self,
        conn: Connection | None,
        kind: type[Event],
        *,
        actor: str,
        purpose: str,
        time: datetime | None = None,
        **fields: object,
    ) -> int:
        """Build an event of `kind` stamped now (or at `time`) and append it: inside the caller's write
        transaction when `conn` is given, else in its own. Returns its sequence number."""
        event = kind(time=time or self.clock.now(), actor=actor, purpose=purpose, **fields)
        return self.append(conn, event) if conn is not None else self.record(event)

    def record(self, event: Event) -> int:
        """Append one event in its own transaction (for operations with no other store change)."""
        with self.store.write() as conn:
            return self.append(conn, event)

    # --- reads ---------------------------------------------------------------------------------

    def head(self, conn: Connection | None = None) -> Head:
        if conn is None:
            with self.store.read() as c:
                return self.head(c)
        row = conn.execute(_HEAD).one()
        return Head(int(row.size), bytes(row.root))

    def entry(self, seq: int, conn: Connection | None = None) -> Entry:
        if conn is None:
            with self.store.read() as c:
                return self.entry(seq, c)
        row = conn.execute(select(ledger_entries).where(ledger_entries.c.seq == seq)).first()
        if row is None:
            raise NotFound(f"no ledger entry {seq}")
        return Entry(int(row.seq), row.kind, bytes(row.leaf_hash), bytes(row.data))

    def entries(
        self, start: int = 0, end: int | None = None, kind: str | None = None, chunk: int = 20000
    ) -> Iterator[Entry]:
        """Entries in sequence order, read in chunks (each chunk its own snapshot)."""
        pos = start
        while True:
            with self.store.read() as conn:
                q = select(ledger_entries).where(ledger_entries.c.seq >= pos)
                if end is not None:
                    q = q.where(ledger_entries.c.seq < end)
                if kind is not None:
                    q = q.where(ledger_entries.c.kind == kind)
                rows = conn.execute(q.order_by(ledger_entries.c.seq).limit(chunk)).all()
            for r in rows:
                yield Entry(int(r.seq), r.kind, bytes(r.leaf_hash), bytes(r.data))
            if len(rows) < chunk:
                return
            pos = int(rows[-1].seq) + 1

    def scan(
        self, conn: Connection, kinds: Sequence[str], start: int = 0, end: int | None = None
    ) -> Iterator[tuple[int, str, bytes]]:
        """(seq, kind, data) of the entries of these kinds in [start, end), in order, in the caller's
        transaction; served by the (kind, seq) index, so its cost follows the matching entries only."""
        params = {"kinds": list(kinds), "start": start, "end": (1 << 62) if end is None else end}
        for seq, kind, data in conn.execute(_SCAN, params):
            yield int(seq), str(kind), bytes(data)

    def count_by_kind(self) -> dict[str, int]:
        with self.store.read() as conn:
            rows = conn.execute(select(ledger_entries.c.kind, func.count()).group_by(ledger_entries.c.kind)).all()
        return {k: int(n) for k, n in rows}

    # --- node hashes from stratified storage -------------------------------------------------------

    def _subtree_hashes(self, conn: Connection, wanted: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Hashes of the perfect subtrees `wanted` (level, index), rebuilt from stored strata."""
        spans: dict[tuple[int, int], tuple[int, int, int]] = {}
        leaf_ranges: list[tuple[int, int]] = []
        node_ranges: dict[int, list[tuple[int, int]]] = {}
        for level, idx in set(wanted):
            base = level - level % STRATUM
            width = 1 << (level - base)
            lo, hi = idx * width, idx * width + width - 1
            spans[(level, idx)] = (base, lo, hi)
            if base == 0:
                leaf_ranges.append((lo, hi))
            else:
                node_ranges.setdefault(base, []).append((lo, hi))
        # Plain SQL over integer literals: the statement shape varies with every proof, so compiling
        # SQLAlchemy expressions would cost more than the query itself (only ints, formatted by _ints).
        have: dict[tuple[int, int], bytes] = {}
        parts = []
        if leaf_ranges:
            seqs = sorted({j for lo, hi in leaf_ranges for j in range(lo, hi + 1)})
            parts.append(f"SELECT 0, seq, leaf_hash FROM ledger_entries WHERE seq IN ({_ints(seqs)})")
        for base, ranges in node_ranges.items():
            idxs = sorted({j for lo, hi in ranges for j in range(lo, hi + 1)})
            parts.append(
                f"SELECT level, idx, hash FROM ledger_nodes WHERE level = {int(base)} AND idx IN ({_ints(idxs)})"
            )
        if parts:
            dbapi = conn.connection.dbapi_connection
            if dbapi is None:
                raise IntegrityError("the ledger's database connection is closed")
            cur = dbapi.cursor()
            try:
                cur.execute(" UNION ALL ".join(parts))
                for level, i, h in cur.fetchall():
                    have[(int(level), int(i))] = bytes(h)
            finally:
                cur.close()
        out = {}
        for key, (base, lo, hi) in spans.items():
            try:
                children = [have[(base, j)] for j in range(lo, hi + 1)]
            except KeyError:
                raise IntegrityError(f"ledger storage is missing interior data under node {key}") from None
            out[key] = merkle.subtree_root(key[0] - base, children)
        return out

    def subtree_hashes(self, level: int, start: int, end: int, conn: Connection | None = None) -> list[bytes]:
        """Hashes of the perfect subtrees at `level` with indexes [start, end) (level 0: the leaf hashes),
        from stored strata: what a C2SP tlog-tiles tile holds. The caller keeps to completed subtrees."""
        if conn is None:
            with self.store.read() as c:
                return self.subtree_hashes(level, start, end, c)
        if level < 0 or not 0 <= start <= end or (end << level) > self.head(conn).size:
            raise InvalidInput(f"no complete subtrees [{start}, {end}) at level {level} in this log")
        wanted = [(level, i) for i in range(start, end)]
        hashes = self._subtree_hashes(conn, wanted) if wanted else {}
        return [hashes[n] for n in wanted]

    def _range_hashes(self, conn: Connection, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        parts = [merkle.range_nodes(a, b) for a, b in ranges]
        hashes = self._subtree_hashes(conn, [n for p in parts for n in p])
        return [merkle.fold_range([hashes[n] for n in p]) for p in parts]

    def _check_size(self, conn: Connection, size: int | None) -> int:
        head = self.head(conn).size
        if size is None:
            return head
        if size < 0 or size > head:
            raise InvalidInput(f"tree size {size} is beyond the log's size {head}")
        return size

    def compact_range(self, size: int, conn: Connection | None = None) -> merkle.CompactRange:
        """The compact range [0, size) of the log, rebuilt from stored interior nodes and leaf hashes."""
        if conn is None:
            with self.store.read() as c:
                return self.compact_range(size, c)
        size = self._check_size(conn, size)
        if size == 0:
            return merkle.CompactRange()
        nodes = merkle.range_nodes(0, size)
        hashes = self._subtree_hashes(conn, nodes)
        return merkle.CompactRange(size, [hashes[n] for n in nodes])

    def root_at(self, size: int, conn: Connection | None = None) -> bytes:
        return self.compact_range(size, conn).root()

    def inclusion_proof(self, seq: int, size: int | None = None, conn: Connection | None = None) -> list[bytes]:
        if conn is None:
            with self.store.read() as c:
                return self.inclusion_proof(seq, size, c)
        size = self._check_size(conn, size)
        return self._range_hashes(conn, merkle.inclusion_ranges(seq, size))

    def consistency_proof(self, size1: int, size2: int | None = None, conn: Connection | None = None) -> list[bytes]:
        if conn is None:
            with self.store.read() as c:
                return self.consistency_proof(size1, size2, c)
        size2 = self._check_size(conn, size2)
        if size1 == size2:
            return []
        return self._range_hashes(conn, merkle.consistency_ranges(size1, size2))

    # --- checkpoints and witnesses -------------------------------------------------------------------

    def checkpoint(self, actor: str = "owner", covering: int = 0) -> SignedNote:
        """Sign the current head as a checkpoint, keep it, and record it in the log as a
        `ledger.checkpoint` entry. The checkpoint covers the entries before its own entry (its size is
        that entry's sequence number), so the log grows by one; with nothing appended since the last
        checkpoint, that one is returned (idempotent) unless it covers fewer than `covering` entries
        (a proof for the last checkpoint's own entry needs the next one). Verification requires a
        stored checkpoint for every such entry and an entry for every stored checkpoint."""
        with self.store.write() as conn:
            conn.execute(_HEAD_FOR_UPDATE).one()  # one checkpoint at a time; the size cannot move under us
            head = self.head(conn)
            if covering > head.size:
                raise InvalidInput(f"no checkpoint can cover {covering} entries: the log holds {head.size}")
            c = ledger_checkpoints.c
            existing = conn.execute(select(c.note).where(c.size == head.size)).scalar()
            if existing is not None:  # signed before checkpoints were recorded as entries
                return parse_note(existing)
            if head.size > covering:
                last = self.entry(head.size - 1, conn)
                if last.kind == LedgerCheckpointed.kind:
                    note_text = conn.execute(select(c.note).where(c.size == head.size - 1)).scalar()
                    if note_text is None:
                        raise IntegrityError(
                            f"the checkpoint recorded at entry {head.size - 1} is missing from the store"
                        )
                    return parse_note(note_text)
            now = self.clock.now()
            note = sign_checkpoint(Checkpoint(self.origin, head.size, head.root), self.signer)
            conn.execute(
                insert(ledger_checkpoints).values(size=head.size, root=head.root, note=note.text(), created_at=now)
            )
            digest = log_signature_digest(note, self.verifier)
            assert digest is not None
            self.append(
                conn,
                LedgerCheckpointed(
                    time=now,
                    actor=actor,
                    purpose="security",
                    size=head.size,
                    root=head.root.hex(),
                    signature_digest=digest,
                ),
            )
            return note

    def checkpoints(self) -> list[SignedNote]:
        """Every stored checkpoint with its stored cosignatures attached, by size."""
        with self.store.read() as conn:
            notes = conn.execute(select(ledger_checkpoints.c.note).order_by(ledger_checkpoints.c.size)).scalars()
            out = [parse_note(n) for n in notes]
            cos = conn.execute(select(ledger_cosignatures.c.size, ledger_cosignatures.c.line)).all()
        by_size: dict[int, list[str]] = {}
        for size, line in cos:
            by_size.setdefault(int(size), []).append(line)
        result = []
        for note in out:
            for line in by_size.get(note.checkpoint.size, []):
                extra = parse_note(note.checkpoint.body().decode() + "\n" + line).signatures[0]
                note = note.with_signature(extra)
            result.append(note)
        return result

    def latest_checkpoint(self) -> SignedNote | None:
        """The stored checkpoint of the largest size, with its stored cosignatures (reads that one note:
        the service asks for it on every tile it serves)."""
        c = ledger_checkpoints.c
        with self.store.read() as conn:
            row = conn.execute(select(c.size, c.note).order_by(c.size.desc()).limit(1)).first()
            if row is None:
                return None
            cos = ledger_cosignatures.c
            lines = conn.execute(select(cos.line).where(cos.size == row.size)).scalars().all()
        note = parse_note(row.note)
        for line in lines:
            note = note.with_signature(parse_note(note.checkpoint.body().decode() + "\n" + line).signatures[0])
        return note

    def add_witness(self, vkey: VerifierKey, when: datetime, actor: str = "owner") -> None:
        """Trust a witness: its cosignatures count toward a verification quorum (recorded)."""
        with self.store.write() as conn:
            exists = conn.execute(select(ledger_witnesses.c.name).where(ledger_witnesses.c.name == vkey.name)).first()
            if exists:
                raise AlreadyExists(f"witness {vkey.name} is already trusted")
            conn.execute(insert(ledger_witnesses).values(name=vkey.name, vkey=vkey.encode(), added_at=when))
            self.append(
                conn,
                WitnessTrusted(
                    time=when, actor=actor, purpose="security", witness=vkey.name, witness_key_id=vkey.id.hex()
                ),
            )

    def witnesses(self) -> list[VerifierKey]:
        with self.store.read() as conn:
            rows = conn.execute(select(ledger_witnesses.c.vkey).order_by(ledger_witnesses.c.name)).scalars()
            return [VerifierKey.parse(v) for v in rows]

    def store_cosignature(self, size: int, witness: VerifierKey, line: str, when: datetime) -> None:
        with self.store.write() as conn:
            note_text = conn.execute(
                select(ledger_checkpoints.c.note).where(ledger_checkpoints.c.size == size)
            ).scalar()
            if note_text is None:
                raise NotFound(f"no checkpoint at size {size}")
            note = verify_note(note_text, self.verifier)
            sig = parse_note(note.checkpoint.body().decode() + "\n" + line).signatures[0]
            if not verify_cosignature(note.checkpoint, sig, witness):
                raise IntegrityError(f"cosignature from {witness.name} does not verify")
            conn.execute(
                ledger_cosignatures.delete().where(
                    and_(ledger_cosignatures.c.size == size, ledger_cosignatures.c.witness == witness.name)
                )
            )
            conn.execute(
                insert(ledger_cosignatures).values(size=size, witness=witness.name, line=line, created_at=when)
            )
