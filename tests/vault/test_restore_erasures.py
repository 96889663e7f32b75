"""A restore re-applies the erasures of every newer ledger it can consult, and refuses to run blind."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from complai.app.backup import create_backup
from complai.app.workspace import Workspace
from complai.errors import InvalidInput, NotFound
from complai.ledger.verify import export_ledger
from complai.vault.schema import load_schema
from tests.vault.conftest import SCHEMA, consents_frame, people_frame
from tests.vault.test_backup import ids


def test_an_export_older_than_the_erasure_does_not_hide_the_live_erasure(
    customers: Workspace, key: bytes, tmp_path: Path
) -> None:
    create_backup(customers.services, tmp_path / "b.bak", key, "owner")
    export_ledger(customers.ledger, tmp_path / "export")  # after the backup, before the erasure
    customers.vault.erase("C-1002", actor="owner")
    out = Workspace.restore_backup(
        tmp_path / "b.bak", tmp_path / "r", key, "owner", ledger_from=tmp_path / "export", clock=customers.clock
    )
    assert out["later_ledger_checked"] and len(out["ledgers_consulted"]) == 2
    assert out["later_ledgers"] == [str(customers.path)]  # the export, unsigned past the backup, vouches for nothing
    assert out["erasures_reapplied"] == 1
    with Workspace.open(tmp_path / "r", clock=customers.clock) as r:
        assert "C-1002" not in ids(r)
        with pytest.raises(NotFound):
            r.vault.export("C-1002", actor="owner")


def test_erasures_from_several_exports_are_all_applied(customers: Workspace, key: bytes, tmp_path: Path) -> None:
    create_backup(customers.services, tmp_path / "b.bak", key, "owner")
    customers.vault.erase("C-1001", actor="owner")
    customers.ledger.checkpoint()  # as `complai ledger export` does: the export is signed to its end
    export_ledger(customers.ledger, tmp_path / "e1")
    customers.vault.erase("C-1003", actor="owner")
    customers.ledger.checkpoint()
    export_ledger(customers.ledger, tmp_path / "e2")
    live, clock = Path(customers.path), customers.clock
    customers.close()
    shutil.rmtree(live)  # the live workspace is gone: only the exports remain
    out = Workspace.restore_backup(
        tmp_path / "b.bak", tmp_path / "r", key, "owner", ledger_from=[tmp_path / "e1", tmp_path / "e2"], clock=clock
    )
    assert out["erasures_reapplied"] == 2 and len(out["later_ledgers"]) == 2
    with Workspace.open(tmp_path / "r", clock=clock) as r:
        assert ids(r) == {"C-1002", "C-1004"}


def test_a_restore_with_no_newer_ledger_is_refused_unless_stale_is_accepted(
    customers: Workspace, key: bytes, tmp_path: Path
) -> None:
    create_backup(customers.services, tmp_path / "b.bak", key, "owner")
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
        assert "C-1002" in ids(r)  # the risk the caller accepted, and the ledger says it was not checked
        last = [e for e in r.ledger.entries() if e.kind == "backup.restored"][-1]
        assert b'"later_ledger_checked":false' in last.data


def test_a_new_workspace_at_the_old_path_is_not_taken_for_the_source(
    customers: Workspace, key: bytes, tmp_path: Path
) -> None:
    create_backup(customers.services, tmp_path / "b.bak", key, "owner")
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
    create_backup(customers.services, tmp_path / "b.bak", key, "owner")
    assert rotated and rotated[0]["retired"] == [1]
    monkeypatch.setattr(backup, "read_secret", real)
    Workspace.restore_backup(tmp_path / "b.bak", tmp_path / "r", key, "owner", clock=customers.clock)
    with Workspace.open(tmp_path / "r", clock=customers.clock) as r:
        assert ids(r) == {"C-1001", "C-1002", "C-1003", "C-1004"}


def test_a_ledger_no_longer_than_the_backup_does_not_vouch_for_later_erasures(
    customers: Workspace, key: bytes, tmp_path: Path
) -> None:
    export_ledger(customers.ledger, tmp_path / "same-age")  # taken just before the backup: it knows nothing later
    create_backup(customers.services, tmp_path / "b.bak", key, "owner")
    customers.vault.erase("C-1002", actor="owner")
    live, clock = Path(customers.path), customers.clock
    customers.close()
    shutil.rmtree(live)
    with pytest.raises(InvalidInput, match="none of the ledgers given is newer"):
        Workspace.restore_backup(
            tmp_path / "b.bak", tmp_path / "r", key, "owner", ledger_from=tmp_path / "same-age", clock=clock
        )
    assert not (tmp_path / "r").exists()


def test_a_workspace_restored_blind_does_not_vouch_for_later_erasures(
    customers: Workspace, key: bytes, tmp_path: Path
) -> None:
    """Restored with --accept-stale at the original path, the workspace looks like the live one; it must
    not make a later restore believe the erasures since the backup were checked."""
    create_backup(customers.services, tmp_path / "b.bak", key, "owner")
    customers.vault.erase("C-1002", actor="owner")
    live, clock = Path(customers.path), customers.clock
    customers.close()
    shutil.rmtree(live)
    Workspace.restore_backup(tmp_path / "b.bak", live, key, "owner", accept_stale=True, clock=clock)
    with pytest.raises(InvalidInput, match="restored without its later erasures"):
        Workspace.restore_backup(tmp_path / "b.bak", tmp_path / "r", key, "owner", clock=clock)


def test_an_export_signed_with_another_key_or_edited_is_refused(
    customers: Workspace, key: bytes, tmp_path: Path
) -> None:
    from complai.errors import IntegrityError

    create_backup(customers.services, tmp_path / "b.bak", key, "owner")
    customers.vault.erase("C-1002", actor="owner")
    customers.ledger.checkpoint()
    export_ledger(customers.ledger, tmp_path / "e")
    live, clock = Path(customers.path), customers.clock
    customers.close()
    shutil.rmtree(live)
    entries = tmp_path / "e" / "entries.jsonl"
    lines = entries.read_bytes().splitlines(keepends=True)
    erasure = next(i for i, line in enumerate(lines) if b'"subject.erased"' in line)
    edited = lines[erasure].replace(b'"type":"subject.erased"', b'"type":"subject.erasex"')
    entries.write_bytes(b"".join([*lines[:erasure], edited, *lines[erasure + 1 :]]))
    with pytest.raises(IntegrityError, match="does not verify"):
        Workspace.restore_backup(tmp_path / "b.bak", tmp_path / "r", key, "owner", ledger_from=tmp_path / "e")
    entries.write_bytes(b"".join(lines))
    (tmp_path / "e" / "keys" / "log.vkey").write_text("someone+else+0123abcd+AQIDBAUGBwgJCgsMDQ4PEA==\n")
    with pytest.raises(IntegrityError, match="another log key"):
        Workspace.restore_backup(tmp_path / "b.bak", tmp_path / "r", key, "owner", ledger_from=tmp_path / "e")
    assert not (tmp_path / "r").exists()
    assert clock is not None


def test_a_killed_restore_never_leaves_a_workspace_holding_an_erased_subject(
    customers: Workspace, key: bytes, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys
    import time

    create_backup(customers.services, tmp_path / "b.bak", key, "owner")
    customers.vault.erase("C-1002", actor="owner")
    (tmp_path / "backup.key").chmod(0o600)
    script = (
        "import sys\\nfrom pathlib import Path\\nfrom complai.vault.backup import load_backup_key\\n"
        "from complai.app.workspace import Workspace\\n"
        "Workspace.restore_backup(Path(sys.argv[1]), Path(sys.argv[2]), load_backup_key(Path(sys.argv[3])), 'owner')\\n"
    )
    target = tmp_path / "out" / "r"
    target.parent.mkdir()
    for delay in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0):
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "b.bak"), str(target), str(tmp_path / "backup.key")]
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if target.exists():  # the restore finished: then the erasure was re-applied
            with Workspace.open(target) as r:
                assert "C-1002" not in {
                    row for row in r.session("owner", "customer_support").read("customers")["customer_id"]
                }
            shutil.rmtree(target)
        # whatever was left is hidden beside the target, private, and not a workspace anyone opens by name
        for left in target.parent.iterdir():
            assert left.name.startswith(".r.complai-partial."), left
            assert oct(left.stat().st_mode & 0o777) == "0o700"
    out = Workspace.restore_backup(tmp_path / "b.bak", target, key, "owner", clock=customers.clock)
    assert out["erasures_reapplied"] == 1
    assert [p.name for p in target.parent.iterdir()] == ["r"]  # the next restore cleared the partials


def test_an_export_cut_short_or_unsigned_past_the_backup_does_not_vouch(
    customers: Workspace, key: bytes, tmp_path: Path
) -> None:
    from complai.errors import IntegrityError

    create_backup(customers.services, tmp_path / "b.bak", key, "owner")
    customers.vault.erase("C-1001", actor="owner")
    customers.vault.erase("C-1002", actor="owner")
    export_ledger(customers.ledger, tmp_path / "unsigned")  # no checkpoint after the erasures
    customers.ledger.checkpoint()
    export_ledger(customers.ledger, tmp_path / "signed")
    live, clock = Path(customers.path), customers.clock
    customers.close()
    shutil.rmtree(live)
    with pytest.raises(InvalidInput, match="no signed checkpoint after the backup"):
        Workspace.restore_backup(tmp_path / "b.bak", tmp_path / "r", key, "owner", ledger_from=tmp_path / "unsigned")
    # the last erasure cut off the signed export, manifest left as it was: refused
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "signed", cut)
    lines = (cut / "entries.jsonl").read_bytes().splitlines(keepends=True)
    (cut / "entries.jsonl").write_bytes(b"".join(lines[:-1]))
    with pytest.raises(IntegrityError):
        Workspace.restore_backup(tmp_path / "b.bak", tmp_path / "r", key, "owner", ledger_from=cut)
    assert not (tmp_path / "r").exists()
    out = Workspace.restore_backup(
        tmp_path / "b.bak", tmp_path / "r", key, "owner", ledger_from=tmp_path / "signed", clock=clock
    )
    assert out["erasures_reapplied"] == 2 and out["later_ledger_checked"]
