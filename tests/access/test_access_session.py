"""Access operations through the session: owners change principals, roles and rules; auditors view
them; every refusal is one `access.denied` event and nothing else; each change names its ledger entry.
The caller's authentication (Workspace.authenticate) and the one place permissions are decided."""

from __future__ import annotations

from pathlib import Path

import pytest

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.crypto.sealing import generate_keypair
from complai.errors import AuthenticationFailed, InvalidInput, PolicyDenied
from complai.events import decode_event


@pytest.fixture
def team(ws: Workspace) -> Workspace:
    for name, role in (("ana", "analyst"), ("adm", "admin"), ("aud", "auditor")):
        ws.identity.add(OWNER, name, "service")
        ws.identity.grant_role(OWNER, name, role)
    return ws


def _kind(ws: Workspace, seq: int | None) -> str:
    assert seq is not None
    return decode_event(ws.ledger.entry(seq).data).kind


def _denials(ws: Workspace, since: int) -> list[tuple[str, str]]:
    events = [decode_event(e.data) for e in ws.ledger.entries(start=since)]
    return [(e.actor, e.action) for e in events if e.kind == "access.denied"]  # type: ignore[attr-defined]


def test_a_principal_without_the_owner_role_is_refused_and_nothing_is_written(team: Workspace) -> None:
    size = team.ledger.head().size
    for who in ("adm", "ana", "aud"):
        session = team.session(who, "security")
        with pytest.raises(PolicyDenied, match="owner role is required"):
            session.add_principal("mallory", "service")
        with pytest.raises(PolicyDenied):
            session.grant_role("ana", "owner")
        with pytest.raises(PolicyDenied):
            session.add_rule("ana", "customers", "read", "marketing")
        assert session.last_seq is None
    # one access.denied per refusal, nothing else
    assert team.ledger.head().size == size + 9
    assert [a for _, a in _denials(team, size)] == ["add_principal", "change_role", "change_policy"] * 3
    assert "mallory" not in [p.name for p in team.identity.list()]
    assert team.identity.get("ana").roles == ("analyst",) and team.policy.rules() == []


def test_owner_changes_name_their_ledger_entries(team: Workspace) -> None:
    session = team.session(OWNER, "security")
    p = session.add_principal("bob", "human", password="a long enough password")
    assert p.name == "bob" and p.kind == "human" and _kind(team, session.last_seq) == "principal.added"
    session.grant_role("bob", "steward")
    assert _kind(team, session.last_seq) == "role.changed"
    assert team.identity.get("bob").roles == ("steward",)
    session.revoke_role("bob", "steward")
    assert team.identity.get("bob").roles == ()
    rule = session.add_rule("role:analyst", "customers", "read", "marketing")
    assert _kind(team, session.last_seq) == "policy.changed"
    assert team.policy.decide("ana", "customers", "read", "marketing")
    session.remove_rule(rule.id)
    assert not team.policy.decide("ana", "customers", "read", "marketing")
    assert session.set_token_max_lifetime("P7D") == "P7D" == session.token_max_lifetime()
    assert _kind(team, session.last_seq) == "token.lifetime_set"
    session.disable_principal("bob")
    assert _kind(team, session.last_seq) == "principal.disabled" and team.identity.get("bob").disabled


def test_tokens_through_the_session(team: Workspace) -> None:
    adm = team.session("adm", "security")
    with pytest.raises(PolicyDenied, match="may not mint tokens for others"):  # the owner's, not an admin's
        adm.create_token("ana", "P1D")
    owner = team.session(OWNER, "security")
    issued = owner.create_token("ana", "P1D")
    assert issued.principal == "ana" and issued.token.startswith(f"cpl_{issued.id}_")
    assert owner.last_seq == issued.ledger_seq and _kind(team, issued.ledger_seq) == "token.created"
    assert team.session(issued.token, "security").principal == "ana"
    own = team.session("ana", "security").create_token(expires="P1D")
    assert own.principal == "ana"
    with pytest.raises(PolicyDenied, match="outlive"):
        adm.create_token(expires="P2D", credential_expires=team.clock.now())
    adm.revoke_token(issued.id)
    assert _kind(team, adm.last_seq) == "token.revoked"
    with pytest.raises(AuthenticationFailed):
        team.session(issued.token, "security")


def test_views_are_the_auditors(team: Workspace) -> None:
    team.policy.add(OWNER, "ana", "customers", "read", "marketing")
    aud = team.session("aud", "audit")
    assert [p.name for p in aud.list_principals()] == ["adm", "ana", "aud", "owner"]
    assert [(r.subject, r.action) for r in aud.rules()] == [("ana", "read")]
    assert aud.agreements() == []
    assert ("role:owner", "*", "*", "*", "allow") in aud.builtin_rules()
    size = team.ledger.head().size
    ana = team.session("ana", "security")
    for view in (ana.list_principals, ana.rules, ana.agreements):
        with pytest.raises(PolicyDenied):
            view()
    assert _denials(team, size) == [("ana", "audit")] * 3 and team.ledger.head().size == size + 3


def test_sharing_through_the_session(customers: Workspace, tmp_path: Path) -> None:
    public = generate_keypair(tmp_path / "bank.key")
    session = customers.session(OWNER, "credit_scoring")
    a = session.create_agreement("bank", public, "customers", ["income"], max_uses=1, recipient_jurisdiction="EU")
    assert a.purpose == "credit_scoring" and _kind(customers, session.last_seq) == "agreement.changed"
    shared = customers.session(OWNER, "security").export_share(a.id, tmp_path / "p.pkg")
    assert shared.recipient == "bank" and shared.use == 1 and shared.rows == 4
    assert _kind(customers, shared.ledger_seq) == "data.shared"
    assert set(shared.as_dict()) == {"file", "rows", "use", "max_uses", "ledger_seq"}
    b = session.create_agreement("bank", public, "customers", ["income"], recipient_jurisdiction="EU")
    customers.identity.add(OWNER, "intern", "service")
    with pytest.raises(PolicyDenied):
        customers.session("intern", "security").revoke_agreement(b.id)
    session.revoke_agreement(b.id)
    assert customers.agreements.get(b.id).revoked


def test_authenticate_the_owner_a_token_and_delegation(team: Workspace) -> None:
    caller = team.authenticate()
    assert caller.principal.name == OWNER and caller.credential is None and not caller.delegating
    tid, token = team.identity.create_token(OWNER, "adm", expires="P1D")
    caller = team.authenticate(token)
    assert caller.principal.name == "adm" and caller.credential is not None and caller.credential.token_id == tid
    assert team.authenticate(act_as="ana").acting == "ana"
    size = team.ledger.head().size
    with pytest.raises(PolicyDenied, match="may not act as another principal"):
        team.authenticate(token, act_as="ana")
    assert _denials(team, size) == [("adm", "act_as")] and team.ledger.head().size == size + 1
    with pytest.raises(InvalidInput, match="--as: no principal named"):
        team.authenticate(act_as="nobody")
    with pytest.raises(AuthenticationFailed):
        team.authenticate("ana")  # a principal name is not a token


def test_a_session_from_an_authenticated_caller(team: Workspace) -> None:
    """A caller acting as itself gets a session of the principal it proved, read no second time; a
    delegating owner's session is the delegate's, looked up (and refused once disabled)."""
    _, token = team.identity.create_token(OWNER, "ana", expires="P1D")
    caller = team.authenticate(token)
    s = team.session(caller, "analytics")
    assert s.principal == "ana" and s.purpose == "analytics"
    delegating = team.authenticate(act_as="aud")
    assert team.session(delegating, "audit").principal == "aud"
    team.identity.disable(OWNER, "aud")
    with pytest.raises(AuthenticationFailed, match="disabled"):
        team.session(delegating, "audit")
    with pytest.raises(InvalidInput):
        team.session(caller, "no such purpose")


def test_one_place_decides(team: Workspace) -> None:
    """The session, the policy service and the agreements all ask the same Authz."""
    assert team.policy.authz is team.authz and team.identity.authz is team.authz
    assert team.agreements.authz is team.authz
    team.policy.cache = False
    assert team.authz.cache is False
    size = team.ledger.head().size
    with pytest.raises(PolicyDenied):
        team.session("ana", "marketing").list_principals()
    assert _denials(team, size) == [("ana", "audit")]
