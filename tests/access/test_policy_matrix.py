"""Roles x actions x purposes: every allowed combination works, every other is refused and recorded."""

from __future__ import annotations

import itertools

import pytest

from complai.access.policy import ACTIONS
from complai.app.workspace import Workspace
from complai.errors import PolicyDenied
from tests.vault.conftest import SCHEMA

PURPOSES = ["credit_scoring", "marketing", "fraud_detection", "subject_request"]
# the policy under test, written down independently of the engine: (role, action, dataset, purpose)
GRANTS = {
    ("analyst", "read", "customers", "credit_scoring"),
    ("analyst", "query_dp", "customers", "*"),
    ("steward", "export", "*", "subject_request"),
    ("steward", "erase", "*", "subject_request"),
    ("marketer", "read", "cust*", "marketing"),
}
ROLE_OF = {"ana": "analyst", "stew": "steward", "aud": "auditor", "mark": "analyst"}
DENIES = {("mark", "read", "customers", "credit_scoring")}  # an explicit deny for one principal


def expected(principal: str, action: str, dataset: str, purpose: str) -> bool:
    if principal == "owner":
        return True
    if (principal, action, dataset, purpose) in DENIES:
        return False
    role = ROLE_OF[principal]
    if role == "auditor":
        return action == "audit"
    for r, a, d, p in GRANTS:
        if r == "marketer" and principal == "mark" and a == action and purpose == p and dataset.startswith("cust"):
            return True
        if r == role and a == action and (d == "*" or d == dataset) and (p == "*" or p == purpose):
            return True
    return False


@pytest.fixture
def policy_ws(ws: Workspace) -> Workspace:
    from complai.vault.schema import load_schema

    ws.catalog.register(load_schema(SCHEMA, ws.taxonomy), actor="owner")
    for name, role in ROLE_OF.items():
        ws.identity.add("owner", name, "service")
        ws.identity.grant_role("owner", name, role)
    for role, action, dataset, purpose in GRANTS:
        subject = "mark" if role == "marketer" else f"role:{role}"
        ws.policy.add("owner", subject, dataset, action, purpose)
    for p, a, d, purpose in DENIES:
        ws.policy.add("owner", p, d, a, purpose, effect="deny")
    return ws


def test_matrix(policy_ws: Workspace) -> None:
    ws = policy_ws
    denied_before = ws.ledger.count_by_kind().get("access.denied", 0)
    refused = 0
    for principal, action, purpose in itertools.product(["owner", *ROLE_OF], ACTIONS, PURPOSES):
        want = expected(principal, action, "customers", purpose)
        if want:
            ws.policy.check(principal, "customers", action, purpose)
        else:
            with pytest.raises(PolicyDenied):
                ws.policy.check(principal, "customers", action, purpose)
            refused += 1
    assert refused > 100
    assert ws.ledger.count_by_kind()["access.denied"] - denied_before == refused


def test_reads_through_sessions_follow_the_policy(policy_ws: Workspace) -> None:
    from tests.vault.conftest import consents_frame, people_frame

    ws = policy_ws
    ws.vault.ingest("customers", people_frame(), actor="owner", consents_data=consents_frame())
    assert len(ws.session("ana", "credit_scoring").read("customers")) == 4
    with pytest.raises(PolicyDenied):
        ws.session("ana", "marketing").read("customers")
    with pytest.raises(PolicyDenied):
        ws.session("aud", "credit_scoring").read("customers")  # auditors never read personal data
    assert ws.session("aud", "audit").ledger_head().size > 0  # the auditor's view of the ledger
    with pytest.raises(PolicyDenied):
        ws.session("stew", "subject_request").read("customers")
    assert ws.session("stew", "subject_request").export_subject("C-1001")["subject"]["id"] == "C-1001"
    assert len(ws.session("mark", "marketing").read("customers")) == 2
    with pytest.raises(PolicyDenied):
        ws.session("mark", "credit_scoring").read("customers")


def test_decision_cache_follows_policy_changes(policy_ws: Workspace) -> None:
    ws = policy_ws
    assert not ws.policy.decide("ana", "customers", "read", "marketing")
    rule = ws.policy.add("owner", "role:analyst", "customers", "read", "marketing")
    assert ws.policy.decide("ana", "customers", "read", "marketing")
    ws.policy.remove("owner", rule.id)
    assert not ws.policy.decide("ana", "customers", "read", "marketing")
    ws.identity.revoke_role("owner", "ana", "analyst")
    assert not ws.policy.decide("ana", "customers", "read", "credit_scoring")
    ws.identity.grant_role("owner", "ana", "analyst")
    ws.identity.disable("owner", "ana")
    assert not ws.policy.decide("ana", "customers", "read", "credit_scoring")


def test_a_second_process_sees_policy_changes(policy_ws: Workspace) -> None:
    other = Workspace.open(policy_ws.path)
    try:
        assert not other.policy.decide("ana", "customers", "read", "marketing")
        policy_ws.policy.add("owner", "ana", "customers", "read", "marketing")
        assert other.policy.decide("ana", "customers", "read", "marketing")
    finally:
        other.close()


def test_separation_of_duties(policy_ws: Workspace) -> None:
    ws = policy_ws
    ws.identity.add("owner", "boss", "human")
    ws.identity.grant_role("owner", "boss", "owner")
    with pytest.raises(PolicyDenied, match="itself"):
        ws.policy.add("boss", "boss", "*", "read", "*")
    with pytest.raises(PolicyDenied, match="role it holds"):
        ws.policy.add("boss", "role:owner", "*", "read", "*")
    with pytest.raises(PolicyDenied, match="own roles"):
        ws.identity.grant_role("boss", "boss", "auditor")
    with pytest.raises(PolicyDenied, match="owner role is required"):
        ws.policy.add("ana", "stew", "*", "read", "*")
    with pytest.raises(PolicyDenied, match="owner role is required"):
        ws.identity.grant_role("stew", "ana", "steward")
    with pytest.raises(PolicyDenied, match="owner role is required"):
        ws.identity.add("aud", "newbie")
