"""The trusted witnesses are those the ledger's `ledger.witness_trusted` entries name: a witness removed
or replaced at rest (which would let a rewritten history verify without its cosignatures) fails
`ledger verify`."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete, insert, update

from complai.app.workspace import Workspace
from complai.ledger.verify import verify_ledger
from complai.ledger.witness import Witness
from complai.store.tables import ledger_witnesses


def test_witnesses_edited_at_rest_fail_verification(sqlite_ws: Workspace, tmp_path: Path) -> None:
    ws = sqlite_ws
    w = Witness.init(tmp_path / "w", "w.example")
    other = Witness.init(tmp_path / "x", "x.example")
    ws.ledger.add_witness(w.verifier, ws.clock.now())
    ws.ledger.checkpoint()
    assert verify_ledger(ws.ledger).ok
    with ws.store.write() as conn:
        conn.execute(delete(ledger_witnesses))
    report = verify_ledger(ws.ledger)
    assert not report.ok and "witness w.example: trusted by the ledger, but missing" in (report.problem or "")
    with ws.store.write() as conn:  # the same name, another key (one the attacker holds)
        conn.execute(
            insert(ledger_witnesses).values(name="w.example", vkey=other.verifier.encode(), added_at=ws.clock.now())
        )
    report = verify_ledger(ws.ledger)
    assert not report.ok and "witness w.example: its stored key is not the one the ledger trusted" in (
        report.problem or ""
    )
    with ws.store.write() as conn:
        conn.execute(update(ledger_witnesses).values(vkey=w.verifier.encode()))
        conn.execute(
            insert(ledger_witnesses).values(name="x.example", vkey=other.verifier.encode(), added_at=ws.clock.now())
        )
    report = verify_ledger(ws.ledger)
    assert not report.ok and "witness x.example: trusted in the store, but the ledger never trusted it" in (
        report.problem or ""
    )


def test_a_replaced_log_key_fails_verification(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    assert verify_ledger(ws.ledger).ok
    ws.close()
    (ws.path / "keys" / "ledger.key").write_bytes(bytes(range(32)))
    with Workspace.open(ws.path, clock=ws.clock) as again:
        report = verify_ledger(again.ledger)
    assert not report.ok and "the log key (keys/ledger.key) is not the one the workspace was created with" in (
        report.problem or ""
    )


def test_a_witness_quorum_is_not_met_without_any_checkpoint(tmp_path: Path) -> None:
    from complai.ledger.verify import verify_ledger

    with Workspace.init(tmp_path / "fresh") as fresh:
        assert verify_ledger(fresh.ledger).ok
        report = verify_ledger(fresh.ledger, quorum=1)
        assert not report.ok and "no checkpoint" in report.problem
