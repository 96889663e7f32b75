"""Encrypted backups: no plaintext, integrity checked before anything is written, erasures never undone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from complai.app.backup import create_backup
from complai.app.workspace import Workspace
from complai.errors import IntegrityError, InvalidInput, NotFound
from complai.events import decode_event
from complai.ledger.verify import export_ledger, verify_ledger
from complai.vault.backup import load_backup_key, new_backup_key
from tests.vault.conftest import PEOPLE
from tests.vault.test_vault import SECRETS


def ids(ws: Workspace) -> set[str]:
    return set(ws.session("owner", "customer_support").read("customers")["customer_id"])


def test_backup_has_no_plaintext_and_restores(
    customers: Workspace, key: bytes, tmp_path: Path, another_database_url: str | None
) -> None:
    result = create_backup(customers.services, tmp_path / "b.bak", key, "owner")
    blob = (tmp_path / "b.bak").read_bytes()
    for secret in SECRETS:
        assert secret.encode() not in blob
    assert result["tables"]["records"] == 4
    out = Workspace.restore_backup(
        tmp_path / "b.bak",
        tmp_path / "restored",
        key,
        "owner",
        database_url=another_database_url,
        clock=customers.clock,
    )
    assert out["erasures_reapplied"] == 0 and out["later_ledger_checked"]
    with Workspace.open(tmp_path / "restored", clock=customers.clock) as restored:
        assert ids(restored) == {p[0] for p in PEOPLE}
        assert restored.settings.workspace_id == customers.settings.workspace_id
        assert verify_ledger(restored.ledger).ok
        kinds = [e.kind for e in restored.ledger.entries()]
        assert kinds[-3:] == ["backup.restored", "retention.swept", "vault.read"]
        restored_event = decode_event(restored.ledger.entry(len(kinds) - 3).data)
        assert restored_event.erasures_reapplied == 0  # type: ignore[attr-defined]
        # the restored workspace keeps working: new subjects get new ids
        restored.vault.ingest("customers", [{"customer_id": "C-2000", "full_name": "New Person"}], actor="owner")
        assert "C-2000" in ids(restored)


def test_erasure_after_the_backup_is_reapplied(customers: Workspace, key: bytes, tmp_path: Path) -> None:
    create_backup(customers.services, tmp_path / "b.bak", key, "owner")
    customers.vault.erase("C-1002", actor="owner")
    out = Workspace.restore_backup(
        tmp_path / "b.bak", tmp_path / "r1", key, "owner", clock=customers.clock
    )  # path in manifest
    assert out["erasures_reapplied"] == 1
    with Workspace.open(tmp_path / "r1", clock=customers.clock) as r:
        assert "C-1002" not in ids(r)
        with pytest.raises(NotFound):
            r.vault.export("C-1002", actor="owner")
    # the same from an exported ledger instead of the live workspace
    export_ledger(customers.ledger, tmp_path / "export")
    out = Workspace.restore_backup(
        tmp_path / "b.bak", tmp_path / "r2", key, "owner", ledger_from=tmp_path / "export", clock=customers.clock
    )
    assert out["erasures_reapplied"] == 1
    with Workspace.open(tmp_path / "r2", clock=customers.clock) as r:
        assert "C-1002" not in ids(r)


def test_a_foreign_newer_ledger_is_refused(customers: Workspace, key: bytes, tmp_path: Path) -> None:
    create_backup(customers.services, tmp_path / "b.bak", key, "owner")
    other = Workspace.init(tmp_path / "other")
    other.close()
    with pytest.raises(IntegrityError, match=r"another log key|not an extension"):
        Workspace.restore_backup(tmp_path / "b.bak", tmp_path / "r", key, "owner", ledger_from=tmp_path / "other")
    assert not (tmp_path / "r").exists()


def test_tampered_or_wrong_key_backups_are_refused_before_writing(
    customers: Workspace, key: bytes, tmp_path: Path
) -> None:
    create_backup(customers.services, tmp_path / "b.bak", key, "owner")
    blob = bytearray((tmp_path / "b.bak").read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (tmp_path / "t.bak").write_bytes(bytes(blob))
    with pytest.raises(IntegrityError):
        Workspace.restore_backup(tmp_path / "t.bak", tmp_path / "r", key, "owner")
    assert not (tmp_path / "r").exists()
    (tmp_path / "short.bak").write_bytes(bytes(blob[: len(blob) - 10]))
    with pytest.raises(IntegrityError):
        Workspace.restore_backup(tmp_path / "short.bak", tmp_path / "r", key, "owner")
    new_backup_key(tmp_path / "other.key")
    with pytest.raises(InvalidInput, match="another backup key"):
        Workspace.restore_backup(tmp_path / "b.bak", tmp_path / "r", load_backup_key(tmp_path / "other.key"), "owner")
    assert not (tmp_path / "r").exists()


def test_backup_refuses_to_overwrite_and_restore_needs_an_empty_target(
    customers: Workspace, key: bytes, tmp_path: Path
) -> None:
    create_backup(customers.services, tmp_path / "b.bak", key, "owner")
    with pytest.raises(InvalidInput, match="already exists"):
        create_backup(customers.services, tmp_path / "b.bak", key, "owner")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(InvalidInput, match="not empty"):
        Workspace.restore_backup(tmp_path / "b.bak", tmp_path / "full", key, "owner")
    header = json.loads((tmp_path / "b.bak").read_bytes()[4:].split(b"}", 1)[0] + b"}")
    assert header["workspace_id"] == customers.settings.workspace_id
    assert set(header) == {"format", "workspace_id", "created", "key_id", "cipher"}


def _state(ws: Workspace) -> tuple[int, int]:
    """Ledger size and stored checkpoints: what a backup that did not complete must leave alone."""
    return ws.ledger.head().size, len(ws.ledger.checkpoints())


def _visible_and_partial(directory: Path) -> tuple[list[str], list[str]]:
    names = sorted(p.name for p in directory.iterdir())
    return [n for n in names if "complai-partial" not in n], [n for n in names if "complai-partial" in n]


def test_failed_backup_records_nothing_and_leaves_no_file(
    customers: Workspace, key: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    import complai.files

    before = _state(customers)
    with pytest.raises(InvalidInput, match="does not exist"):
        create_backup(customers.services, tmp_path / "missing" / "b.bak", key, "owner")
    assert _state(customers) == before and not (tmp_path / "missing").exists()
    out = tmp_path / "out"
    out.mkdir()

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(complai.files.os, "fsync", full)  # the disk fills up as the backup is flushed
    with pytest.raises(InvalidInput, match="No space left"):
        create_backup(customers.services, out / "b.bak", key, "owner")
    monkeypatch.undo()
    assert _state(customers) == before
    assert list(out.iterdir()) == []
    kinds = [e.kind for e in customers.ledger.entries()]
    assert "backup.created" not in kinds
    # the same backup then succeeds, and only then is anything recorded
    create_backup(customers.services, out / "b.bak", key, "owner")
    size, checkpoints = _state(customers)
    assert size > before[0] and checkpoints == before[1] + 1
    assert [e.kind for e in customers.ledger.entries()][-1] == "backup.created"


def test_killed_backup_leaves_only_a_partial_that_the_next_run_removes(sqlite_ws: Workspace, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from complai.vault.schema import load_schema
    from tests.vault.conftest import SCHEMA, people_frame

    sqlite_ws.catalog.register(load_schema(SCHEMA, sqlite_ws.taxonomy), actor="owner")
    sqlite_ws.vault.ingest("customers", people_frame(), actor="owner")
    new_backup_key(tmp_path / "backup.key")
    key = load_backup_key(tmp_path / "backup.key")
    out = tmp_path / "backups"
    out.mkdir()
    before = _state(sqlite_ws)
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from complai.app.backup import create_backup\n"
        "from complai.vault.backup import load_backup_key\n"
        "from complai.app.workspace import Workspace\n"
        "ws = Workspace.open(sys.argv[1])\n"
        "seen = []\n"
        "def progress(table):\n"
        "    seen.append(table)\n"
        "    if len(seen) == 3:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "key = load_backup_key(Path(sys.argv[3]))\n"
        "create_backup(ws.services, Path(sys.argv[2]), key, 'owner', progress=progress)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", script, str(sqlite_ws.path), str(out / "b.bak"), str(tmp_path / "backup.key")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")},
    )
    assert r.returncode == -9, r.stderr
    visible, partial = _visible_and_partial(out)
    assert visible == [] and len(partial) == 1  # hidden, named after its dead process
    assert _state(sqlite_ws) == before
    create_backup(sqlite_ws.services, out / "b.bak", key, "owner")
    assert _visible_and_partial(out) == (["b.bak"], [])


def test_a_backup_with_the_default_key_file_is_authorised_before_the_key_is_made(
    customers: Workspace, tmp_path: Path
) -> None:
    from complai.errors import PolicyDenied

    default = customers.path / "keys" / "backup.key"
    customers.identity.add("owner", "ana", "service")
    with pytest.raises(PolicyDenied):
        customers.session("ana", "security").backup_with_key_file(tmp_path / "a.bak")
    assert not default.exists() and not (tmp_path / "a.bak").exists()
    # a failed backup removes the key it created
    (tmp_path / "taken.bak").write_bytes(b"")
    with pytest.raises(InvalidInput):
        customers.session("owner", "security").backup_with_key_file(tmp_path / "taken.bak")
    assert not default.exists()
    result, created = customers.session("owner", "security").backup_with_key_file(tmp_path / "b.bak")
    assert created == default and default.is_file() and result["file"] == str(tmp_path / "b.bak")
    again, created = customers.session("owner", "security").backup_with_key_file(tmp_path / "c.bak")
    assert created is None and again["seq"] > result["seq"]
    out = Workspace.restore_backup(tmp_path / "c.bak", tmp_path / "r", load_backup_key(default), clock=customers.clock)
    assert out["erasures_reapplied"] == 0 and out["tables"]["records"] == 4
