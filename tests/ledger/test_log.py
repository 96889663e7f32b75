"""The persistent log on every backend: roots and proofs from stratified storage equal the math."""

from __future__ import annotations

import pytest

from complai.app.workspace import Workspace
from complai.errors import InvalidInput, NotFound
from complai.ledger import merkle
from complai.ledger.checkpoint import verify_note
from tests.ledger.helpers import fill, probe


def all_leaf_hashes(ws: Workspace) -> list[bytes]:
    return [e.leaf_hash for e in ws.ledger.entries()]


def test_append_returns_sequence_numbers_and_leaf_hashes_match_data(ws: Workspace) -> None:
    with ws.store.write() as conn:
        seqs = ws.ledger.append_many(conn, [probe(i) for i in range(5)])
    assert seqs == [1, 2, 3, 4, 5]
    for e in ws.ledger.entries():
        assert e.leaf_hash == merkle.leaf_hash(e.data)
    with pytest.raises(NotFound):
        ws.ledger.entry(99)


def test_roots_and_proofs_at_every_size_across_strata(ws: Workspace) -> None:
    """Sizes 1..70 cross the stored strata at 16 and 64 leaves; every proof equals the in-memory one."""
    fill(ws.ledger, 69, batch=7)
    hs = all_leaf_hashes(ws)
    assert len(hs) == 70
    assert ws.ledger.head().root == merkle.root_of(hs)
    for size in range(1, 71):
        root = ws.ledger.root_at(size)
        assert root == merkle.root_of(hs[:size])
        for i in {0, size // 3, size // 2, size - 1}:
            proof = ws.ledger.inclusion_proof(i, size)
            assert proof == merkle.inclusion_proof(i, hs[:size])
            merkle.verify_inclusion(i, size, hs[i], proof, root)
        for old in {1, size // 2 or 1, size - 1 or 1}:
            proof = ws.ledger.consistency_proof(old, size)
            if old < size:
                assert proof == merkle.consistency_proof(old, hs[:size])
            merkle.verify_consistency(old, size, ws.ledger.root_at(old), root, proof)


def test_larger_log_proofs(ws: Workspace) -> None:
    fill(ws.ledger, 5000)
    hs = all_leaf_hashes(ws)
    root = ws.ledger.head().root
    assert root == merkle.root_of(hs)
    for i in (0, 1, 255, 256, 4095, 4096, 5000):
        merkle.verify_inclusion(i, len(hs), hs[i], ws.ledger.inclusion_proof(i), root)
    merkle.verify_consistency(4096, 5001, ws.ledger.root_at(4096), root, ws.ledger.consistency_proof(4096))


def test_proof_arguments_out_of_range(ws: Workspace) -> None:
    with pytest.raises(InvalidInput):
        ws.ledger.inclusion_proof(5)
    with pytest.raises(InvalidInput):
        ws.ledger.inclusion_proof(0, 7)
    with pytest.raises(InvalidInput):
        ws.ledger.consistency_proof(0, 1)


def test_failed_transaction_appends_nothing(ws: Workspace) -> None:
    head = ws.ledger.head()
    with pytest.raises(RuntimeError), ws.store.write() as conn:
        ws.ledger.append(conn, probe(1))
        raise RuntimeError("the operation failed after its event was appended")
    assert ws.ledger.head() == head
    assert len(list(ws.ledger.entries())) == head.size


def test_checkpoints_are_signed_notes_and_idempotent(ws: Workspace) -> None:
    fill(ws.ledger, 10)
    note = ws.ledger.checkpoint()
    # it covers the 11 entries before its own ledger.checkpoint entry
    assert note.checkpoint.size == 11 and note.checkpoint.root == ws.ledger.root_at(11)
    assert ws.ledger.head().size == 12 and ws.ledger.entry(11).kind == "ledger.checkpoint"
    assert note.checkpoint.origin == ws.settings.ledger_origin
    verify_note(note.text(), ws.ledger.verifier)
    assert ws.ledger.checkpoint().text() == note.text()  # nothing since: the same one, no new entry
    assert [n.checkpoint.size for n in ws.ledger.checkpoints()] == [11] and ws.ledger.head().size == 12


def test_filter_entries_by_kind(ws: Workspace) -> None:
    fill(ws.ledger, 3)
    assert [e.kind for e in ws.ledger.entries(kind="test.probe")] == ["test.probe"] * 3
    assert ws.ledger.count_by_kind() == {"workspace.created": 1, "test.probe": 3}
