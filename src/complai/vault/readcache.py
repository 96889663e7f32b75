"""The opened records a long-running process keeps between governed reads (`complai serve`): a DP count
or a page of a dataset then costs a look at the ledger, not a decryption of every record.

What a purpose may see of a dataset changes in two ways only, and the cache follows both:

- **Something happens** (an ingest, a rectification, an erasure, a restriction, an objection, a consent
  granted or withdrawn, a retention sweep, a key rotation, a schema change, a restore). Each of these
  appends its event to the ledger in the same transaction as the change. Before every read, the cache
  looks at the ledger entries appended since it last looked (in the read's own snapshot) and drops
  everything it holds when one of them is of any kind but the few known to leave records, subjects,
  consents and objections alone (`UNCHANGING`): an unknown kind drops it too. A ledger that no longer
  holds the entry the cache last saw (a restore to an earlier state) drops it as well.
- **Time passes**: a record expires, a consent or an objection starts or ends at a time already stored.
  An entry is kept only until the first such moment after it was filled (and not before it was filled,
  for a clock set back).

Plaintext is held in this process's memory only: at most `max_records` records in all (the least
recently used entry goes first); an entry unused for `idle_s` seconds is dropped at the next look, and
one older than `max_age_s` is filled again at its next use (every fill authenticates each record, so a
ciphertext edited at rest is found by the reads within that time, as it would be without the cache).
An erasure anywhere drops every entry at the next look of every process (`complai serve` looks every
few seconds even when idle), so an erased subject's values leave memory within that time as well.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import Connection, select

from complai.store.tables import ledger_entries

# event kinds that change no record, subject, consent, objection, key or schema: a read, a DP answer,
# governance of principals and tokens, evidence. Any other kind (a new one included) empties the cache.
UNCHANGING = frozenset(
    {
        "vault.read",
        "dp.query",
        "dp.spent",
        "dp.budget_set",
        "ledger.checkpoint",
        "ledger.witness_trusted",
        "token.created",
        "token.revoked",
        "token.lifetime_set",
        "auth.refused",
        "access.denied",
        "principal.added",
        "principal.disabled",
        "role.changed",
        "policy.changed",
        "agreement.changed",
        "data.shared",
        "deid.table",
        "deid.text",
        "deid.text_column",
        "deid.anonymity_checked",
        "deid.detokenized",
        "model.trained",
        "model.audited",
        "federated.update_sent",
        "federated.round",
        "compliance.audited",
        "subject.exported",
        "backup.created",
        "incident.opened",
        "incident.updated",
        "dpia.recorded",
        "portal.submitted",
        "request.opened",
    }
)


class Opened(NamedTuple):
    """One eligible record, opened: its identity and its values in the current schema's order."""

    rid: bytes
    subject_id: int
    pseudonym: str
    created_us: int
    values: list[Any]


@dataclass
class Entry:
    """What one purpose may see of one dataset, opened, as of `generation`."""

    rows: list[Opened]
    """in the order the store returned them"""
    externals: dict[int, str]
    """subject id -> external id (the dataset's subject column)"""
    total: int
    filled_us: int
    valid_until_us: int
    generation: int
    schema_version: int = 0
    """the dataset's schema version the entry was opened under (a read under another never uses it)"""
    used: float = field(default_factory=time.monotonic)
    born: float = field(default_factory=time.monotonic)
    _ordered: list[Opened] | None = None
    arrays: dict[tuple[bool, str], Any] = field(default_factory=dict)
    """(ordered, column) -> the column's typed array over all rows in that order, built at first use"""
    _subjects: dict[str, int] | None = None

    def subjects(self) -> dict[str, int]:
        """pseudonym -> subject id of every row's subject (a copy of a map built at first use)."""
        if self._subjects is None:
            self._subjects = {r.pseudonym: r.subject_id for r in self.rows}
        return dict(self._subjects)

    def ordered(self) -> list[Opened]:
        """The rows by when each record was stored, then its id (as a paged read orders them)."""
        if self._ordered is None:
            self._ordered = sorted(self.rows, key=lambda r: (r.created_us, r.rid))
        return self._ordered


class Look(NamedTuple):
    """The outcome of looking at the ledger before a read."""

    generation: int
    may_fill: bool
    """false when another look emptied the cache after this read started (its snapshot may be older)"""


class ReadCache:
    def __init__(self, max_records: int, idle_s: float = 300.0, max_age_s: float = 600.0) -> None:
        if max_records < 1:
            raise ValueError("a read cache holds at least one record")
        self.max_records, self.idle_s, self.max_age_s = max_records, idle_s, max_age_s
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], Entry] = OrderedDict()
        self._held = 0
        self._generation = 0
        self._seen: tuple[int, bytes] | None = None  # the last ledger entry looked at: (seq, leaf hash)
        self._filling: dict[tuple[str, str], threading.Event] = {}  # entries being filled, by whom waited on
        self.hits = self.fills = self.drops = 0

    # --- looking at the ledger ---------------------------------------------------------------------

    def before_read(self) -> tuple[int, tuple[int, bytes] | None]:
        """Call before the read's transaction takes its snapshot: the point to look from. A snapshot
        taken after this sees every entry the point names (it was seen in an earlier snapshot)."""
        with self._lock:
            return self._generation, self._seen

    def look(self, conn: Connection, start: tuple[int, tuple[int, bytes] | None], now_us: int | None = None) -> Look:
        """Read the ledger entries appended since `start` in `conn`'s snapshot; empty the cache if one of
        them may have changed what a purpose sees, or if the ledger was rewound. This read may fill an
        entry only if no other look emptied the cache since `start`: that look's snapshot may hold a
        change this one does not."""
        generation, seen = start
        e = ledger_entries.c
        if seen is None:
            last = conn.execute(select(e.seq, e.leaf_hash).order_by(e.seq.desc()).limit(1)).first()
            with self._lock:
                current = self._generation == generation
                if last is not None and self._seen is None:
                    self._seen = (int(last.seq), bytes(last.leaf_hash))
                    self._clear()  # nothing was looked at before: hold nothing from before either
                return Look(self._generation, current and last is not None)
        rows = conn.execute(select(e.seq, e.kind, e.leaf_hash).where(e.seq >= seen[0]).order_by(e.seq)).all()
        with self._lock:
            current = self._generation == generation
            if not rows or int(rows[0].seq) != seen[0] or bytes(rows[0].leaf_hash) != seen[1]:
                # the entry last looked at is gone or different: a restored (rewound) ledger
                self._clear()
                self._seen = None
                return Look(self._generation, False)
            if any(r.kind not in UNCHANGING for r in rows[1:]):
                self._clear()
            end = (int(rows[-1].seq), bytes(rows[-1].leaf_hash))
            if self._seen is None or end[0] > self._seen[0]:
                self._seen = end
            self._sweep(time.monotonic(), now_us)
            return Look(self._generation, current)

    # --- entries -----------------------------------------------------------------------------------

    def get(self, dataset: str, purpose: str, now_us: int, look: Look, schema_version: int) -> Entry | None:
        with self._lock:
            entry = self._entries.get((dataset, purpose))
            if entry is None or entry.generation != self._generation or look.generation != self._generation:
                return None
            if entry.schema_version != schema_version:
                self._drop((dataset, purpose))
                return None
            # refilled every max_age_s even in constant use: each fill authenticates every record again,
            # so an edit at rest is found by the reads within that time, as without the cache
            if not entry.filled_us <= now_us < entry.valid_until_us or time.monotonic() - entry.born > self.max_age_s:
                self._drop((dataset, purpose))
                return None
            entry.used = time.monotonic()
            self._entries.move_to_end((dataset, purpose))
            self.hits += 1
            return entry

    def put(self, dataset: str, purpose: str, entry: Entry, look: Look) -> None:
        if len(entry.rows) > self.max_records:
            return
        with self._lock:
            if not look.may_fill or look.generation != self._generation:
                return  # filled from a snapshot older than the cache's last emptying
            self._drop((dataset, purpose))
            while self._entries and self._held + len(entry.rows) > self.max_records:
                self._drop(next(iter(self._entries)))
            self._entries[(dataset, purpose)] = entry
            self._held += len(entry.rows)
            self.fills += 1

    def claim(self, dataset: str, purpose: str) -> threading.Event | None:
        """None when the caller is now the one filling this entry (it must `release` it); otherwise the
        event the caller may wait on, set when the read filling it is done (filled or failed)."""
        with self._lock:
            busy = self._filling.get((dataset, purpose))
            if busy is None:
                self._filling[(dataset, purpose)] = threading.Event()
            return busy

    def release(self, dataset: str, purpose: str) -> None:
        with self._lock:
            done = self._filling.pop((dataset, purpose), None)
        if done is not None:
            done.set()

    def clear(self) -> None:
        with self._lock:
            self._clear()

    def sweep(self, now_us: int | None = None) -> None:
        """Drop the entries unused for `idle_s`, and those no longer valid at `now_us`."""
        with self._lock:
            self._sweep(time.monotonic(), now_us)

    @property
    def held(self) -> int:
        """Records held now, in all entries."""
        return self._held

    def _sweep(self, now: float, now_us: int | None = None) -> None:
        def stale(e: Entry) -> bool:
            late = now_us is not None and not e.filled_us <= now_us < e.valid_until_us
            return late or now - e.used > self.idle_s

        for key in [k for k, e in self._entries.items() if stale(e)]:
            self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._held -= len(entry.rows)
            self.drops += 1

    def _clear(self) -> None:
        self._generation += 1
        self.drops += len(self._entries)
        self._entries.clear()
        self._held = 0
