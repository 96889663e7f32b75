"""The read-only session operations the registry pages use: consent coverage (oversight), token counts
(the auditor's view, never an id or a secret) and a dataset's schema versions (for those who may
describe it). Each refuses, and records the refusal, before it looks the dataset up."""

from __future__ import annotations

import copy
import json
from datetime import timedelta

import pytest

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.errors import NotFound, PolicyDenied
from tests.vault.conftest import PEOPLE, SCHEMA, consents_frame, people_frame


@pytest.fixture
def customers(ws: Workspace) -> Workspace:
    owner = ws.session(OWNER, "security")
    for name, role in (("aud", "auditor"), ("adm", "admin"), ("nobody", None), ("ana", None)):
        owner.add_principal(name, "service")
        if role:
            owner.grant_role(name, role)
    owner.add_rule("ana", "customers", "read", "credit_scoring")
    admin = ws.session(OWNER, "administration")
    admin.create_dataset(admin.parse_schema(SCHEMA))
    admin.ingest("customers", people_frame(), consents_frame())
    return ws


def denied(ws: Workspace, actor: str) -> int:
    entries = ws.session(OWNER, "audit").ledger_entries(kind="access.denied", limit=10_000)
    return sum(1 for e in entries if json.loads(e.data)["actor"] == actor)


def test_consent_coverage_of_a_dataset_for_those_who_oversee(customers: Workspace) -> None:
    ws = customers
    ws.session(OWNER, "subject_request").withdraw_consent("C-1002", "marketing")
    for who in ("aud", "adm"):
        rows = {r["purpose"]: r for r in ws.session(who, "administration").consent_coverage("customers")}
        assert set(rows) == set(SCHEMA["purposes"])
        # four people, all consented to credit scoring; of the two marketing consents one was withdrawn
        assert (rows["credit_scoring"]["subjects"], rows["credit_scoring"]["consented"]) == (len(PEOPLE), len(PEOPLE))
        assert (rows["marketing"]["subjects"], rows["marketing"]["consented"]) == (len(PEOPLE), 1)
        assert rows["fraud_detection"]["consent_required"] is False and rows["marketing"]["consent_required"]
    # the whole workspace, as the audit report has it, equals the one dataset's here
    assert ws.session("aud", "audit").consent_coverage() == ws.session("aud", "audit").consent_coverage("customers")
    with pytest.raises(NotFound):
        ws.session("aud", "audit").consent_coverage("nothing")


def test_consent_coverage_refuses_anyone_else_before_the_lookup(customers: Workspace) -> None:
    ws = customers
    for who in ("nobody", "ana"):  # ana may read the dataset, but exact counts are the overseers'
        for name in ("customers", "nothing"):
            before = denied(ws, who)
            with pytest.raises(PolicyDenied):
                ws.session(who, "credit_scoring").consent_coverage(name)
            assert denied(ws, who) == before + 1


def test_token_counts_are_the_auditors_and_carry_no_id(customers: Workspace) -> None:
    ws = customers
    owner = ws.session(OWNER, "security")
    early = owner.create_token("ana", "P1D")
    gone = owner.create_token("ana", "P1D")
    owner.revoke_token(gone.id)
    short = owner.create_token("ana", "P1D")
    ws.clock.advance(timedelta(days=2))  # type: ignore[attr-defined]
    fresh = owner.create_token("ana", "P7D")
    counts = ws.session("aud", "security").token_counts()
    assert counts["ana"] == {"live": 1, "expired": 2, "revoked": 1}
    assert counts["nobody"] == {"live": 0, "expired": 0, "revoked": 0}
    text = json.dumps(counts)
    for t in (early, gone, short, fresh):
        assert t.id not in text and t.token not in text
    before = denied(ws, "nobody")
    with pytest.raises(PolicyDenied):
        ws.session("nobody", "security").token_counts()
    assert denied(ws, "nobody") == before + 1


def test_dataset_versions_oldest_first(customers: Workspace) -> None:
    ws = customers
    changed = copy.deepcopy(SCHEMA)
    changed["retention"] = "P60D"
    changed["fields"].append({"name": "city", "type": "string", "category": "user.location"})
    ws.session(OWNER, "administration").alter_dataset("customers", changed)
    for who in ("aud", "ana"):  # an overseer, and a principal who may act on it
        versions = ws.session(who, "credit_scoring").dataset_versions("customers")
        assert [v["version"] for v in versions] == [1, 2]
        assert [v["retention"] for v in versions] == ["P30D", "P60D"]
        assert "city" not in versions[0]["fields"] and "city" in versions[1]["fields"]
        assert versions[0]["schema_digest"] != versions[1]["schema_digest"]
    with pytest.raises(NotFound):
        ws.session("aud", "audit").dataset_versions("nothing")
    for name in ("customers", "nothing"):
        before = denied(ws, "nobody")
        with pytest.raises(PolicyDenied):
            ws.session("nobody", "audit").dataset_versions(name)
        assert denied(ws, "nobody") == before + 1


def test_budget_history_is_the_auditors(customers: Workspace) -> None:
    ws = customers
    ws.session(OWNER, "administration").set_budget("customers", 1.0, 1e-5)
    assert ws.session("aud", "administration").budget_history("customers") == {}  # no spend yet
    with pytest.raises(NotFound):
        ws.session("aud", "audit").budget_history("nothing")
    for who in ("nobody", "adm"):  # an admin changes budgets; showing their history is the auditor's
        for name in ("customers", "nothing"):
            before = denied(ws, who)
            with pytest.raises(PolicyDenied):
                ws.session(who, "administration").budget_history(name)
            assert denied(ws, who) == before + 1
