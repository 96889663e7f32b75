"""Witnesses cosign only consistent checkpoints; verification can require k of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from complai.app.workspace import Workspace
from complai.crypto.signing import ALG_COSIGNATURE_V1, Signer
from complai.errors import AlreadyExists, IntegrityError
from complai.ledger import merkle
from complai.ledger.checkpoint import Checkpoint, cosign, parse_note, sign_checkpoint, verify_cosignature
from complai.ledger.verify import verify_ledger
from complai.ledger.witness import Witness
from complai.store.tables import ledger_entries
from tests.ledger.helpers import fill, probe

T = 1_760_000_000


def witness_round(ws: Workspace, w: Witness) -> None:
    note = ws.ledger.latest_checkpoint()
    assert note is not None
    last = w.last_cosigned(note.checkpoint.origin)
    proof = ws.ledger.consistency_proof(last[0], note.checkpoint.size) if last else []
    sig = w.cosign(note.text(), ws.ledger.verifier, proof, T)
    ws.ledger.store_cosignature(note.checkpoint.size, w.verifier, sig.line(), ws.clock.now())


def test_witness_cosigns_consistent_checkpoints(sqlite_ws: Workspace, tmp_path: Path) -> None:
    ws = sqlite_ws
    w1, w2 = Witness.init(tmp_path / "w1", "w1.example"), Witness.init(tmp_path / "w2", "w2.example")
    with pytest.raises(AlreadyExists):
        Witness.init(tmp_path / "w1", "again")
    for w in (w1, w2):
        ws.ledger.add_witness(w.verifier, ws.clock.now())
    fill(ws.ledger, 10)
    ws.ledger.checkpoint()
    witness_round(ws, w1)
    assert verify_ledger(ws.ledger, quorum=1).ok
    report = verify_ledger(ws.ledger, quorum=2)
    assert not report.ok and "1 valid witness cosignature(s), 2 required" in (report.problem or "")
    witness_round(ws, w2)
    fill(ws.ledger, 25)
    ws.ledger.checkpoint()
    witness_round(ws, w1)
    witness_round(ws, w2)
    report = verify_ledger(ws.ledger, quorum=2)
    assert report.ok and report.witnessed == 2
    # the witness's state survives a restart
    latest = ws.ledger.latest_checkpoint()
    assert latest is not None
    assert Witness(tmp_path / "w1").last_cosigned(ws.ledger.origin) == (latest.checkpoint.size, latest.checkpoint.root)


def test_witness_refuses_a_rewritten_history(sqlite_ws: Workspace, tmp_path: Path) -> None:
    ws = sqlite_ws
    w = Witness.init(tmp_path / "w", "w.example")
    fill(ws.ledger, 10)
    ws.ledger.checkpoint()
    witness_round(ws, w)
    honest_root = ws.ledger.root_at(11)  # the checkpoint covers the 11 entries before its own
    # the operator rewrites entry 3 (consistently: data + hash), appends and signs a new checkpoint
    d = probe(777).canonical()
    with ws.store.write() as conn:
        conn.execute(
            update(ledger_entries).where(ledger_entries.c.seq == 3).values(data=d, leaf_hash=merkle.leaf_hash(d))
        )
    leaves = [e.leaf_hash for e in ws.ledger.entries()]
    forged = sign_checkpoint(Checkpoint(ws.ledger.origin, len(leaves), merkle.root_of(leaves)), ws.ledger.signer)
    proof = merkle.consistency_proof(11, leaves)
    with pytest.raises(IntegrityError, match="not consistent"):
        w.cosign(forged.text(), ws.ledger.verifier, proof, T)
    assert w.last_cosigned(ws.ledger.origin) == (11, honest_root)  # nothing signed, state unchanged


def test_witness_refuses_rollback_and_foreign_signatures(sqlite_ws: Workspace, tmp_path: Path) -> None:
    ws = sqlite_ws
    w = Witness.init(tmp_path / "w", "w.example")
    fill(ws.ledger, 10)
    small = ws.ledger.checkpoint()
    fill(ws.ledger, 5)
    ws.ledger.checkpoint()
    witness_round(ws, w)
    with pytest.raises(IntegrityError, match="smaller than the cosigned"):
        w.cosign(small.text(), ws.ledger.verifier, [], T)
    impostor = Signer.generate(ws.ledger.origin)
    fake = sign_checkpoint(Checkpoint(ws.ledger.origin, 99, b"\x00" * 32), impostor)
    with pytest.raises(IntegrityError, match="not signed by the log key"):
        w.cosign(fake.text(), ws.ledger.verifier, [], T)


def test_cosignature_format_and_tampering() -> None:
    signer = Signer.generate("witness.example/w1", ALG_COSIGNATURE_V1)
    cp = Checkpoint("example.com/log", 5, b"\x01" * 32)
    sig = cosign(cp, signer, T)
    assert len(sig.key_id) == 4 and len(sig.blob) == 8 + 64
    assert int.from_bytes(sig.blob[:8], "big") == T
    assert verify_cosignature(cp, sig, signer.verifier)
    assert not verify_cosignature(Checkpoint("example.com/log", 6, cp.root), sig, signer.verifier)
    tampered_time = type(sig)(sig.name, sig.key_id, (T + 1).to_bytes(8, "big") + sig.blob[8:])
    assert not verify_cosignature(cp, tampered_time, signer.verifier)
    parsed = parse_note(cp.body().decode() + "\n" + sig.line())
    assert parsed.signatures[0] == sig
