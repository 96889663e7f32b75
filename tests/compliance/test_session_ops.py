"""The session's compliance operations: one named method per change, each authorised before it acts,
each returning its result with the sequence number of the ledger entry that recorded it."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any

import pytest

from complai.access.identity import OWNER
from complai.app.ops.compliance import compliance_services
from complai.app.workspace import Workspace
from complai.compliance.context import ComplianceServices
from complai.errors import PolicyDenied
from tests.dp.conftest import adult_workspace


@pytest.fixture
def ws(sqlite_ws: Workspace) -> Workspace:
    return adult_workspace(sqlite_ws, 50)


def _subject(ws: Workspace) -> str:
    return str(ws.vault.fetch("adult", "analytics", ["subject_id"])[0]["subject_id"].iloc[0])


def _event(ws: Workspace, seq: int) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(ws.ledger.entry(seq).data)
    return event


def test_each_incident_change_carries_its_ledger_entry(ws: Workspace) -> None:
    s = ws.session(OWNER, "security")
    opened = s.incident_open("a laptop was lost")
    assert s.last_seq == opened.seq == ws.ledger.head().size - 1
    event = _event(ws, opened.seq)
    assert event["type"] == "incident.opened" and event["incident"] == opened.value["id"]
    notified = s.incident_notify(opened.value["id"], "CNIL")
    assert _event(ws, notified.seq)["change"] == "authority notified: CNIL"
    assert notified.value["authority"] == "CNIL" and notified.seq == s.last_seq > opened.seq
    closed = s.incident_close(opened.value["id"])
    assert _event(ws, closed.seq)["change"] == "closed" and closed.value["closed_at"] is not None


def test_each_request_change_carries_its_ledger_entry(ws: Workspace) -> None:
    s = ws.session(OWNER, "subject_request")
    opened = s.request_open("access", _subject(ws))
    rid = opened.value["id"]
    assert _event(ws, opened.seq)["type"] == "request.opened"
    seqs = [opened.seq]
    for change, act in (
        ("identity verified (document)", lambda: s.request_verify(rid, "document")),
        ("acknowledged", lambda: s.request_acknowledge(rid)),
        ("extended with notice", lambda: s.request_extend(rid, "several systems hold the data")),
        ("rejected", lambda: s.request_reject(rid, "manifestly unfounded")),
    ):
        result = act()
        event = _event(ws, result.seq)
        assert (event["type"], event["request"], event["change"]) == ("request.updated", rid, change)
        assert result.seq == s.last_seq == ws.ledger.head().size - 1 and result.value["id"] == rid
        seqs.append(result.seq)
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_dpia_generate_and_sign_carry_their_entries(ws: Workspace) -> None:
    s = ws.session(OWNER, "audit")
    made = s.dpia_generate("adult")
    assert _event(ws, made.seq)["change"] == "generated" and made.value["version"] == 1
    signed = s.dpia_sign("adult", "DPO")
    assert _event(ws, signed.seq)["signed_by"] == "DPO" and signed.value["current"]
    head = ws.ledger.head().size
    assert s.dpia_status("adult")["current"] and ws.ledger.head().size == head  # a status records nothing


@pytest.mark.parametrize(
    ("purpose", "call"),
    [
        ("security", lambda s, ids: s.incident_open("made up")),
        ("security", lambda s, ids: s.incident_close(ids["incident"])),
        ("subject_request", lambda s, ids: s.request_verify(ids["request"], "document")),
        ("subject_request", lambda s, ids: s.request_reject(ids["request"], "no")),
        ("audit", lambda s, ids: s.dpia_sign("adult", "someone")),
        ("audit", lambda s, ids: s.records_of_processing()),
    ],
)
def test_a_principal_without_the_right_is_refused_and_nothing_changes(ws: Workspace, purpose: str, call: Any) -> None:
    ids = {
        "incident": ws.session(OWNER, "security").incident_open("a laptop was lost").value["id"],
        "request": ws.session(OWNER, "subject_request").request_open("access", _subject(ws)).value["id"],
    }
    ws.identity.add(OWNER, "nobody", "service")
    before = (ws.session(OWNER, "audit").incidents(), ws.session(OWNER, "audit").requests())
    with pytest.raises(PolicyDenied):
        call(ws.session("nobody", purpose), ids)
    assert (ws.session(OWNER, "audit").incidents(), ws.session(OWNER, "audit").requests()) == before
    assert _event(ws, ws.ledger.head().size - 1)["type"] == "access.denied"


def test_compliance_gets_exactly_its_services(ws: Workspace) -> None:
    svc = compliance_services(ws.services)
    assert isinstance(svc, ComplianceServices) and svc.path == ws.path
    assert {f.name for f in dataclasses.fields(svc)} <= {f.name for f in dataclasses.fields(ws.services)}
    assert svc.requests is ws.services.requests and svc.ledger is ws.services.ledger


def test_pipl_deadline_follows_the_setting(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    s = ws.session(OWNER, "subject_request")
    now = ws.clock.now()
    monkeypatch.setenv("COMPLAI_PIPL_REQUEST_DAYS", "30")
    due = s.request_open("access", _subject(ws), jurisdiction="CN").value["due_at"]
    assert due.startswith((now + timedelta(days=30)).date().isoformat())


def test_dpia_document_is_for_review_and_records_nothing(ws: Workspace) -> None:
    s = ws.session(OWNER, "audit")
    made = s.dpia_generate("adult").value
    head = ws.ledger.head().size
    doc = s.dpia_document("adult")
    assert (doc["version"], doc["digest"], doc["signed_by"]) == (1, made["digest"], None)
    assert doc["document"]["triggers"] == made["document"]["triggers"] and ws.ledger.head().size == head
    s.dpia_sign("adult", "DPO")
    assert s.dpia_document("adult", 1)["signed_by"] == "DPO"
    ws.identity.add(OWNER, "nobody", "service")
    with pytest.raises(PolicyDenied):
        ws.session("nobody", "audit").dpia_document("adult")
    assert _event(ws, ws.ledger.head().size - 1)["type"] == "access.denied"
