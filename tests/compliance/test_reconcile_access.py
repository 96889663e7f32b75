"""RECON-1 reconciles access-control state with the ledger: principals, role grants, policy rules,
tokens and sharing agreements edited at rest (each of which would grant a privilege or lift a limit)
are named."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, update

from complai.app.ops.compliance import compliance_services
from complai.app.workspace import Workspace
from complai.compliance import engine
from complai.crypto.sealing import generate_keypair
from complai.store.tables import agreements, policy_rules, principals, role_grants, tokens
from complai.vault.schema import load_schema
from tests.vault.conftest import SCHEMA, consents_frame, people_frame


@pytest.fixture
def governed(ws: Workspace, tmp_path: Path) -> tuple[Workspace, str, str]:
    ws.catalog.register(load_schema(SCHEMA, ws.taxonomy), actor="owner")
    ws.vault.ingest("customers", people_frame(), actor="owner", consents_data=consents_frame())
    ws.identity.add("owner", "ana")
    ws.identity.add("owner", "eve")
    ws.identity.grant_role("owner", "ana", "analyst")
    ws.identity.grant_role("owner", "eve", "analyst")
    ws.identity.revoke_role("owner", "eve", "analyst")
    rule = ws.policy.add("owner", "ana", "customers", "read", "credit_scoring")
    ws.policy.add("owner", "ana", "customers", "query_dp", "credit_scoring")
    ws.policy.remove("owner", rule.id)
    token_id, _ = ws.identity.create_token("owner", "ana", expires="P7D")
    old_id, _ = ws.identity.create_token("owner", "eve", expires="P7D")
    ws.identity.revoke_token("owner", old_id)
    ws.identity.create_token("owner", "eve", expires="P7D")
    ws.identity.disable("owner", "eve")  # revokes eve's other token too
    public = generate_keypair(tmp_path / "bank.key")
    a = ws.agreements.create(
        "owner", "bank", public, "customers", "credit_scoring", ["income"], max_uses=2, recipient_jurisdiction="EU"
    )
    ws.agreements.export("owner", a.id, tmp_path / "p1.pkg")
    b = ws.agreements.create(
        "owner", "bank", public, "customers", "credit_scoring", ["income"], recipient_jurisdiction="EU"
    )
    ws.agreements.revoke("owner", b.id)
    return ws, token_id, a.id


def _access(ws: Workspace) -> list[str]:
    finding = engine.CHECKS["reconciliation"](engine.AuditContext(compliance_services(ws.services), ws.clock.now()))
    return [i["problem"] for i in finding.items if i["item"] == "access"]


def test_legitimate_access_changes_reconcile(governed: tuple[Workspace, str, str]) -> None:
    ws, _, _ = governed
    finding = engine.CHECKS["reconciliation"](engine.AuditContext(compliance_services(ws.services), ws.clock.now()))
    assert finding.status == "pass", finding.items
    assert "access" in finding.evidence["reconciled"]


def test_principals_and_roles_edited_at_rest_are_named(governed: tuple[Workspace, str, str]) -> None:
    ws, _, _ = governed
    now = ws.clock.now()
    with ws.store.write() as conn:
        conn.execute(update(principals).where(principals.c.name == "eve").values(disabled_at=None))
        conn.execute(insert(principals).values(name="mallory", kind="human", created_at=now, created_by="owner"))
        conn.execute(insert(role_grants).values(principal="ana", role="owner", granted_by="owner", granted_at=now))
        conn.execute(delete(role_grants).where(role_grants.c.principal == "ana", role_grants.c.role == "analyst"))
    assert sorted(_access(ws)) == sorted(
        [
            "principal eve: enabled in the store, but the ledger disabled it",
            "principal mallory: in the store, but the ledger never added it",
            "role owner of ana: granted in the store, but not by the ledger",
            "role analyst of ana: granted by the ledger, but missing from the store",
        ]
    )


def test_policy_rules_edited_at_rest_are_named(governed: tuple[Workspace, str, str]) -> None:
    ws, _, _ = governed
    now = ws.clock.now()
    with ws.store.write() as conn:
        conn.execute(update(policy_rules).values(action="*", purpose="*"))  # widen the live rule
        conn.execute(
            insert(policy_rules).values(
                subject="ana",
                domain="*",
                action="read",
                purpose="*",
                effect="allow",
                created_by="owner",
                created_at=now,
            )
        )
    problems = _access(ws)
    assert len(problems) == 2, problems
    assert any(p.startswith("policy rule 2: stored as (ana, customers, *, *, allow)") for p in problems)
    assert any(p.startswith("policy rule 3: in the store, but the ledger never added it") for p in problems)
    with ws.store.write() as conn:
        conn.execute(delete(policy_rules))  # a deny, or any rule, deleted
    assert _access(ws) == ["policy rule 2: added in the ledger, but missing from the store"]


def test_tokens_edited_at_rest_are_named(governed: tuple[Workspace, str, str]) -> None:
    ws, token_id, _ = governed
    now = ws.clock.now()
    with ws.store.write() as conn:
        conn.execute(update(tokens).where(tokens.c.principal == "eve").values(revoked_at=None))
        conn.execute(update(tokens).where(tokens.c.id == token_id).values(expires_at=now + timedelta(days=36500)))
        conn.execute(update(tokens).where(tokens.c.id == token_id).values(secret_hash=b"\1" * 32))  # a known secret
        conn.execute(
            insert(tokens).values(
                id="00" * 8, principal="ana", secret_hash=b"\0" * 32, created_at=now, created_by="owner"
            )
        )
    problems = _access(ws)
    assert len(problems) == 5, problems
    assert f"token {token_id}: its stored secret hash is not the one the ledger recorded" in problems
    assert sum("revoked by the ledger, but live in the store" in p for p in problems) == 2
    assert any(p.startswith(f"token {token_id}: expiry ") for p in problems), problems
    assert "token 0000000000000000: in the store, but the ledger never created it" in problems


def test_agreements_edited_at_rest_are_named(governed: tuple[Workspace, str, str]) -> None:
    ws, _, aid = governed
    now = ws.clock.now()
    with ws.store.write() as conn:
        conn.execute(update(agreements).where(agreements.c.id == aid).values(uses=0, max_uses=99))
        conn.execute(update(agreements).where(agreements.c.id != aid).values(revoked_at=None))
        conn.execute(update(agreements).where(agreements.c.id == aid).values(expires_at=now + timedelta(days=3650)))
        conn.execute(update(agreements).where(agreements.c.id == aid).values(recipient_key="00" * 32))
        conn.execute(
            update(agreements).where(agreements.c.id != aid).values(deid_json='{"drop_direct_identifiers": false}')
        )
    problems = _access(ws)
    assert len(problems) == 6, problems
    assert (
        sum(p.endswith("recipient key, de-identification or transfer terms differ from the ledger's") for p in problems)
        == 2
    )
    assert f"agreement {aid}: used 0 times in the store, the ledger records 1 use(s)" in problems
    assert any(p.startswith(f"agreement {aid}: at most 99 uses stored") for p in problems)
    assert any(p.startswith(f"agreement {aid}: expires ") for p in problems)
    assert any(p.endswith("revoked by the ledger, but live in the store") for p in problems)


def test_a_dataset_purposes_column_edited_at_rest_is_named(governed: tuple[Workspace, str, str]) -> None:
    from complai.store.tables import datasets

    ws, _, _ = governed
    with ws.store.write() as conn:
        conn.execute(update(datasets).values(purposes_json='{"credit_scoring": "gdpr.legitimate_interests"}'))
    finding = engine.CHECKS["reconciliation"](engine.AuditContext(compliance_services(ws.services), ws.clock.now()))
    assert [i["problem"] for i in finding.items] == [
        "dataset customers: its stored purposes are not the ones registered at ledger entry 1"
    ]
