"""Token authentication reads the ledger's record of tokens incrementally (access/identity.py
TokenFacts): what another process records later still counts, rows changed at rest are still refused,
and an authentication reads only the entries appended since the last one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from complai.app.workspace import Workspace
from complai.errors import AuthenticationFailed
from complai.store.tables import principals, tokens


@pytest.fixture
def other(ws: Workspace) -> Iterator[Workspace]:
    """A second process's view: the same workspace opened again."""
    w = Workspace.open(Path(ws.path))
    try:
        yield w
    finally:
        w.close()


def test_a_token_created_elsewhere_after_the_first_check_authenticates(ws: Workspace, other: Workspace) -> None:
    first = ws.session("owner", "security").create_token("owner", "P1D")
    ws.authenticate(first.token)  # facts read up to here
    later = other.session("owner", "security").create_token("owner", "P1D")
    assert ws.authenticate(later.token).principal.name == "owner"


def test_a_revocation_recorded_elsewhere_holds_even_if_undone_at_rest(ws: Workspace, other: Workspace) -> None:
    sec = ws.session("owner", "security")
    sec.add_principal("svc", "service")
    issued = sec.create_token("svc", "P1D")
    ws.authenticate(issued.token)
    other.session("owner", "security").revoke_token(issued.id)
    with other.store.write() as conn:  # the revocation undone at rest, behind the ledger's back
        conn.execute(update(tokens).where(tokens.c.id == issued.id).values(revoked_at=None))
    with pytest.raises(AuthenticationFailed):
        ws.authenticate(issued.token)


def test_a_principal_disabled_elsewhere_stays_disabled(ws: Workspace, other: Workspace) -> None:
    sec = ws.session("owner", "security")
    sec.add_principal("svc", "service")
    issued = sec.create_token("svc", "P1D")
    ws.authenticate(issued.token)
    other.session("owner", "security").disable_principal("svc")
    with other.store.write() as conn:  # re-enabled and its token revived at rest
        conn.execute(update(principals).where(principals.c.name == "svc").values(disabled_at=None))
        conn.execute(update(tokens).where(tokens.c.id == issued.id).values(revoked_at=None))
    with pytest.raises(AuthenticationFailed):
        ws.authenticate(issued.token)


def test_a_token_row_made_at_rest_never_authenticates(ws: Workspace) -> None:
    issued = ws.session("owner", "security").create_token("owner", "P1D")
    ws.authenticate(issued.token)
    with ws.store.write() as conn:  # a copy of the row under another id: the ledger never recorded it
        row = conn.execute(tokens.select().where(tokens.c.id == issued.id)).one()
        conn.execute(tokens.insert().values({**row._mapping, "id": "0123456789abcdef"}))
    forged = "cpl_0123456789abcdef_" + issued.token.split("_", 2)[2]
    with pytest.raises(AuthenticationFailed):
        ws.authenticate(forged)


def test_each_check_reads_only_what_was_appended_since(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    sec = ws.session("owner", "security")
    issued = [sec.create_token("owner", "P1D") for _ in range(20)]
    read: list[int] = []
    scan = ws.ledger.scan

    def counting(conn, kinds, start=0, end=None):  # type: ignore[no-untyped-def]
        for item in scan(conn, kinds, start, end):
            read.append(item[0])
            yield item

    monkeypatch.setattr(ws.ledger, "scan", counting)
    ws.authenticate(issued[0].token)
    assert len(read) >= 20  # the first check reads the record of every token
    read.clear()
    for t in issued:
        ws.authenticate(t.token)
    assert read == []  # nothing appended since: nothing read
    sec.create_token("owner", "P1D")
    ws.authenticate(issued[0].token)
    assert len(read) == 1  # the one new creation
