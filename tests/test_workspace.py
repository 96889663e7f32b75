from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import text

from complai import AlreadyExists, InvalidInput, Workspace, WorkspaceError
from complai.events import decode_event
from complai.store import Store


def snapshot(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_init_creates_keys_with_private_modes(sqlite_ws: Workspace) -> None:
    keys = sqlite_ws.path / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for f in keys.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name


def test_init_records_workspace_created(ws: Workspace) -> None:
    head = ws.ledger.head()
    assert head.size == 1
    event = decode_event(ws.ledger.entry(0).data)
    assert event.kind == "workspace.created"
    assert event.workspace_id == ws.settings.workspace_id  # type: ignore[attr-defined]


def test_second_init_refuses_and_changes_nothing(sqlite_ws: Workspace) -> None:
    sqlite_ws.close()
    before = snapshot(sqlite_ws.path)
    with pytest.raises(AlreadyExists):
        Workspace.init(sqlite_ws.path)
    assert snapshot(sqlite_ws.path) == before


def test_init_into_non_empty_directory_refuses(tmp_path: Path) -> None:
    (tmp_path / "something.txt").write_text("x")
    with pytest.raises(InvalidInput):
        Workspace.init(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["something.txt"]


def test_failed_init_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "ws"
    with pytest.raises(WorkspaceError):
        Workspace.init(target, database_url="postgresql://nobody@127.0.0.1:1/none")
    assert not target.exists()


def test_open_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="no complai workspace"):
        Workspace.open(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "complai.toml").write_text("[[[")
    with pytest.raises(WorkspaceError, match="not valid TOML"):
        Workspace.open(bad)


def test_open_with_garbage_database_is_a_clear_error(sqlite_ws: Workspace) -> None:
    sqlite_ws.close()
    db = sqlite_ws.path / "complai.db"
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    db.write_bytes(os.urandom(4096))
    with pytest.raises(WorkspaceError, match=r"cannot open database .*not a database"):
        Workspace.open(sqlite_ws.path)


def test_open_with_empty_database_refuses(sqlite_ws: Workspace) -> None:
    sqlite_ws.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(sqlite_ws.path / "complai.db") + suffix).unlink(missing_ok=True)
    with pytest.raises(WorkspaceError, match="no complai schema"):
        Workspace.open(sqlite_ws.path)


def test_key_file_readable_by_others_is_refused(sqlite_ws: Workspace) -> None:
    sqlite_ws.close()
    os.chmod(sqlite_ws.path / "keys" / "ledger.key", 0o644)
    with pytest.raises(WorkspaceError, match="readable by others"):
        Workspace.open(sqlite_ws.path)


def test_database_of_another_workspace_is_refused(tmp_path: Path) -> None:
    a = Workspace.init(tmp_path / "a")
    b = Workspace.init(tmp_path / "b")
    a.close()
    b.close()
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(tmp_path / "b" / "complai.db") + suffix)
        dst = Path(str(tmp_path / "a" / "complai.db") + suffix)
        dst.unlink(missing_ok=True)
        if src.exists():
            dst.write_bytes(src.read_bytes())
    with pytest.raises(WorkspaceError, match="another workspace"):
        Workspace.open(tmp_path / "a")


def test_init_refuses_a_database_already_in_use(tmp_path: Path, backend: str, database_url: str | None) -> None:
    if backend == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = Workspace.init(tmp_path / "one", database_url=database_url)
    first.close()
    with pytest.raises(AlreadyExists, match="already holds"):
        Workspace.init(tmp_path / "two", database_url=database_url)
    assert not (tmp_path / "two").exists()


def test_older_schema_is_upgraded_and_recorded(tmp_path: Path, backend: str, database_url: str | None) -> None:
    """A workspace whose database stopped at revision 0001 opens, is upgraded, and the ledger says so."""
    ws = Workspace.init(tmp_path / "ws", database_url=database_url)
    wid = ws.settings.workspace_id
    url = ws.store.url
    ws.close()
    store = Store(url)
    with store.write() as conn:  # roll the schema back to the first revision, keeping meta
        from alembic import command

        command.downgrade(store._alembic(conn), "0001")
        assert store.current_revision(conn) == "0001"
        assert conn.execute(text("SELECT value FROM meta WHERE key='workspace_id'")).scalar() == wid
    store.dispose()
    with Workspace.open(tmp_path / "ws") as reopened:
        assert reopened.status().schema_revision == Store.head_revision()
        last = decode_event(reopened.ledger.entry(reopened.ledger.head().size - 1).data)
        assert last.kind == "store.migrated"
        assert last.from_revision == "0001"  # type: ignore[attr-defined]


def test_newer_unknown_schema_is_refused(sqlite_ws: Workspace) -> None:
    with sqlite_ws.store.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    sqlite_ws.close()
    with pytest.raises(WorkspaceError, match="unknown to this complai"):
        Workspace.open(sqlite_ws.path)


def test_status_counts(ws: Workspace) -> None:
    st = ws.status()
    assert st.ledger_size == 1 and st.datasets == 0 and st.checkpoints == 0
    assert st.schema_revision == Store.head_revision()
