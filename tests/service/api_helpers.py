"""What the API tests of access, rights and compliance share: the ledger's size and what it gained,
the two refusals every route can answer (403 recorded, 400 writing nothing), and a small dataset
(the `customers` fixture of tests/service/conftest.py)."""

from __future__ import annotations

from typing import Any

from complai.app.workspace import Workspace
from tests.vault.conftest import SCHEMA, consents_frame, people_frame


def size(ws: Workspace) -> int:
    return ws.session("owner", "audit").ledger_head().size


def kinds_since(ws: Workspace, start: int) -> list[str]:
    return [e.kind for e in ws.session("owner", "audit").ledger_entries(start=start, limit=1000)]


def refused(ws: Workspace, r: Any, before: int) -> None:
    """A 403 problem, and the refusal is the only thing the ledger gained."""
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert kinds_since(ws, before) == ["access.denied"]


def bad(ws: Workspace, r: Any, before: int) -> None:
    """A 400 problem with a one-line detail, and nothing written."""
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert detail and "\n" not in detail
    assert size(ws) == before


def with_customers(ws: Workspace) -> Workspace:
    """The vault tests' customers dataset, registered and ingested by the owner through sessions."""
    admin = ws.session("owner", "administration")
    admin.create_dataset(admin.parse_schema(SCHEMA))
    ws.session("owner", "credit_scoring").ingest("customers", people_frame(), consents_frame())
    return ws
