"""The subject-request register: deadlines by jurisdiction, verification before fulfilment, per-step
status with retries, extensions, overdue detection and the REQ-1 control."""

from __future__ import annotations

from datetime import timedelta

import pytest
from dateutil.relativedelta import relativedelta

from complai.access.identity import OWNER
from complai.app.ops.compliance import compliance_services
from complai.app.workspace import Workspace
from complai.clock import utc_iso
from complai.compliance import engine
from complai.errors import InvalidInput, NotFound, PolicyDenied
from tests.dp.conftest import adult_workspace


@pytest.fixture
def ws(sqlite_ws: Workspace) -> Workspace:
    return adult_workspace(sqlite_ws, 50)


def _subject(ws: Workspace, i: int = 0) -> str:
    return ws.vault.fetch("adult", "analytics", ["subject_id"])[0]["subject_id"].iloc[i]


def test_deadlines_follow_the_jurisdiction(ws: Workspace) -> None:
    s = ws.session(OWNER, "subject_request")
    now = ws.clock.now()
    eu = s.request_open("access", _subject(ws)).value
    assert eu["jurisdiction"] == "EU" and eu["due_at"] == utc_iso(now + relativedelta(months=1))
    ca = s.request_open("opt-out", _subject(ws, 1), jurisdiction="US-CA").value
    assert ca["due_at"].startswith((now + timedelta(days=45)).date().isoformat())
    assert ca["acknowledgement_due"].startswith((now + timedelta(days=10)).date().isoformat())
    cn = s.request_open("access", _subject(ws, 2), jurisdiction="CN").value
    assert cn["due_at"].startswith((now + timedelta(days=15)).date().isoformat())
    with pytest.raises(InvalidInput, match="unknown request type"):
        s.request_open("delete-everything", _subject(ws))
    with pytest.raises(InvalidInput, match="say which jurisdiction"):
        s.request_open("access", "nobody-here")


def test_fulfilment_needs_verified_identity_and_the_right_subject(ws: Workspace) -> None:
    s = ws.session(OWNER, "subject_request")
    subject = _subject(ws)
    r = s.request_open("erasure", subject).value
    with pytest.raises(PolicyDenied, match="verify the requester"):
        s.request_fulfil(r["id"], subject)
    s.request_verify(r["id"], "document")
    with pytest.raises(PolicyDenied, match="does not match"):
        s.request_fulfil(r["id"], _subject(ws, 1))
    done = s.request_fulfil(r["id"], subject)[0].value
    assert done["status"] == "fulfilled" and [x["step"] for x in done["steps"]] == ["erase"]
    with pytest.raises(NotFound, match="erased"):
        s.export_subject(subject)
    with pytest.raises(InvalidInput, match="is fulfilled"):
        s.request_fulfil(r["id"], subject)


def test_one_failing_step_keeps_the_others_and_can_be_retried(ws: Workspace) -> None:
    s = ws.session(OWNER, "subject_request")
    subject = _subject(ws)
    r = s.request_open("rectification", subject).value
    s.request_verify(r["id"], "account")
    partial = s.request_fulfil(r["id"], subject, changes=[("adult", "age", 40), ("adult", "no_such_field", 1)])[0].value
    assert partial["status"] == "partial"
    assert {x["step"]: x["status"] for x in partial["steps"]} == {
        "rectify adult.age": "done",
        "rectify adult.no_such_field": "failed",
    }
    assert s.export_subject(subject)["records"]["adult"][0]["fields"]["age"] == 40
    done = s.request_fulfil(r["id"], subject, changes=[("adult", "age", 40)])[0].value
    assert done["status"] == "fulfilled"


def test_overdue_requests_fail_req_1_and_an_extension_moves_the_deadline(ws: Workspace) -> None:
    s = ws.session(OWNER, "subject_request")
    r = s.request_open("access", _subject(ws)).value
    ca = s.request_open("opt-out", _subject(ws, 1), jurisdiction="US-CA").value
    ws.clock.advance(timedelta(days=11))  # type: ignore[attr-defined]
    assert s.request(ca["id"])["acknowledgement_late"]
    s.request_acknowledge(ca["id"])
    ws.clock.advance(timedelta(days=21))  # type: ignore[attr-defined]
    assert [x["id"] for x in s.requests(overdue_only=True)] == [r["id"]]
    found = engine.request_deadlines(engine.AuditContext(compliance_services(ws.services), ws.clock.now()))
    assert found.status == "fail"
    assert {i["item"].split()[1] for i in found.items} == {r["id"], ca["id"]}  # overdue; acknowledged late
    s.request_extend(r["id"], "the request covers several systems")
    assert not s.request(r["id"])["overdue"]
    with pytest.raises(InvalidInput, match="already extended"):
        s.request_extend(r["id"], "again")
    # a CCPA opt-out needs no identity verification
    opted = s.request_fulfil(ca["id"], _subject(ws, 1))[0].value
    assert opted["status"] == "fulfilled"
