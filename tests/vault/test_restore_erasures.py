"""A restore re-applies the erasures of every newer ledger it can consult, and refuses to run blind."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from complai.errors import InvalidInput, NotFound
from complai.ledger.verify import export_ledger
from complai.vault.backup import create_backup, load_backup_key, new_backup_key
from complai.vault.schema import load_schema
from complai.workspace import Workspace
from tests.vault.conftest import SCHEMA, consents_frame, people_frame


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    new_backup_key(tmp_path / "backup.key")
    return load_backup_key(tmp_path / "backup.key")


def _ids(ws: Workspace) -> set[str]:
    return set(ws.session("owner", "customer_support").read("customers")["customer_id"])


def test_an_export_older_than_the_erasure_does_not_hide_the_live_erasure(
    customers: Workspace, key: bytes, tmp_path: Path
) -> None:
    create_backup(customers, tmp_path / "b.bak", key, "owner")
    export_ledger(customers.ledger, tmp_path / "export")  # after the backup, before the erasure
    customers.vault.erase("C-1002", actor="owner")
    out = Workspace.restore_backup(
        tmp_path / "b.bak", tmp_path / "r", key, "owner", ledger_from=tmp_path / "export", clock=customers.clock
    )
    assert out["later_ledger_checked"] and len(out["later_ledgers"]) == 2
    assert out["erasures_reapplied"] == 1
    with Workspace.open(tmp_path / "r", clock=customers.clock) as r:
        assert "C-1002" not in _ids(r)
        with pytest.raises(NotFound):
            r.vault.export("C-1002", actor="owner")


def test_erasures_from_several_exports_are_all_applied(customers: Workspace, key: bytes, tmp_path: Path) -> None:
    create_backup(customers, tmp_path / "b.bak", key, "owner")
    customers.vault.erase("C-1001", actor="owner")
    export_ledger(customers.ledger, tmp_path / "e1")
    customers.vault.erase("C-1003", actor="owner")
    export_ledger(customers.ledger, tmp_path / "e2")
    live, clock = Path(customers.path), customers.clock
    customers.close()
    shutil.rmtree(live)  # the live workspace is gone: only the exports remain
    out = Workspace.restore_backup(
        tmp_path / "b.bak", tmp_path / "r", key, "owner", ledger_from=[tmp_path / "e1", tmp_path / "e2"], clock=clock
    )
    assert out["erasures_reapplied"] == 2 and len(out["later_ledgers"]) == 2
    with Workspace.open(tmp_path / "r", clock=clock) as r:
        assert _ids(r) == {"C-1002", "C-1004"}


def test_a_restore_with_no_newer_ledger_is_refused_unless_stale_is_accepted(
    customers: Workspace, key: bytes, tmp_path: Path
) -> None:
    create_backup(customers, tmp_path / "b.bak", key, "owner")
    customers.vault.erase("C-1002", actor="owner")
    live, clock = Path(customers.path), customers.clock
    customers.close()
    shutil.rmtree(live)
    with pytest.raises(InvalidInput, match="accept-stale"):
        Workspace.restore_backup(tmp_path / "b.bak", tmp_path / "r", key, "owner")
    assert not (tmp_path / "r").exists()
    out = Workspace.restore_backup(tmp_path / "b.bak", tmp_path / "r", key, "owner", accept_stale=True, clock=clock)
    assert not out["later_ledger_checked"] and out["erasures_reapplied"] == 0
    with Workspace.open(tmp_path / "r", clock=clock) as r:
        assert "C-1002" in _ids(r)  # the risk the caller accepted, and the ledger says it was not checked
        last = [e for e in r.ledger.entries() if e.kind == "backup.restored"][-1]
        assert b'"later_ledger_checked":false' in last.data


def test_a_new_workspace_at_the_old_path_is_not_taken_for_the_source(
    customers: Workspace, key: bytes, tmp_path: Path
) -> None:
    create_backup(customers, tmp_path / "b.bak", key, "owner")
    live = Path(customers.path)
    customers.close()
    shutil.rmtree(live)
    Workspace.init(live).close()
    with pytest.raises(InvalidInput, match="accept-stale"):
        Workspace.restore_backup(tmp_path / "b.bak", tmp_path / "r", key, "owner")


def test_erased_bytes_do_not_survive_in_the_sqlite_files(sqlite_ws: Workspace) -> None:
    """The subject's wrapped data key, encrypted id and record ciphertexts are gone from the database
    file and its write-ahead log, not only unlinked from the b-tree (secure_delete, WAL truncated)."""
    ws = sqlite_ws
    ws.catalog.register(load_schema(SCHEMA, ws.taxonomy), actor="owner")
    ws.vault.ingest("customers", people_frame(), actor="owner", consents_data=consents_frame())
    db = Path(ws.path) / "complai.db"
    with closing(sqlite3.connect(db)) as raw:
        pid = raw.execute("SELECT id FROM subjects ORDER BY id LIMIT 1 OFFSET 1").fetchone()[0]
        secrets = [r[0] for r in raw.execute("SELECT wrapped FROM subject_keys WHERE subject_id = ?", (pid,))]
        secrets += [r[0] for r in raw.execute("SELECT data FROM records WHERE subject_id = ?", (pid,))]
        secrets += [r[0] for r in raw.execute("SELECT external_enc FROM subjects WHERE id = ?", (pid,))]
    assert len(secrets) == 3 and all(len(s) >= 16 for s in secrets)
    ws.vault.erase("C-1002", actor="owner")
    blob = b"".join(p.read_bytes() for p in Path(ws.path).glob("complai.db*"))
    for s in secrets:
        assert bytes(s)[:16] not in blob


def test_a_rotation_during_a_backup_never_leaves_keys_the_backup_cannot_unwrap(
    customers: Workspace, key: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key file is read after the snapshot: a rotation that retires the snapshot's KEK version in
    between must not produce a backup whose data keys nothing can unwrap."""
    from complai.vault import backup

    real = backup.read_secret
    rotated = []

    def read_after_a_rotation(path: Path, *a: object, **kw: object) -> bytes:
        if Path(path).name == "kek.json" and not rotated:
            with Workspace.open(customers.path, clock=customers.clock) as other:
                rotated.append(other.keys.rotate("owner"))
        return real(path, *a, **kw)

    monkeypatch.setattr(backup, "read_secret", read_after_a_rotation)
    create_backup(customers, tmp_path / "b.bak", key, "owner")
    assert rotated and rotated[0]["retired"] == [1]
    monkeypatch.setattr(backup, "read_secret", real)
    Workspace.restore_backup(tmp_path / "b.bak", tmp_path / "r", key, "owner", clock=customers.clock)
    with Workspace.open(tmp_path / "r", clock=customers.clock) as r:
        assert _ids(r) == {"C-1001", "C-1002", "C-1003", "C-1004"}
