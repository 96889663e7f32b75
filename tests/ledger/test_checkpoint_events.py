"""Checkpoints are ledger events: each signed checkpoint is recorded as a `ledger.checkpoint` entry
covering the entries before it, so deleting stored checkpoints (all of them, or one) fails
`ledger verify`, LEDGER-1 and the reconciliation, and a stored checkpoint without its entry is foreign."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import delete, insert

from complai.app.ops.compliance import compliance_services
from complai.app.workspace import Workspace
from complai.compliance import engine
from complai.compliance.reconcile import reconcile_checkpoints
from complai.errors import IntegrityError
from complai.ledger.checkpoint import Checkpoint, log_signature_digest, sign_checkpoint
from complai.ledger.verify import export_ledger, verify_export, verify_ledger
from complai.store.tables import ledger_checkpoints
from tests.ledger.helpers import fill


@pytest.fixture
def checkpointed(ws: Workspace) -> Workspace:
    fill(ws.ledger, 5)
    ws.ledger.checkpoint()  # size 6, entry 6
    fill(ws.ledger, 5)
    ws.ledger.checkpoint()  # size 12, entry 12
    assert verify_ledger(ws.ledger).ok
    return ws


def test_each_checkpoint_is_an_entry_covering_the_entries_before_it(checkpointed: Workspace) -> None:
    ledger = checkpointed.ledger
    for note in ledger.checkpoints():
        size = note.checkpoint.size
        entry = ledger.entry(size)
        event = json.loads(entry.data)
        assert entry.kind == "ledger.checkpoint" and event["size"] == size
        assert event["root"] == ledger.root_at(size).hex() == note.checkpoint.root.hex()
        assert event["signature_digest"] == log_signature_digest(note, ledger.verifier)
    assert [n.checkpoint.size for n in ledger.checkpoints()] == [6, 12] and ledger.head().size == 13
    assert (
        reconcile_checkpoints(engine.AuditContext(compliance_services(checkpointed.services), checkpointed.clock.now()))
        == []
    )


@pytest.mark.parametrize("sizes", [None, [6]], ids=["every checkpoint", "one checkpoint"])
def test_deleted_checkpoints_fail_verify_ledger1_and_reconciliation(
    checkpointed: Workspace, sizes: list[int] | None
) -> None:
    ws = checkpointed
    with ws.store.write() as conn:
        q = delete(ledger_checkpoints)
        conn.execute(q if sizes is None else q.where(ledger_checkpoints.c.size.in_(sizes)))
    report = verify_ledger(ws.ledger)
    assert not report.ok
    assert report.problem == "checkpoint at size 6 (ledger entry 6) is missing from the stored checkpoints"
    ctx = engine.AuditContext(compliance_services(ws.services), ws.clock.now())
    finding = engine.ledger_integrity(ctx)
    assert finding.status == engine.FAIL
    assert any("checkpoint at size 6" in i["problem"] for i in finding.items)
    # an incremental audit (which does not replay the old entries) still sees it
    incremental = engine.AuditContext(
        compliance_services(ws.services), ws.clock.now(), since=ws.ledger.head().size, base_root=ws.ledger.head().root
    )
    assert any("checkpoint at size 6" in i["problem"] for i in engine.ledger_integrity(incremental).items)
    assert "checkpoint at size 6 (ledger entry 6) is missing from the stored checkpoints" in reconcile_checkpoints(ctx)
    # and a new checkpoint cannot paper over a missing last one
    if sizes is None:
        with pytest.raises(IntegrityError, match="missing from the store"):
            ws.ledger.checkpoint()


def test_cli_verify_fails_when_checkpoints_are_deleted(checkpointed: Workspace) -> None:
    cmd = [sys.executable, "-m", "complai.cli.main", "--workspace", str(checkpointed.path), "ledger", "verify"]
    with checkpointed.store.write() as conn:
        conn.execute(delete(ledger_checkpoints))
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert out.returncode == 1, out.stdout
    assert "checkpoint at size 6 (ledger entry 6) is missing" in out.stderr and "Traceback" not in out.stderr


def test_a_stored_checkpoint_without_its_entry_is_refused(checkpointed: Workspace) -> None:
    ws = checkpointed
    fill(ws.ledger, 2)
    head = ws.ledger.head()
    # signed by the log key, but not made by the checkpoint operation: nothing in the log records it
    note = sign_checkpoint(Checkpoint(ws.ledger.origin, head.size, head.root), ws.ledger.signer)
    with ws.store.write() as conn:
        conn.execute(
            insert(ledger_checkpoints).values(
                size=head.size, root=head.root, note=note.text(), created_at=ws.clock.now()
            )
        )
    report = verify_ledger(ws.ledger)
    assert not report.ok and f"checkpoint at size {head.size} has no ledger.checkpoint entry" in (report.problem or "")


def test_checkpoints_signed_before_they_were_recorded_still_verify(ws: Workspace) -> None:
    fill(ws.ledger, 3)
    head = ws.ledger.head()
    legacy = sign_checkpoint(Checkpoint(ws.ledger.origin, head.size, head.root), ws.ledger.signer)
    with ws.store.write() as conn:
        conn.execute(
            insert(ledger_checkpoints).values(
                size=head.size, root=head.root, note=legacy.text(), created_at=ws.clock.now()
            )
        )
    assert ws.ledger.checkpoint().text() == legacy.text()  # still idempotent for its size
    fill(ws.ledger, 3)
    ws.ledger.checkpoint()
    report = verify_ledger(ws.ledger)
    assert report.ok and report.checkpoints == 2, report.problem


def test_export_without_a_checkpoint_file_fails(checkpointed: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "export"
    export_ledger(checkpointed.ledger, out)
    assert verify_export(out).ok
    (out / "checkpoints" / f"{12:012d}.note").unlink()
    report = verify_export(out)
    assert not report.ok and "checkpoint at size 12 (ledger entry 12) is missing" in (report.problem or "")
