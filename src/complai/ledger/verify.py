"""Verification of a whole log: from the live store, or offline from an exported directory.

Both paths replay every entry in order, recompute each leaf hash from the entry's bytes and the tree
from the leaves, and check every signed checkpoint (log signature, root at its size, consistency with
the earlier ones, which replaying one tree implies) and the witnesses' cosignatures. The store path also
checks the stored interior nodes and the head, so that a tampered cache is caught too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from complai.crypto.signing import VerifierKey
from complai.errors import IntegrityError, InvalidInput
from complai.events import WitnessTrusted
from complai.files import staged_output_dir
from complai.ledger import merkle
from complai.ledger.checkpoint import SignedNote, log_signature_digest, parse_note, verify_note, witnessed_by
from complai.ledger.log import STRATUM, Ledger, head_range
from complai.store.tables import ledger_head, ledger_nodes, ledger_witnesses


@dataclass
class VerifyReport:
    ok: bool
    size: int
    root: str
    checkpoints: int
    witnessed: int
    problem: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "size": self.size,
            "root": self.root,
            "checkpoints_checked": self.checkpoints,
            "checkpoints_witnessed": self.witnessed,
            "problem": self.problem,
            "notes": self.notes,
        }


class _Failure(Exception):
    pass


CHECKPOINT_KIND = "ledger.checkpoint"


def checkpoint_problems(
    events: Iterable[tuple[int, object]], notes: list[SignedNote], log_key: VerifierKey
) -> list[str]:
    """Checkpoint entries (seq, parsed event) against the stored checkpoints: each entry's checkpoint
    is stored, with the root and log signature it recorded, at the size it covers (its own sequence
    number); each stored checkpoint has its entry. Checkpoints older than the first entry were signed
    before checkpoints were recorded in the log and need none."""
    by_size = {n.checkpoint.size: n for n in notes}
    recorded: set[int] = set()
    first: int | None = None
    out: list[str] = []
    for seq, ev in events:
        first = seq if first is None else first
        if not isinstance(ev, dict) or not isinstance(ev.get("size"), int):
            out.append(f"checkpoint entry {seq} is malformed")
            continue
        size = int(ev["size"])
        recorded.add(size)
        if size != seq:
            out.append(f"checkpoint entry {seq} claims to cover {size} entries, not the {seq} before it")
            continue
        note = by_size.get(size)
        if note is None:
            out.append(f"checkpoint at size {size} (ledger entry {seq}) is missing from the stored checkpoints")
        elif note.checkpoint.root.hex() != ev.get("root"):
            out.append(f"checkpoint at size {size}: its root differs from the one ledger entry {seq} recorded")
        elif log_signature_digest(note, log_key) != ev.get("signature_digest"):
            out.append(f"checkpoint at size {size}: its log signature is not the one ledger entry {seq} recorded")
    for size in sorted(by_size):
        if size not in recorded and first is not None and size >= first:
            out.append(f"checkpoint at size {size} has no ledger.checkpoint entry: it was not made by this log")
    return out


def check_checkpoints(ledger: Ledger) -> list[str]:
    """checkpoint_problems for the live log (its checkpoint entries, read through the kind index)."""
    notes = ledger.checkpoints()
    with ledger.store.read() as conn:
        events = [(seq, json.loads(data)) for seq, _, data in ledger.scan(conn, [CHECKPOINT_KIND])]
    return checkpoint_problems(events, notes, ledger.verifier)


def _replay(
    entries: Iterable[tuple[int, str, bytes, bytes | None]],
    notes: list[SignedNote],
    log_key: VerifierKey,
    witnesses: list[VerifierKey],
    quorum: int,
    on_node: Callable[[int, int, bytes], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[merkle.CompactRange, int]:
    """Replay entries (seq, kind, data, stored leaf hash or None) into the tree's compact range; raise
    _Failure at the first problem. Returns the range and the number of witnessed checkpoints."""
    by_size: dict[int, SignedNote] = {}
    for note in notes:
        try:
            verify_note(note.text(), log_key)
        except IntegrityError as exc:
            raise _Failure(str(exc)) from None
        if note.checkpoint.origin != notes[0].checkpoint.origin:
            raise _Failure(f"checkpoint at size {note.checkpoint.size} names another log origin")
        by_size[note.checkpoint.size] = note
    witnessed = sum(1 for note in by_size.values() if witnessed_by(note, witnesses))
    latest = max(by_size) if by_size else None
    if quorum and latest is None:  # a quorum of cosignatures on nothing is not met
        raise _Failure(f"no checkpoint to carry the {quorum} witness cosignature(s) required")
    if quorum and latest is not None:
        names = witnessed_by(by_size[latest], witnesses)
        if len(names) < quorum:
            raise _Failure(
                f"latest checkpoint (size {latest}) has {len(names)} valid witness cosignature(s), {quorum} required"
            )
    tree = merkle.CompactRange()
    expected = 0

    def check_checkpoint(size: int) -> None:
        note = by_size.get(size)
        if note is not None and tree.root() != note.checkpoint.root:
            raise _Failure(f"checkpoint at size {size}: signed root differs from the root of the entries")

    check_checkpoint(0)
    recorded: list[tuple[int, object]] = []
    for seq, kind, data, stored in entries:
        if seq != expected:
            what = "missing" if seq > expected else "duplicated or out of order"
            raise _Failure(f"entry {expected}: {what} (next entry found is {seq})")
        lh = merkle.leaf_hash(data)
        if stored is not None and stored != lh:
            raise _Failure(f"entry {seq}: stored leaf hash does not match its data")
        try:
            obj = json.loads(data)
            event_kind = obj.get("type") if isinstance(obj, dict) else None
        except (ValueError, RecursionError):
            event_kind = None
        if event_kind != kind:
            raise _Failure(f"entry {seq}: recorded type {kind!r} does not match the event's own type")
        if kind == CHECKPOINT_KIND:
            recorded.append((seq, obj))
        for level, idx, h in tree.append(lh, STRATUM):
            if on_node is not None:
                on_node(level, idx, h)
        expected += 1
        check_checkpoint(expected)
        if progress is not None and expected % 10000 == 0:
            progress(expected)
    for size in by_size:
        if size > expected:
            raise _Failure(f"checkpoint at size {size} covers entries that are not in the log (log has {expected})")
    problems = checkpoint_problems(recorded, notes, log_key)
    if problems:
        raise _Failure(problems[0])
    return tree, witnessed


def _witness_problem(ledger: Ledger, trusted: dict[str, str]) -> str | None:
    """The trusted witnesses stored must be exactly those the ledger trusted, each with its key: one
    removed or replaced at rest would let a rewritten history verify without its cosignatures."""
    with ledger.store.read() as conn:
        stored = {str(n): str(v) for n, v in conn.execute(select(ledger_witnesses.c.name, ledger_witnesses.c.vkey))}
    for name in sorted(set(trusted) | set(stored)):
        if name not in stored:
            return f"witness {name}: trusted by the ledger, but missing from the store"
        if name not in trusted:
            return f"witness {name}: trusted in the store, but the ledger never trusted it"
        try:
            vkey = VerifierKey.parse(stored[name])
        except (ValueError, IntegrityError, InvalidInput):
            vkey = None
        if vkey is None or vkey.name != name or vkey.id.hex() != trusted[name]:
            return f"witness {name}: its stored key is not the one the ledger trusted"
    return None


def verify_ledger(ledger: Ledger, quorum: int = 0, progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Check the live log: entries, interior nodes, head, checkpoints and cosignatures."""
    notes = ledger.checkpoints()
    witnesses = ledger.witnesses()
    with ledger.store.read() as conn:
        stored_nodes = {
            (int(lvl), int(idx)): bytes(h)
            for lvl, idx, h in conn.execute(select(ledger_nodes.c.level, ledger_nodes.c.idx, ledger_nodes.c.hash))
        }
        head = conn.execute(select(ledger_head).where(ledger_head.c.id == 1)).one()
    seen: set[tuple[int, int]] = set()

    def on_node(level: int, idx: int, h: bytes) -> None:
        got = stored_nodes.get((level, idx))
        if got != h:
            raise _Failure(f"interior node (level {level}, index {idx}) is {'missing' if got is None else 'altered'}")
        seen.add((level, idx))

    # witness name -> key id, as the ledger's witness_trusted entries name them ("": the log key's id,
    # as workspace.created recorded it)
    trusted: dict[str, str] = {}

    def rows() -> Iterator[tuple[int, str, bytes, bytes | None]]:
        for e in ledger.entries():
            if e.seq == 0:
                try:
                    created = json.loads(bytes(e.data))
                    if created.get("type") == "workspace.created":
                        trusted[""] = str(created.get("ledger_key_id"))
                except (ValueError, TypeError, AttributeError):
                    pass
            if e.kind == WitnessTrusted.kind:
                try:
                    ev = json.loads(bytes(e.data))
                    trusted[str(ev["witness"])] = str(ev["witness_key_id"])
                except (ValueError, KeyError, TypeError):
                    pass  # the replay names an entry that is not a valid event
            yield e.seq, e.kind, e.data, e.leaf_hash

    size = 0
    root = merkle.EMPTY_ROOT
    try:
        tree, witnessed = _replay(rows(), notes, ledger.verifier, witnesses, quorum, on_node, progress)
        size, root = tree.size, tree.root()
        extra = set(stored_nodes) - seen
        if extra:
            lvl, idx = min(extra)
            raise _Failure(f"interior node (level {lvl}, index {idx}) does not belong to the log")
        if int(head.size) != size:
            raise _Failure(f"log head says size {head.size} but the log holds {size} entries")
        log_key_id = trusted.pop("", None)
        if log_key_id is not None and log_key_id != ledger.verifier.id.hex():
            raise _Failure("the log key (keys/ledger.key) is not the one the workspace was created with")
        problem = _witness_problem(ledger, trusted)
        if problem:
            raise _Failure(problem)
        if bytes(head.root) != root:
            raise _Failure("log head root differs from the root of the entries")
        try:
            if head_range(size, bytes(head.frontier)) != tree:
                raise _Failure("log head compact range differs from the entries")
        except IntegrityError as exc:
            raise _Failure(str(exc)) from None
    except _Failure as exc:
        return VerifyReport(False, size, root.hex(), len(notes), 0, str(exc))
    return VerifyReport(True, size, root.hex(), len(notes), witnessed)


@dataclass(frozen=True)
class RangeReport:
    """The outcome of verifying the entries appended since a size whose root was already checked."""

    ok: bool
    size: int
    problem: str | None = None


def verify_range(ledger: Ledger, since: int, base_root: bytes) -> RangeReport:
    """Verify the entries [since, head) in time proportional to their number: the stored subtrees that
    make up the first `since` entries fold to `base_root` (the root an earlier verification saw at that
    size), and extending that compact range with the hash of every entry since (recomputed from the
    entries' bytes) gives the head's root. So the earlier tree is a prefix of today's and the new entries
    are exactly what the head commits to. Entries before `since` are the earlier verification's."""
    head = ledger.head()
    try:
        if since > head.size:
            raise IntegrityError(f"the ledger is shorter ({head.size}) than at the last audit ({since})")
        tree = ledger.compact_range(since)
        if tree.root() != base_root:
            raise IntegrityError("the entries the last audit covered no longer fold to the root it recorded")
        tree.extend(merkle.leaf_hash(e.data) for e in ledger.entries(since, head.size))
        if tree.root() != head.root:
            raise IntegrityError("the entries added since the last audit do not produce the ledger's head root")
    except (IntegrityError, ValueError) as exc:
        return RangeReport(False, head.size, f"since entry {since}: {exc}")
    return RangeReport(True, head.size)


# --- export for outside auditors ---------------------------------------------------------------------

ENTRIES_FILE = "entries.jsonl"
MANIFEST_FILE = "manifest.json"


def export_ledger(
    ledger: Ledger,
    target: Path,
    progress: Callable[[int], None] | None = None,
    forbidden: Iterable[Path] = (),
) -> dict[str, object]:
    """Write entries (one canonical event per line: exactly the leaf data), checkpoints and public keys
    into a new or empty folder; the folder appears only once the export is complete."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise InvalidInput(f"{target} exists and is not a directory; choose an empty or new directory")
    if target.is_dir() and not target.is_symlink() and any(target.iterdir()):
        raise InvalidInput(f"export directory {target} is not empty")
    with staged_output_dir(target, forbidden=forbidden) as directory:
        return _export_into(ledger, directory, progress)


def _export_into(ledger: Ledger, directory: Path, progress: Callable[[int], None] | None) -> dict[str, object]:
    (directory / "checkpoints").mkdir(parents=True, exist_ok=True)
    (directory / "keys").mkdir(exist_ok=True)
    h = hashlib.sha256()
    count = 0
    with open(directory / ENTRIES_FILE, "wb") as fh:
        for e in ledger.entries():
            if b"\n" in e.data:
                raise IntegrityError(f"entry {e.seq} is not canonical JSON")
            line = e.data + b"\n"
            fh.write(line)
            h.update(line)
            count += 1
            if progress is not None and count % 10000 == 0:
                progress(count)
    notes = ledger.checkpoints()
    for note in notes:
        (directory / "checkpoints" / f"{note.checkpoint.size:012d}.note").write_text(note.text())
    (directory / "keys" / "log.vkey").write_text(ledger.verifier.encode() + "\n")
    (directory / "keys" / "witnesses.vkeys").write_text("".join(w.encode() + "\n" for w in ledger.witnesses()))
    head = ledger.head()
    manifest = {
        "format": "complai-ledger-export/1",
        "origin": ledger.origin,
        "size": count,
        "root": base64.b64encode(head.root).decode() if head.size == count else None,
        "entries_sha256": h.hexdigest(),
        "checkpoints": len(notes),
        "hash": "RFC 9162 SHA-256; leaf data = one line of entries.jsonl without its newline",
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    # private like the folder that holds them, whatever the umask (the owner decides what to publish)
    for folder, dirs, files in os.walk(directory):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o700)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o600)
    return manifest


def verify_export(directory: Path, quorum: int = 0) -> VerifyReport:
    """Verify an exported log with nothing but its files (no workspace, no database)."""
    directory = Path(directory)
    try:
        log_key = VerifierKey.parse((directory / "keys" / "log.vkey").read_text())
        wfile = directory / "keys" / "witnesses.vkeys"
        witnesses = (
            [VerifierKey.parse(x) for x in wfile.read_text().splitlines() if x.strip()] if wfile.exists() else []
        )
        notes = [parse_note(p.read_text()) for p in sorted((directory / "checkpoints").glob("*.note"))]
        entries_path = directory / ENTRIES_FILE
        if not entries_path.is_file():
            raise InvalidInput(f"{ENTRIES_FILE} is missing or not a regular file")
    except UnicodeDecodeError:  # a key or checkpoint note that is not text
        raise InvalidInput(f"{directory} is not a complete ledger export: a key or checkpoint is not text") from None
    except (OSError, InvalidInput, IntegrityError) as exc:
        raise InvalidInput(f"{directory} is not a complete ledger export: {exc}") from None

    def rows() -> Iterator[tuple[int, str, bytes, bytes | None]]:
        with open(entries_path, "rb") as fh:
            for seq, line in enumerate(fh):
                if not line.endswith(b"\n"):
                    raise _Failure(f"entry {seq}: truncated line")
                data = line[:-1]
                try:
                    kind = json.loads(data).get("type", "")
                except (ValueError, AttributeError, RecursionError):
                    raise _Failure(f"entry {seq}: not a JSON event") from None
                yield seq, kind, data, None

    notes.sort(key=lambda n: n.checkpoint.size)
    try:
        tree, witnessed = _replay(rows(), notes, log_key, witnesses, quorum)
    except _Failure as exc:
        return VerifyReport(False, 0, "", len(notes), 0, str(exc))
    size = tree.size
    report = VerifyReport(True, size, tree.root().hex(), len(notes), witnessed)
    if not notes:
        report.notes.append("no signed checkpoint in the export: the entries are self-consistent but unanchored")
    elif notes[-1].checkpoint.size < size:
        report.notes.append(
            f"{size - notes[-1].checkpoint.size} entries after the latest checkpoint are not yet signed"
        )
    return report
