"""Decisions follow the policy as the ledger recorded it: a rule, a role grant or a re-enabled principal
written at rest grants nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, update

from complai.app.workspace import Workspace
from complai.store.tables import policy_rules, principals, role_grants


@pytest.mark.parametrize("edit", ["rule", "widen", "grant", "enable"])
def test_a_policy_changed_at_rest_is_refused(ws: Workspace, edit: str) -> None:
    ws.identity.add("owner", "ana")
    ws.identity.add("owner", "eve")
    ws.identity.grant_role("owner", "eve", "analyst")
    ws.policy.add("owner", "role:analyst", "customers", "read", "credit_scoring")
    ws.identity.disable("owner", "eve")
    ws.policy.add("owner", "ana", "customers", "read", "credit_scoring")
    assert not ws.policy.decide("ana", "customers", "erase", "credit_scoring")
    now = ws.clock.now()
    with ws.store.write() as conn:
        if edit == "rule":
            conn.execute(
                insert(policy_rules).values(
                    subject="ana",
                    domain="*",
                    action="*",
                    purpose="*",
                    effect="allow",
                    created_by="owner",
                    created_at=now,
                )
            )
        elif edit == "widen":
            conn.execute(update(policy_rules).values(action="*"))
        elif edit == "grant":
            conn.execute(insert(role_grants).values(principal="ana", role="owner", granted_by="owner", granted_at=now))
        else:
            conn.execute(update(principals).where(principals.c.name == "eve").values(disabled_at=None))
    with Workspace.open(ws.path, clock=ws.clock) as fresh:
        assert not fresh.policy.decide("ana", "customers", "erase", "credit_scoring")
        assert not fresh.policy.decide("eve", "customers", "read", "credit_scoring")
        assert fresh.policy.decide("ana", "customers", "read", "credit_scoring")


def test_roles_and_disabling_written_at_rest_do_not_count(ws: Workspace) -> None:
    from complai.errors import PolicyDenied

    ws.identity.add("owner", "ana")
    ws.identity.add("owner", "eve")
    ws.identity.grant_role("owner", "ana", "analyst")
    ws.identity.disable("owner", "eve")
    now = ws.clock.now()
    with ws.store.write() as conn:
        conn.execute(insert(role_grants).values(principal="ana", role="owner", granted_by="owner", granted_at=now))
        conn.execute(update(principals).where(principals.c.name == "eve").values(disabled_at=None))
    assert ws.identity.get("ana").roles == ("analyst",)
    assert ws.identity.get("eve").disabled
    assert ws.identity.get("owner").roles == ("owner",)
    with pytest.raises(PolicyDenied), ws.store.write() as conn:
        ws.authz.require_owner(conn, "ana")
