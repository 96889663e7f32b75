"""Incidents: audits open them for a ledger that fails verification and for anomalously large reads;
the 72-hour notification clock drives INC-1."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from complai.access.identity import OWNER
from complai.app.ops.compliance import compliance_services
from complai.app.workspace import Workspace
from complai.compliance import engine
from complai.errors import InvalidInput
from complai.store.tables import ledger_entries
from tests.dp.conftest import adult_workspace


@pytest.fixture
def ws(sqlite_ws: Workspace) -> Workspace:
    ws = adult_workspace(sqlite_ws, 2000)
    ws.identity.add(OWNER, "ana", "service")
    ws.identity.grant_role(OWNER, "ana", "analyst")
    ws.policy.add(OWNER, "role:analyst", "adult", "read", "credit_scoring")
    return ws


def test_an_anomalous_bulk_read_opens_an_incident_with_a_72_hour_clock(ws: Workspace, tmp_path: Path) -> None:
    ana = ws.session("ana", "credit_scoring")
    # three small reads establish ana's usual size, then one of the whole dataset
    frame = ws.vault.fetch("adult", "credit_scoring", ["age"])[0]
    assert len(frame) > 1000
    for _ in range(3):
        ws.vault.record_read("adult", "credit_scoring", "ana", ["age"], 10, set(), 2000)
    ana.read("adult", columns=["age"])
    out = ws.session(OWNER, "audit").compliance_audit(tmp_path / "r1")
    opened = out["report"]["incidents_opened"]
    assert [i["kind"] for i in opened] == ["bulk-read"] and "ana read" in opened[0]["description"]
    # the same evidence does not open a second incident
    assert ws.session(OWNER, "audit").compliance_audit(tmp_path / "r2")["report"]["incidents_opened"] == []
    inc = opened[0]["id"]
    ctx = lambda: engine.AuditContext(compliance_services(ws.services), ws.clock.now())  # noqa: E731
    assert engine.incidents_notified(ctx()).status == "pass"  # within 72 hours
    ws.clock.advance(timedelta(hours=73))  # type: ignore[attr-defined]
    late = engine.incidents_notified(ctx())
    assert late.status == "fail" and late.items[0]["item"] == f"incident {inc} (bulk-read)"
    ws.session(OWNER, "security").incident_notify(inc, "CNIL")
    assert engine.incidents_notified(ctx()).items[0]["problem"].startswith("notified")  # late, and says so
    with pytest.raises(InvalidInput, match="name the authority"):
        ws.session(OWNER, "security").incident_notify(inc, " ")


def test_a_ledger_that_fails_verification_opens_an_incident(ws: Workspace, tmp_path: Path) -> None:
    with ws.store.write() as conn:
        data = bytes(conn.execute(select(ledger_entries.c.data).where(ledger_entries.c.seq == 2)).scalar_one())
        conn.execute(update(ledger_entries).where(ledger_entries.c.seq == 2).values(data=data + b" "))
    out = ws.session(OWNER, "audit").compliance_audit(tmp_path / "r")
    assert [i["kind"] for i in out["report"]["incidents_opened"]] == ["ledger-integrity"]
    assert {c["id"] for c in out["report"]["controls"] if c["status"] == "fail"} >= {"LEDGER-1"}
