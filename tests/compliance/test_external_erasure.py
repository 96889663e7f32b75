"""ERASE-2 and RECON-1 over external datasets, without Spark: erasure requests to the owner system pass
when verified gone, warn while pending within their deadline, fail when overdue or found present; the
enrolment and request rows reconcile with their events, and rows edited at rest are named."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from complai.app.ops.compliance import compliance_services
from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.compliance import engine, reconcile
from complai.compliance.context import AuditContext
from complai.events import SubjectsEnrolled
from complai.store.tables import external_erasures, external_subjects
from complai.vault.external import link_of
from tests.vault.conftest import consents_frame
from tests.vault.test_external_registry import IDS, register


def _ctx(ws: Workspace) -> AuditContext:
    return AuditContext(compliance_services(ws.services), ws.clock.now())


def _erase2(ws: Workspace) -> engine.Finding:
    return engine.CHECKS["external_erasure"](_ctx(ws))


def _advance(ws: Workspace, days: float) -> None:
    clock = ws.clock
    assert isinstance(clock, ManualClock)
    clock.advance(timedelta(days=days))


@pytest.fixture
def lake(ws: Workspace, tmp_path: Path) -> Workspace:
    register(ws, tmp_path, erasure_days=30)
    ws.vault.enrol("lake_customers", IDS, actor="owner", consents_data=consents_frame())
    return ws


def _link(ws: Workspace) -> bytes:
    with ws.store.read() as conn:
        return bytes(conn.execute(select(external_erasures.c.link)).scalar_one())


def test_erase2_lifecycle(lake: Workspace) -> None:
    ws = lake
    assert _erase2(ws).status == engine.NA
    ws.vault.erase("C-1003", actor="owner")
    pending = _erase2(ws)
    assert pending.status == engine.WARN
    assert pending.evidence == {"requests": 1, "pending": 1, "gone": 0, "present": 0}
    assert "not yet sent to the owner system" in pending.items[0]["problem"]
    assert "C-1003" not in str(pending.items)  # pseudonyms only
    _advance(ws, 31)
    overdue = _erase2(ws)
    assert overdue.status == engine.FAIL and "not yet checked" in overdue.items[0]["problem"]
    ws.vault.external.record_check({"lake_customers": {_link(ws): 3}}, actor="owner")
    present = _erase2(ws)
    assert present.status == engine.FAIL and "still in the source" in present.items[0]["problem"]
    ws.vault.external.record_check({"lake_customers": {_link(ws): 0}}, actor="owner")
    assert _erase2(ws).status == engine.PASS
    ctx = _ctx(ws)
    results = {c["id"]: c for c in engine.run_controls(ctx)}
    assert results["ERASE-2"]["status"] == "pass"
    assert results["RECON-1"]["status"] == "pass", results["RECON-1"]


def test_present_within_deadline_only_warns(lake: Workspace) -> None:
    ws = lake
    ws.vault.erase("C-1001", actor="owner")
    ws.vault.external.record_check({"lake_customers": {_link(ws): 1}}, actor="owner")
    finding = _erase2(ws)
    assert finding.status == engine.WARN and finding.evidence["present"] == 1


def test_enrolment_and_requests_reconcile(lake: Workspace) -> None:
    ws = lake
    ws.vault.erase("C-1002", actor="owner")
    ws.vault.enrol("lake_customers", ["C-3000"], actor="owner")
    assert reconcile.reconcile_external(_ctx(ws)) == []
    assert reconcile.reconcile_subjects(_ctx(ws)) == []
    assert reconcile.reconcile_consents(_ctx(ws)) == []


def test_an_enrolment_removed_at_rest_is_named(lake: Workspace) -> None:
    ws = lake
    with ws.store.write() as conn:
        conn.execute(delete(external_subjects).where(external_subjects.c.subject_id == 1))
    found = reconcile.reconcile_external(_ctx(ws))
    assert found == [
        "external dataset lake_customers: 3 subjects enrolled, the ledger's enrolments less erasures leave 4"
    ]


def test_a_request_edited_at_rest_is_named(lake: Workspace) -> None:
    ws = lake
    ws.vault.erase("C-1002", actor="owner")
    with ws.store.write() as conn:
        conn.execute(update(external_erasures).values(state="gone", request_sealed=None))
    assert _erase2(ws).status == engine.PASS  # the control alone would be fooled...
    found = reconcile.reconcile_external(_ctx(ws))
    assert len(found) == 1 and "marked gone without a recorded check" in found[0]  # ...reconciliation is not
    with ws.store.write() as conn:
        conn.execute(delete(external_erasures))
    found = reconcile.reconcile_external(_ctx(ws))
    assert any("but not stored" in line for line in found)


def test_a_request_opened_after_the_scan_is_not_judged_by_it(lake: Workspace) -> None:
    ws = lake
    ws.vault.erase("C-1001", actor="owner")
    scanned = {link: 0 for link in ws.vault.external.open_links("lake_customers")}
    ws.vault.erase("C-1002", actor="owner")  # between the scan and its record
    _, results = ws.vault.external.record_check({"lake_customers": scanned}, actor="owner")
    assert results == {"lake_customers": {"requests": 1, "gone": 1, "present": 0}}
    assert sorted(r.state for r in ws.vault.external.pending("lake_customers")) == ["gone", "pending"]


def _link_of_subject(ws: Workspace, external_id: str) -> bytes:
    return link_of(ws.vault.link_key("lake_customers"), external_id)


def test_an_erased_subjects_link_put_on_a_live_subject_is_never_read_and_is_named(lake: Workspace) -> None:
    ws = lake
    ws.vault.erase("C-1003", actor="owner")
    erased, live = _link(ws), _link_of_subject(ws, "C-1001")
    assert live in ws.vault.eligible_links("lake_customers", "marketing", ws.clock.now())
    with ws.store.write() as conn:  # at rest: the live subject's row given the erased subject's link
        conn.execute(update(external_subjects).where(external_subjects.c.link == live).values(link=erased))
    links = ws.vault.eligible_links("lake_customers", "marketing", ws.clock.now())
    assert erased not in links and live not in links  # the erased subject's rows stay out of every frame
    found = reconcile.reconcile_external(_ctx(ws))
    assert found == [
        "external dataset lake_customers: its stored links (or the subjects they name) are not the ones its "
        "enrolments less its erasure requests leave",
        "external dataset lake_customers: 1 stored link(s) are the link of an erasure request (an erased "
        "subject's rows would be read again)",
    ]
    assert {c["id"]: c for c in engine.run_controls(_ctx(ws))}["RECON-1"]["status"] == "fail"


def test_links_swapped_between_live_subjects_are_named(lake: Workspace) -> None:
    ws = lake
    ws.vault.erase("C-1003", actor="owner")
    ws.vault.enrol("lake_customers", ["C-3000"], actor="owner")
    assert reconcile.reconcile_external(_ctx(ws)) == []
    a, b = _link_of_subject(ws, "C-1001"), _link_of_subject(ws, "C-3000")
    x = external_subjects.c
    with ws.store.write() as conn:  # counts and the set of links unchanged: only who has which differs
        conn.execute(update(external_subjects).where(x.link == a).values(link=b"\0" * 32))
        conn.execute(update(external_subjects).where(x.link == b).values(link=a))
        conn.execute(update(external_subjects).where(x.link == b"\0" * 32).values(link=b))
    found = reconcile.reconcile_external(_ctx(ws))
    assert len(found) == 1 and "its stored links (or the subjects they name) are not the ones" in found[0]


def test_a_request_link_edited_to_hide_a_moved_link_is_named(lake: Workspace) -> None:
    ws = lake
    ws.vault.erase("C-1003", actor="owner")
    erased, live = _link(ws), _link_of_subject(ws, "C-1001")
    with ws.store.write() as conn:  # the tampered pair: live row -> erased link, request -> live link
        conn.execute(update(external_subjects).where(external_subjects.c.link == live).values(link=erased))
        conn.execute(update(external_erasures).values(link=live))
    found = reconcile.reconcile_external(_ctx(ws))
    assert len(found) == 1 and "its stored links (or the subjects they name) are not the ones" in found[0]


@pytest.fixture
def legacy(ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """Enrolments recorded as they were before their events held the links' multiset hash."""
    emit = ws.ledger.emit

    def without_links_set(conn: Any, event: Any, **fields: Any) -> int:
        if event is SubjectsEnrolled:
            fields.pop("links_set")
        return emit(conn, event, **fields)

    monkeypatch.setattr(ws.ledger, "emit", without_links_set)
    register(ws, tmp_path, erasure_days=30)
    ws.vault.enrol("lake_customers", IDS, actor="owner", consents_data=consents_frame())
    _advance(ws, 1)
    ws.vault.enrol("lake_customers", ["C-3000", "C-3001"], actor="owner")
    monkeypatch.undo()
    assert all(
        "links_set" not in json.loads(e.data) for e in ws.ledger.entries(kind="external.enrolled")
    )  # as old events
    return ws


def test_links_of_older_enrolments_are_reconciled_by_their_links_digest(legacy: Workspace) -> None:
    ws = legacy
    ws.vault.erase("C-1003", actor="owner")  # the first enrolment lost a link: its request's link completes it
    assert reconcile.reconcile_external(_ctx(ws)) == []
    a, b = _link_of_subject(ws, "C-1001"), _link_of_subject(ws, "C-3000")
    x = external_subjects.c
    with ws.store.write() as conn:  # a link of each enrolment swapped: counts and the set of links unchanged
        conn.execute(update(external_subjects).where(x.link == a).values(link=b"\0" * 32))
        conn.execute(update(external_subjects).where(x.link == b).values(link=a))
        conn.execute(update(external_subjects).where(x.link == b"\0" * 32).values(link=b))
    found = reconcile.reconcile_external(_ctx(ws))
    assert found == [
        "external dataset lake_customers: its stored links are not the ones its enrolments stored less its "
        "erasure requests"
    ]


def test_an_older_enrolments_link_replaced_is_named(legacy: Workspace) -> None:
    ws = legacy
    ws.vault.erase("C-1003", actor="owner")
    with ws.store.write() as conn:  # a live subject given another lake id's link: counts unchanged
        conn.execute(
            update(external_subjects)
            .where(external_subjects.c.link == _link_of_subject(ws, "C-1001"))
            .values(link=_link_of_subject(ws, "C-9999"))
        )
    found = reconcile.reconcile_external(_ctx(ws))
    assert found == [
        "external dataset lake_customers: its stored links are not the ones its enrolments stored less its "
        "erasure requests"
    ]
