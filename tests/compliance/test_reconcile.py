"""RECON-1: the store's state reconciled with the ledger. A workspace that went through every legitimate
change (ingests, rectification, erasure, retention sweep, key rotation) passes; state edited at rest
is named."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from sqlalchemy import update

from complai.app.ops.compliance import compliance_services
from complai.app.workspace import Workspace
from complai.compliance import engine, reconcile
from complai.store.tables import datasets, subject_keys
from complai.vault.schema import load_schema
from tests.vault.conftest import SCHEMA, consents_frame, people_frame


@pytest.fixture
def customers(ws: Workspace) -> Workspace:
    ws.catalog.register(load_schema(SCHEMA, ws.taxonomy), actor="owner")
    ws.vault.ingest("customers", people_frame(), actor="owner", consents_data=consents_frame())
    return ws


def _recon(ws: Workspace) -> engine.Finding:
    return engine.CHECKS["reconciliation"](engine.AuditContext(compliance_services(ws.services), ws.clock.now()))


def test_reconcilers_follow_the_contract(customers: Workspace) -> None:
    ctx = engine.AuditContext(compliance_services(customers.services), customers.clock.now())
    assert reconcile.RECONCILERS
    for fn in reconcile.RECONCILERS:
        assert fn.__name__.startswith("reconcile_")
        result = fn(ctx)
        assert isinstance(result, list) and all(isinstance(x, str) for x in result)
    assert {c["id"]: c for c in engine.run_controls(ctx)}["RECON-1"]["status"] == "pass"


def test_every_legitimate_change_reconciles(customers: Workspace) -> None:
    ws = customers
    ws.clock.advance(timedelta(days=20))  # type: ignore[attr-defined]
    later = pd.DataFrame(
        [("C-1001", "Margarethe Vandersloot", "mv@example.org", 1, "retail"), ("C-2001", "Ada Okafor", None, 2, None)],
        columns=["customer_id", "full_name", "email", "income", "segment"],
    )
    ws.vault.ingest("customers", later, actor="owner")
    ws.vault.rectify("C-1001", "customers", "income", 5, actor="owner")  # rows from both ingests
    ws.vault.rectify("C-1001", "customers", "income", 6, actor="owner")
    ws.vault.grant_consent("C-2001", "marketing", actor="owner")
    ws.vault.withdraw_consent("C-1001", "marketing", actor="owner")
    ws.vault.erase("C-1002", actor="owner")
    ws.keys.rotate("owner")
    finding = _recon(ws)
    assert finding.status == "pass", finding.items
    ws.clock.advance(timedelta(days=15))  # type: ignore[attr-defined]
    swept = ws.vault.retention_sweep("owner")
    assert swept["records_deleted"] == 3  # the first ingest's records of the three subjects left
    finding = _recon(ws)
    assert finding.status == "pass", finding.items
    assert {"datasets", "records", "subjects", "access_log", "consents", "objections", "record_binding"} <= set(
        finding.evidence["reconciled"]
    )
    assert finding.evidence["records_authenticated"] == finding.evidence["records"] == 2  # a full audit: all


def test_data_keys_under_a_retired_kek_version_are_named(customers: Workspace) -> None:
    rotated = customers.keys.rotate("owner")
    assert rotated["retired"] == [1]
    with customers.store.write() as conn:
        conn.execute(update(subject_keys).values(kek_version=1))
    problems = [i["problem"] for i in _recon(customers).items]
    assert any(
        p.startswith("KEK version 1: wraps data keys of 4 subjects, but the ledger retired it") for p in problems
    )


def test_retention_edited_at_rest_is_named(customers: Workspace) -> None:
    with customers.store.write() as conn:
        conn.execute(update(datasets).values(retention="P100Y"))
    problems = [i["problem"] for i in _recon(customers).items]
    assert any(p.startswith("dataset customers: retention 'P100Y' stored, 'P30D' registered") for p in problems)


def test_an_access_log_edited_at_rest_is_named(customers: Workspace) -> None:
    from sqlalchemy import delete, insert, select

    from complai.store.tables import access_log
    from complai.vault.service import pack_ids

    s = customers.session("owner", "customer_support")
    s.read("customers")
    first = s.last_seq
    s.read("customers")
    second = s.last_seq
    assert _recon(customers).status == "pass"
    with customers.store.write() as conn:
        conn.execute(delete(access_log).where(access_log.c.seq == first))  # hide a read's subjects
        ids = conn.execute(select(access_log.c.subject_ids).where(access_log.c.seq == second)).scalar_one()
        conn.execute(update(access_log).where(access_log.c.seq == second).values(subject_ids=bytes(ids)[8:]))
        conn.execute(insert(access_log).values(seq=0, subject_ids=pack_ids([1])))
    problems = [i["problem"] for i in _recon(customers).items if i["item"] == "access_log"]
    assert sorted(problems) == sorted(
        [
            f"read at ledger entry {first}: its access-log row is missing",
            f"read at ledger entry {second}: the access log names 3 subjects, not the 4 the read reached",
            "access-log row at ledger entry 0: no governed read was recorded there",
        ]
    )


def test_consents_edited_at_rest_are_named(customers: Workspace) -> None:
    from sqlalchemy import insert, select

    from complai.store.tables import consents, subjects

    customers.vault.withdraw_consent("C-1001", "marketing", actor="owner")
    assert _recon(customers).status == "pass"
    with customers.store.write() as conn:  # a withdrawal undone, a consent forged
        conn.execute(update(consents).where(consents.c.withdrawn_at.is_not(None)).values(withdrawn_at=None))
        sid = conn.execute(select(subjects.c.id).limit(1)).scalar_one()
        conn.execute(
            insert(consents).values(
                subject_id=sid,
                purpose="fraud_detection",
                basis="gdpr.consent",
                granted_at=customers.clock.now(),
                notice_version="v1",
                source="forged",
            )
        )
    problems = [i["problem"] for i in _recon(customers).items if i["item"] == "consents"]
    assert problems == [
        "consents: the 7 stored consents are not the ones the ledger's ingests and grants recorded",
        "consents: the stored withdrawals are not the ones the ledger recorded",
    ]


def test_objections_and_restrictions_edited_at_rest_are_named(customers: Workspace) -> None:
    from sqlalchemy import delete

    from complai.store.tables import objections, subjects

    ws = customers
    ws.vault.object("C-1001", "marketing", actor="owner")
    ws.vault.restrict("C-1002", actor="owner", reason="disputed accuracy")
    ws.vault.restrict("C-1003", actor="owner")
    ws.vault.restrict("C-1003", actor="owner", lift=True)
    ws.vault.object("C-1004", "*", actor="owner", kind="opt_out")
    ws.vault.erase("C-1004", actor="owner")
    assert _recon(ws).status == "pass", _recon(ws).items
    p1, p2, p3 = (ws.pseudonyms.subject(x) for x in ("C-1001", "C-1002", "C-1003"))
    with ws.store.write() as conn:  # the objection deleted, the restriction lifted, another imposed
        conn.execute(delete(objections))
        conn.execute(update(subjects).where(subjects.c.pseudonym == p2).values(restricted_at=None))
        conn.execute(update(subjects).where(subjects.c.pseudonym == p3).values(restricted_at=ws.clock.now()))
    problems = [i["problem"] for i in _recon(ws).items if i["item"] == "objections"]
    assert problems[0].startswith(f"subject {p1}: its objection to marketing")
    assert sorted(problems) == sorted(
        [
            f"subject {p1}: its objection to marketing (recorded in the ledger) is missing from the store",
            f"subject {p2}: not restricted in the store, but ledger entry {_last(ws, 'subject.restricted', p2)} "
            "restricted it",
            f"subject {p3}: restricted in the store, but ledger entry {_last(ws, 'subject.restricted', p3)} "
            "lifted its restriction",
        ]
    )


def _last(ws: Workspace, kind: str, pseudonym: str) -> int:
    ctx = engine.AuditContext(compliance_services(ws.services), ws.clock.now())
    return max(e["_seq"] for e in ctx.events(kind) if e.get("subject") == pseudonym)
