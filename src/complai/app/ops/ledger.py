"""Session operations: the verifiable ledger: its views, proofs, checkpoints, witnesses and export.

Reading the ledger, verifying it, proving an entry, signing a checkpoint and exporting are the auditor's
action (`audit`: no personal data involved); trusting a witness changes governance and is `admin`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from complai.app.core import SessionCore
from complai.app.tlog import Tile, TransparencyLog
from complai.crypto.signing import VerifierKey
from complai.errors import IntegrityError, InvalidInput
from complai.ledger.checkpoint import SignedNote, parse_note
from complai.ledger.log import Entry, Head
from complai.ledger.verify import VerifyReport, export_ledger, verify_ledger
from complai.ledger.witness import Witness, cosign_latest

Progress = Callable[[int, int], None]
"""Told (done, total) as a long ledger operation advances."""


@dataclass(frozen=True)
class LedgerStatus:
    """The ledger at a glance: its origin, head, log key, latest checkpoint, witnesses, entries by type."""

    origin: str
    size: int
    root: bytes
    log_key: VerifierKey
    latest_checkpoint: SignedNote | None
    witnesses: tuple[VerifierKey, ...]
    entries_by_type: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "origin": self.origin,
            "size": self.size,
            "root": self.root.hex(),
            "log_key": self.log_key.encode(),
            "latest_checkpoint": self.latest_checkpoint.checkpoint.size if self.latest_checkpoint else None,
            "witnesses": [w.name for w in self.witnesses],
            "entries_by_type": self.entries_by_type,
        }


@dataclass(frozen=True)
class InclusionProof:
    """An entry, its inclusion proof in the tree of `tree_size` entries, that tree's root, and the signed
    checkpoint at that size when there is one: what an outside party needs to check the entry."""

    entry: Entry
    tree_size: int
    proof: tuple[bytes, ...]
    root: bytes
    checkpoint: SignedNote | None
    log_key: VerifierKey

    def as_dict(self) -> dict[str, object]:
        return {
            "seq": self.entry.seq,
            "tree_size": self.tree_size,
            "leaf_hash": self.entry.leaf_hash.hex(),
            "entry": self.entry.data.decode(),
            "proof": [p.hex() for p in self.proof],
            "root": self.root.hex(),
            "checkpoint": self.checkpoint.text() if self.checkpoint else None,
            "log_key": self.log_key.encode(),
        }


@dataclass(frozen=True)
class Cosigned:
    """A witness's cosignature on the latest checkpoint; `stored` when this ledger trusts the witness
    (else the line is only handed back)."""

    witness: str
    size: int
    line: str
    stored: bool


class LedgerOps(SessionCore):
    def ledger_head(self) -> Head:
        self._check("audit")
        return self._svc.ledger.head()

    def ledger_status(self) -> LedgerStatus:
        self._check("audit")
        ledger = self._svc.ledger
        head = ledger.head()
        return LedgerStatus(
            origin=ledger.origin,
            size=head.size,
            root=head.root,
            log_key=ledger.verifier,
            latest_checkpoint=ledger.latest_checkpoint(),
            witnesses=tuple(ledger.witnesses()),
            entries_by_type=ledger.count_by_kind(),
        )

    def ledger_entries(self, start: int = 0, kind: str | None = None, limit: int = 50) -> list[Entry]:
        """At most `limit` entries from sequence number `start` on, of one event type if `kind` is given."""
        self._check("audit")
        rows: list[Entry] = []
        if limit < 1:
            return rows
        for e in self._svc.ledger.entries(start=start, kind=kind, chunk=min(limit, 5000)):
            rows.append(e)
            if len(rows) >= limit:
                break
        return rows

    def ledger_checkpoint(self) -> SignedNote:
        """Sign the head as a checkpoint (recorded in the ledger as this principal's); idempotent when
        nothing was appended since the last one."""
        self._check("audit")
        return self._svc.ledger.checkpoint(self.principal)

    def ledger_verify(self, quorum: int = 0, progress: Progress | None = None) -> VerifyReport:
        """Recompute the whole tree and check every checkpoint and, with `quorum`, its cosignatures."""
        self._check("audit")
        ledger = self._svc.ledger
        total = ledger.head().size
        if progress is not None:
            progress(0, total)
        return verify_ledger(ledger, quorum, progress=_told(progress, total))

    def ledger_prove(self, seq: int, size: int | None = None) -> InclusionProof:
        """Inclusion proof of entry `seq` in the tree of `size` entries; by default in the latest signed
        checkpoint that covers it, signing one when none does yet."""
        self._check("audit")
        ledger = self._svc.ledger
        entry = ledger.entry(seq)
        note = None
        if size is None:
            latest = ledger.latest_checkpoint()
            if latest is not None and latest.checkpoint.size > seq:
                note = latest
            else:  # a checkpoint's own entry is covered only by the next checkpoint
                note = ledger.checkpoint(self.principal, covering=seq + 1)
            size = note.checkpoint.size
        else:
            note = next((n for n in ledger.checkpoints() if n.checkpoint.size == size), None)
        if seq >= size:
            raise InvalidInput(f"entry {seq} is not in the tree of size {size}")
        proof = ledger.inclusion_proof(seq, size)
        return InclusionProof(entry, size, tuple(proof), ledger.root_at(size), note, ledger.verifier)

    def ledger_export(
        self, directory: Path, forbidden: Iterable[Path] = (), progress: Progress | None = None
    ) -> dict[str, object]:
        """Export entries, checkpoints and public keys for an outside auditor. The head is signed first,
        so that the export is signed up to its end (all but the checkpoint's own entry): what it shows
        cannot be cut short or edited without breaking a signature. Returns the export's manifest."""
        self._check("audit")
        ledger = self._svc.ledger
        ledger.checkpoint(self.principal)
        total = ledger.head().size
        if progress is not None:
            progress(0, total)
        return export_ledger(ledger, directory, progress=_told(progress, total), forbidden=forbidden)

    def ledger_witnesses(self) -> list[VerifierKey]:
        """The witnesses whose cosignatures count toward a verification quorum."""
        self._check("audit")
        return self._svc.ledger.witnesses()

    def trust_witness(self, vkey: VerifierKey) -> None:
        """Trust a witness (recorded): an admin action."""
        self._check("admin")
        self._svc.ledger.add_witness(vkey, self._svc.clock.now(), actor=self.principal)

    def witness_cosign(self, witness: Witness, timestamp: int | None = None) -> Cosigned | None:
        """Have `witness` check the latest checkpoint against what it cosigned before and cosign it (at
        `timestamp`, by default now); stored when this ledger trusts the witness. None when there is no
        checkpoint yet."""
        self._check("audit")
        ledger = self._svc.ledger
        when = int(time.time()) if timestamp is None else timestamp
        done = cosign_latest(ledger, witness, self._svc.clock.now(), when)
        if done is None:
            return None
        size, line = done
        trusted = {k.name: k for k in ledger.witnesses()}
        stored = witness.name in trusted and trusted[witness.name] == witness.verifier
        return Cosigned(witness.name, size, line, stored)

    def ledger_consistency(self, size1: int, size2: int | None = None) -> tuple[tuple[bytes, ...], bytes, bytes]:
        """RFC 9162 consistency proof from the tree of `size1` entries to that of `size2` (default: the
        head), with both roots: (proof, root1, root2)."""
        self._check("audit")
        ledger = self._svc.ledger
        head = ledger.head().size
        size2 = head if size2 is None else size2
        if not 0 < size1 <= size2 <= head:
            raise InvalidInput(f"no consistency proof from size {size1} to {size2} in a log of {head} entries")
        proof = ledger.consistency_proof(size1, size2)
        return tuple(proof), ledger.root_at(size1), ledger.root_at(size2)

    def ledger_checkpoints(self) -> list[SignedNote]:
        """Every signed checkpoint, by size, with the cosignatures stored for it."""
        self._check("audit")
        return self._svc.ledger.checkpoints()

    def ledger_entry_bundle(self, index: int, width: int = 256) -> Tile:
        """Entry bundle `index` of the ledger as a C2SP tlog-tiles log (app/tlog.py): the entries' exact
        leaf bytes, only as far as the latest checkpoint commits to them."""
        self._check("audit")
        return TransparencyLog(self._svc.ledger).entry_bundle(index, width)

    def ledger_add_cosignature(self, size: int, line: str) -> Cosigned:
        """Keep a trusted witness's cosignature line on the stored checkpoint at `size` (what a C2SP
        tlog-witness answers to add-checkpoint). Refused unless the line verifies under that witness's key."""
        self._check("audit")
        ledger = self._svc.ledger
        note = next((n for n in ledger.checkpoints() if n.checkpoint.size == size), None)
        if note is None:
            raise InvalidInput(f"no stored checkpoint at size {size}")
        text = line if line.endswith("\n") else line + "\n"
        if len(text) > 1024 or text.count("\n") != 1:
            raise InvalidInput("a cosignature is one note signature line")
        try:
            sig = parse_note(note.checkpoint.body().decode() + "\n" + text).signatures[0]
        except IntegrityError:
            raise InvalidInput("not a note signature line") from None
        trusted = {k.name: k for k in ledger.witnesses()}
        key = trusted.get(sig.name)
        if key is None:
            raise InvalidInput(f"{sig.name!r} is not a trusted witness of this ledger")
        ledger.store_cosignature(size, key, text, self._svc.clock.now())
        return Cosigned(key.name, size, text, True)


def _told(progress: Progress | None, total: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda done: progress(done, total)
