"""Who may mint a token for whom. A token carries every right of its principal, so no principal may
obtain through a token it mints a right it does not hold itself: a principal mints tokens for itself,
and minting for another principal is the owner's. An admin (no personal data, no audit) who could mint
a token for a principal that may read or audit would hold those rights; it is refused, recorded as an
`access.denied` event, and no token is made."""

from __future__ import annotations

import pytest

from complai.app.workspace import Workspace
from complai.errors import AuthenticationFailed, NotFound, PolicyDenied
from complai.events import decode_event


@pytest.fixture
def team(customers: Workspace) -> Workspace:
    """support (may read customers for credit scoring by a rule), dana (auditor), svc (a service with no
    right at all), adm and ada (admins), boss (a second owner), beside the workspace owner."""
    ws = customers
    for name, role in (("support", None), ("dana", "auditor"), ("svc", None), ("adm", "admin"), ("ada", "admin")):
        ws.identity.add("owner", name, "service")
        if role:
            ws.identity.grant_role("owner", name, role)
    ws.identity.add("owner", "boss", "service")
    ws.identity.grant_role("owner", "boss", "owner")
    ws.policy.add("owner", "support", "customers", "read", "credit_scoring")
    return ws


def _denied_mints(ws: Workspace, start: int) -> list[tuple[str, str, str | None]]:
    out = []
    for entry in ws.ledger.entries(start=start):
        event = decode_event(entry.data)
        assert event.kind == "access.denied", event.kind  # nothing but the refusal was recorded
        out.append((event.actor, event.action, event.delegated_by))  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("target", ["support", "dana", "svc", "ada", "boss", "owner"])
def test_an_admin_mints_tokens_for_no_other_principal(team: Workspace, target: str) -> None:
    """Whoever the target is (one holding rights the admin lacks, one holding none, another admin, an
    owner), the admin is refused with the same message, the refusal recorded and no token made."""
    before = team.ledger.head().size
    with pytest.raises(PolicyDenied) as exc:
        team.identity.create_token("adm", target, expires="P1D")
    assert str(exc.value) == "adm may not mint tokens for others (the owner role is required)"
    assert _denied_mints(team, before) == [("adm", "mint_token", None)]
    assert team.identity.tokens_of(target) == []


def test_the_refusal_does_not_say_whether_the_principal_exists(team: Workspace) -> None:
    messages = set()
    for target in ("support", "nobody-by-that-name"):
        for minter in ("adm", "dana", "svc"):
            with pytest.raises(PolicyDenied) as exc:
                team.identity.create_token(minter, target, expires="P1D")
            messages.add(str(exc.value).replace(minter, "X"))
    assert messages == {"X may not mint tokens for others (the owner role is required)"}
    with pytest.raises(NotFound):  # the owner, who may mint for others, learns that it does not exist
        team.identity.create_token("owner", "nobody-by-that-name", expires="P1D")


def test_an_admin_cannot_read_or_audit_through_a_session_it_mints(team: Workspace) -> None:
    """The red team's path, through the session (the door every interface uses): the admin is refused
    the read and the ledger, then refused a token for the principals that hold them."""
    admin = team.session("adm", "security")
    with pytest.raises(PolicyDenied):
        team.session("adm", "credit_scoring").read("customers")
    with pytest.raises(PolicyDenied):
        team.session("adm", "audit").ledger_entries(limit=1)
    for target in ("support", "dana"):
        with pytest.raises(PolicyDenied, match="may not mint tokens for others"):
            admin.create_token(target, "PT30M")
        assert team.identity.tokens_of(target) == []
    # what the admin may mint is its own token, which carries only the admin's rights
    own = admin.create_token(expires="PT30M")
    assert own.principal == "adm"
    with pytest.raises(PolicyDenied):
        team.session(own.token, "credit_scoring").read("customers")


@pytest.mark.parametrize("minter", ["adm", "dana", "support", "svc"])
def test_every_principal_mints_for_itself(team: Workspace, minter: str) -> None:
    token_id, token = team.identity.create_token(minter, minter, expires="P1D")
    assert team.identity.authenticate(token).name == minter
    (created,) = [decode_event(e.data) for e in team.ledger.entries(kind="token.created")]
    assert (created.actor, created.principal) == (minter, minter)  # type: ignore[attr-defined]
    assert created.token_id == token_id  # type: ignore[attr-defined]


def test_owners_mint_for_anyone(team: Workspace) -> None:
    for minter, target in (("owner", "support"), ("owner", "adm"), ("boss", "dana"), ("boss", "owner")):
        _, token = team.identity.create_token(minter, target, expires="P1D")
        assert team.identity.authenticate(token).name == target
    created = [decode_event(e.data) for e in team.ledger.entries(kind="token.created")]
    assert [(e.actor, e.principal) for e in created] == [  # type: ignore[attr-defined]
        ("owner", "support"),
        ("owner", "adm"),
        ("boss", "dana"),
        ("boss", "owner"),
    ]
    with pytest.raises(AuthenticationFailed):
        team.identity.authenticate("cpl_0123456789abcdef_not-a-secret")


def test_a_disabled_owner_mints_for_no_one(team: Workspace) -> None:
    team.identity.disable("owner", "boss")
    before = team.ledger.head().size
    with pytest.raises(PolicyDenied, match="boss is disabled"):
        team.identity.create_token("boss", "support", expires="P1D")
    assert _denied_mints(team, before) == [("boss", "mint_token", None)]
