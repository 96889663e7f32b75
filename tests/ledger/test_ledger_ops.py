"""The session's ledger operations: authorised, typed, and the same views the CLI prints; and the
incremental range verification the audits use."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from complai.access.identity import OWNER
from complai.app.ops.ledger import Cosigned, InclusionProof, LedgerStatus
from complai.app.workspace import Workspace
from complai.errors import InvalidInput, NotFound, PolicyDenied
from complai.events import LedgerCheckpointed
from complai.ledger import merkle
from complai.ledger.checkpoint import verify_note
from complai.ledger.verify import RangeReport, verify_export, verify_ledger, verify_range
from complai.ledger.witness import Witness
from complai.store.tables import ledger_entries
from tests.ledger.helpers import fill


@pytest.fixture
def people(sqlite_ws: Workspace) -> Workspace:
    ws = sqlite_ws
    ws.identity.add(OWNER, "aud", "service")
    ws.identity.grant_role(OWNER, "aud", "auditor")
    ws.identity.add(OWNER, "ana", "service")
    ws.identity.grant_role(OWNER, "ana", "analyst")
    fill(ws.ledger, 20)
    return ws


def _denied(ws: Workspace) -> int:
    return ws.ledger.count_by_kind().get("access.denied", 0)


def test_the_auditor_reads_the_ledger_through_typed_views(people: Workspace) -> None:
    ws = people
    s = ws.session("aud", "audit")
    head = ws.ledger.head()
    assert s.ledger_head() == head
    st = s.ledger_status()
    assert isinstance(st, LedgerStatus)
    assert (st.size, st.root, st.origin) == (head.size, head.root, ws.ledger.origin)
    assert st.latest_checkpoint is None and st.witnesses == ()
    assert st.entries_by_type == ws.ledger.count_by_kind() and st.entries_by_type["test.probe"] == 20
    d = st.as_dict()
    assert d["root"] == head.root.hex() and d["log_key"] == ws.ledger.verifier.encode()
    assert d["latest_checkpoint"] is None and d["witnesses"] == []
    shown = s.ledger_entries(start=3, kind="test.probe", limit=4)
    assert [e.kind for e in shown] == ["test.probe"] * 4 and shown[0].seq >= 3
    assert [e.seq for e in shown] == sorted(e.seq for e in shown)
    note = s.ledger_checkpoint()
    events = [e for e in ws.ledger.entries(kind=LedgerCheckpointed.kind)]
    assert len(events) == 1 and b'"actor":"aud"' in events[0].data
    assert s.ledger_checkpoint() == note  # idempotent
    assert s.ledger_status().as_dict()["latest_checkpoint"] == note.checkpoint.size
    seen: list[tuple[int, int]] = []
    report = s.ledger_verify(progress=lambda n, total: seen.append((n, total)))
    assert report.ok and seen[0] == (0, ws.ledger.head().size)


def test_ledger_operations_refuse_a_principal_without_audit_and_record_it(people: Workspace) -> None:
    ws = people
    s = ws.session("ana", "credit_scoring")
    size = ws.ledger.head().size
    for op in (
        s.ledger_head,
        s.ledger_status,
        s.ledger_entries,
        s.ledger_checkpoint,
        s.ledger_verify,
        s.ledger_witnesses,
        lambda: s.ledger_prove(1),
    ):
        before = _denied(ws)
        with pytest.raises(PolicyDenied):
            op()
        assert _denied(ws) == before + 1
    assert ws.ledger.latest_checkpoint() is None  # nothing was signed
    assert ws.ledger.count_by_kind().get("ledger.checkpoint", 0) == 0
    assert ws.ledger.head().size == size + 7  # only the refusals were recorded


def test_trusting_a_witness_is_an_admin_action(people: Workspace, tmp_path: Path) -> None:
    ws = people
    w = Witness.init(tmp_path / "w", "w.example")
    with pytest.raises(PolicyDenied):
        ws.session("aud", "audit").trust_witness(w.verifier)
    assert ws.ledger.witnesses() == []
    ws.session(OWNER, "security").trust_witness(w.verifier)
    assert ws.session("aud", "audit").ledger_witnesses() == [w.verifier]


def test_witness_cosign_stores_only_for_a_trusted_witness(people: Workspace, tmp_path: Path) -> None:
    ws = people
    s = ws.session("aud", "audit")
    trusted = Witness.init(tmp_path / "t", "trusted.example")
    stranger = Witness.init(tmp_path / "s", "stranger.example")
    ws.session(OWNER, "security").trust_witness(trusted.verifier)
    assert s.witness_cosign(trusted) is None  # no checkpoint yet
    note = s.ledger_checkpoint()
    done = s.witness_cosign(trusted, timestamp=1_760_000_000)
    assert isinstance(done, Cosigned)
    assert (done.witness, done.size, done.stored) == ("trusted.example", note.checkpoint.size, True)
    other = s.witness_cosign(stranger)
    assert other is not None and not other.stored and other.line.startswith("\u2014 stranger.example ")
    assert verify_ledger(ws.ledger, quorum=1).ok


def test_prove_signs_a_checkpoint_covering_the_entry_when_none_does(people: Workspace) -> None:
    ws = people
    s = ws.session("aud", "audit")
    size = ws.ledger.head().size
    p = s.ledger_prove(5)
    assert isinstance(p, InclusionProof) and p.checkpoint is not None
    assert p.tree_size == p.checkpoint.checkpoint.size == size  # the head when proved
    assert ws.ledger.head().size == size + 1  # and its checkpoint entry
    assert s.ledger_prove(5).checkpoint == p.checkpoint  # the covering checkpoint is reused
    merkle.verify_inclusion(5, size, ws.ledger.entry(5).leaf_hash, list(p.proof), p.checkpoint.checkpoint.root)


@pytest.mark.parametrize("entries_after", [0, 3])
def test_prove_the_newest_checkpoint_entry(people: Workspace, entries_after: int) -> None:
    """A checkpoint's own entry is not in the tree it signs: proving it signs the next checkpoint."""
    ws = people
    s = ws.session("aud", "audit")
    note = s.ledger_checkpoint()
    seq = note.checkpoint.size  # the checkpoint's own entry
    assert ws.ledger.entry(seq).kind == LedgerCheckpointed.kind
    fill(ws.ledger, entries_after)
    p = s.ledger_prove(seq)
    assert p.checkpoint is not None and p.checkpoint.checkpoint.size > seq
    signed = verify_note(p.checkpoint.text(), ws.ledger.verifier)
    d = p.as_dict()
    assert d["seq"] == seq and d["tree_size"] == signed.checkpoint.size
    leaf = merkle.leaf_hash(str(d["entry"]).encode())
    merkle.verify_inclusion(seq, p.tree_size, leaf, list(p.proof), signed.checkpoint.root)
    assert verify_ledger(ws.ledger).ok
    # and a new checkpoint is signed only when needed
    assert s.ledger_prove(seq).checkpoint == p.checkpoint


def test_prove_refuses_what_is_not_there(people: Workspace) -> None:
    s = people.session("aud", "audit")
    with pytest.raises(NotFound):
        s.ledger_prove(999)
    with pytest.raises(InvalidInput):
        s.ledger_prove(10, size=5)
    p = s.ledger_prove(3, size=10)
    assert p.checkpoint is None and p.root == people.ledger.root_at(10)


def test_export_is_signed_up_to_its_end(people: Workspace, tmp_path: Path) -> None:
    ws = people
    seen: list[tuple[int, int]] = []
    manifest = ws.session("aud", "audit").ledger_export(tmp_path / "exp", progress=lambda n, t: seen.append((n, t)))
    latest = ws.ledger.latest_checkpoint()
    assert latest is not None and manifest["size"] == latest.checkpoint.size + 1 == ws.ledger.head().size
    assert seen[0] == (0, manifest["size"])
    assert verify_export(tmp_path / "exp").ok


def test_verify_range_follows_the_head_and_catches_a_changed_entry(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    fill(ws.ledger, 37)
    base = ws.ledger.head()
    fill(ws.ledger, 29)
    assert verify_range(ws.ledger, base.size, base.root) == RangeReport(True, base.size + 29)
    assert verify_range(ws.ledger, 0, merkle.EMPTY_ROOT).ok
    wrong = verify_range(ws.ledger, base.size, merkle.leaf_hash(b"x"))
    assert not wrong.ok and "no longer fold to the root" in (wrong.problem or "")
    longer = verify_range(ws.ledger, 1000, base.root)
    assert not longer.ok and "shorter" in (longer.problem or "")
    with ws.store.write() as conn:  # an entry after `since` changed with its stored hash
        data = b'{"type":"test.probe","n":-1}'
        conn.execute(
            update(ledger_entries)
            .where(ledger_entries.c.seq == base.size + 4)
            .values(data=data, leaf_hash=merkle.leaf_hash(data))
        )
    bad = verify_range(ws.ledger, base.size, base.root)
    assert not bad.ok and bad.problem == (
        f"since entry {base.size}: the entries added since the last audit do not produce the ledger's head root"
    )


def test_ledger_compact_range_is_the_heads(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    fill(ws.ledger, 45)
    head = ws.ledger.head()
    rng = ws.ledger.compact_range(head.size)
    assert rng.size == head.size and rng.root() == head.root
    assert ws.ledger.compact_range(0) == merkle.CompactRange()
    hashes = [e.leaf_hash for e in ws.ledger.entries()]
    assert ws.ledger.compact_range(17) == merkle.CompactRange.of(hashes[:17])
