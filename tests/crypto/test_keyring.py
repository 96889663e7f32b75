from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.crypto.keyring import FileKeyProvider, Keyring
from complai.errors import IntegrityError

ADD_SUBJECT = "INSERT INTO subjects (id, pseudonym, created_at) VALUES ({}, 'sp:{}', '2026-01-01 00:00:00')"


def test_key_file_is_private_and_versions_rotate(tmp_path: Path) -> None:
    clock = ManualClock()
    p = FileKeyProvider.create(tmp_path, clock)
    assert stat.S_IMODE((tmp_path / "kek.json").stat().st_mode) == 0o600
    v1, blob = p.wrap(b"k" * 32, b"ad")
    assert v1 == 1
    assert p.add_version() == 2
    assert stat.S_IMODE((tmp_path / "kek.json").stat().st_mode) == 0o600
    assert p.unwrap(1, blob, b"ad") == b"k" * 32  # old wraps still open
    p2 = FileKeyProvider(tmp_path, clock)  # persisted
    assert p2.current_version() == 2 and p2.unwrap(1, blob, b"ad") == b"k" * 32
    p2.retire(1)
    with pytest.raises(IntegrityError, match="version 1 is not available"):
        FileKeyProvider(tmp_path, clock).unwrap(1, blob, b"ad")
    with pytest.raises(ValueError):
        p2.retire(2)
    assert "key" not in json.dumps(p2.versions())


def test_wrapping_binds_subject_and_version(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ring = ws.keyring
    with ws.store.write() as conn:
        conn.exec_driver_sql(ADD_SUBJECT.format(1, "a"))
        conn.exec_driver_sql(ADD_SUBJECT.format(2, "b"))
        ring.create(conn, [1, 2])
        # swap the wrapped keys of two subjects: unwrapping must fail
        a = conn.exec_driver_sql("SELECT wrapped FROM subject_keys WHERE subject_id=1").scalar()
        b = conn.exec_driver_sql("SELECT wrapped FROM subject_keys WHERE subject_id=2").scalar()
        conn.exec_driver_sql("UPDATE subject_keys SET wrapped=? WHERE subject_id=1", (b,))
        conn.exec_driver_sql("UPDATE subject_keys SET wrapped=? WHERE subject_id=2", (a,))
        with pytest.raises(IntegrityError):
            ring.load(conn, [1])


def test_wear_out_moves_to_a_fresh_data_key(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ring = Keyring(ws.keyring.provider, ws.clock, max_encryptions=10)
    with ws.store.write() as conn:
        conn.exec_driver_sql(ADD_SUBJECT.format(1, "a"))
        ring.create(conn, [1], sealed={1: 4})
        v, _ = ring.for_sealing(conn, {1: 5})[1]
        assert v == 1  # 4 + 5 <= 10
        v, _ = ring.for_sealing(conn, {1: 5})[1]
        assert v == 2  # 9 + 5 > 10: a new version
        assert set(ring.load(conn, [1])[1]) == {1, 2}
        rows = conn.exec_driver_sql("SELECT version, encryptions FROM subject_keys ORDER BY version").all()
        assert [tuple(r) for r in rows] == [(1, 9), (2, 5)]
