"""A restore trusts a newer ledger's erasures only when that ledger verifies: an erasure entry hidden
at rest in the live workspace (its indexed kind changed, or its data edited) refuses the restore
instead of bringing the erased subject back."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, update

from complai.app.backup import create_backup
from complai.app.workspace import Workspace
from complai.errors import IntegrityError
from complai.store.tables import ledger_entries
from complai.vault.backup import load_backup_key, new_backup_key


@pytest.mark.parametrize("edit", ["kind", "data"])
def test_a_hidden_erasure_in_the_live_ledger_refuses_the_restore(
    customers: Workspace, tmp_path: Path, edit: str
) -> None:
    new_backup_key(tmp_path / "backup.key")
    key = load_backup_key(tmp_path / "backup.key")
    create_backup(customers.services, tmp_path / "b.bak", key, "owner")
    customers.vault.erase("C-1002", actor="owner")
    with customers.store.write() as conn:
        e = ledger_entries.c
        seq, data = conn.execute(select(e.seq, e.data).where(e.kind == "subject.erased")).one()
        if edit == "kind":
            conn.execute(update(ledger_entries).where(e.seq == seq).values(kind="vault.read"))
        else:
            conn.execute(
                update(ledger_entries)
                .where(e.seq == seq)
                .values(data=bytes(data).replace(b'"subject.erased"', b'"subject.exported"'))
            )
    with pytest.raises(IntegrityError, match="does not verify"):
        Workspace.restore_backup(tmp_path / "b.bak", tmp_path / "r", key, "owner", clock=customers.clock)
    assert not (tmp_path / "r").exists()


def test_an_erasure_edited_in_an_export_refuses_the_restore(customers: Workspace, tmp_path: Path) -> None:
    from complai.ledger.verify import export_ledger

    new_backup_key(tmp_path / "backup.key")
    key = load_backup_key(tmp_path / "backup.key")
    create_backup(customers.services, tmp_path / "b.bak", key, "owner")
    customers.vault.erase("C-1002", actor="owner")
    customers.ledger.checkpoint()
    export_ledger(customers.ledger, tmp_path / "export")
    entries = tmp_path / "export" / "entries.jsonl"
    entries.write_bytes(entries.read_bytes().replace(b'"subject.erased"', b'"subject.exported"'))
    (tmp_path / "moved").mkdir()
    customers.close()
    Path(customers.path).rename(tmp_path / "moved" / "ws")  # the live workspace cannot be consulted
    with pytest.raises(IntegrityError, match="does not verify"):
        Workspace.restore_backup(
            tmp_path / "b.bak", tmp_path / "r", key, "owner", ledger_from=tmp_path / "export", clock=customers.clock
        )
    assert not (tmp_path / "r").exists()
