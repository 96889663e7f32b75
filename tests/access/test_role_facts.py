"""A principal's roles are read from the ledger incrementally (access/authz.py RoleFacts): a grant or a
revocation recorded later, here or by another process, counts at once; a role granted at rest counts for
nothing; a rewound ledger is read again from the start; and a read reads only what was appended since."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select

from complai.access import authz
from complai.app.workspace import Workspace
from complai.store.tables import ledger_entries, role_grants


@pytest.fixture
def other(ws: Workspace) -> Iterator[Workspace]:
    """A second process's view: the same workspace opened again."""
    w = Workspace.open(Path(ws.path))
    try:
        yield w
    finally:
        w.close()


def roles(ws: Workspace, name: str) -> tuple[str, ...]:
    with ws.store.read() as conn:
        return authz.read_principal(ws.ledger, conn, name).roles


def test_grants_and_revocations_made_elsewhere_count_at_once(ws: Workspace, other: Workspace) -> None:
    ws.session("owner", "security").add_principal("ana", "human")
    assert roles(ws, "ana") == ()
    other.session("owner", "security").grant_role("ana", "auditor")
    assert roles(ws, "ana") == ("auditor",)
    other.session("owner", "security").grant_role("ana", "analyst")
    other.session("owner", "security").revoke_role("ana", "auditor")
    assert roles(ws, "ana") == ("analyst",)
    other.session("owner", "security").disable_principal("ana")
    with ws.store.read() as conn:
        assert authz.read_principal(ws.ledger, conn, "ana").disabled
    assert roles(ws, "owner") == ("owner",)


def test_a_role_granted_at_rest_counts_for_nothing(ws: Workspace) -> None:
    ws.session("owner", "security").add_principal("eve", "human")
    assert roles(ws, "eve") == ()
    with ws.store.write() as conn:
        conn.execute(
            insert(role_grants).values(principal="eve", role="owner", granted_by="owner", granted_at=ws.clock.now())
        )
    assert roles(ws, "eve") == ()


def test_a_read_reads_only_the_entries_appended_since(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    sec = ws.session("owner", "security")
    for i in range(20):
        sec.add_principal(f"p{i}", "service")
        sec.grant_role(f"p{i}", "analyst")
    roles(ws, "p0")  # read up to here
    seen: list[int] = []
    real = ws.ledger.scan

    def counted(conn: Any, kinds: Any, start: int = 0, end: int | None = None) -> Iterator[tuple[int, str, bytes]]:
        for item in real(conn, kinds, start, end):
            seen.append(item[0])
            yield item

    monkeypatch.setattr(ws.ledger, "scan", counted)
    sec.revoke_role("p3", "analyst")
    assert roles(ws, "p3") == () and roles(ws, "p4") == ("analyst",)
    assert len(seen) == 1  # the revocation alone, not the twenty grants before it


def test_a_rewound_ledger_is_read_again(ws: Workspace) -> None:
    sec = ws.session("owner", "security")
    sec.add_principal("bob", "human")
    sec.grant_role("bob", "auditor")
    assert roles(ws, "bob") == ("auditor",)
    with ws.store.write() as conn:  # the grant's entry (the last) gone, as after a restore to before it
        last = conn.execute(select(func.max(ledger_entries.c.seq))).scalar_one()
        conn.execute(delete(ledger_entries).where(ledger_entries.c.seq == last))
    assert roles(ws, "bob") == ()
