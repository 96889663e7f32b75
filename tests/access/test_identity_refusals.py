"""Identity refusals: a principal without the right is refused before anything about the workspace is
looked up (which principals or tokens exist), and every refusal is an `access.denied` event."""

from __future__ import annotations

import pytest

from complai.app.workspace import Workspace
from complai.errors import NotFound, PolicyDenied
from complai.events import decode_event


@pytest.fixture
def team(ws: Workspace) -> Workspace:
    for name, role in (("ana", "analyst"), ("adm", "admin"), ("boss", "owner")):
        ws.identity.add("owner", name, "service")
        ws.identity.grant_role("owner", name, role)
    return ws


def _denied(ws: Workspace) -> list[tuple[str, str]]:
    events = [decode_event(e.data) for e in ws.ledger.entries(kind="access.denied")]
    return [(e.actor, e.action) for e in events]  # type: ignore[attr-defined]


def test_minting_for_others_is_refused_before_the_principal_is_looked_up(team: Workspace) -> None:
    messages = set()
    for target in ("adm", "nobody-by-that-name"):
        with pytest.raises(PolicyDenied, match="may not mint tokens for others") as exc:
            team.identity.create_token("ana", target, expires="P1D")
        messages.add(str(exc.value))
    assert len(messages) == 1
    with pytest.raises(PolicyDenied, match="may not mint tokens for others"):  # an admin is refused alike
        team.identity.create_token("adm", "nobody-by-that-name", expires="P1D")
    with pytest.raises(NotFound):  # those who may mint for others (owners) learn that it does not exist
        team.identity.create_token("boss", "nobody-by-that-name", expires="P1D")


def test_revoking_is_refused_alike_for_unknown_and_others_tokens(team: Workspace) -> None:
    adm_tid, _ = team.identity.create_token("owner", "adm", expires="P1D")
    messages = []
    for tid in (adm_tid, "0123456789abcdef"):
        with pytest.raises(PolicyDenied) as exc:
            team.identity.revoke_token("ana", tid)
        messages.append(str(exc.value).replace(tid, "ID"))
    assert messages[0] == messages[1]
    with pytest.raises(NotFound):
        team.identity.revoke_token("owner", "0123456789abcdef")


def test_identity_refusals_are_recorded(team: Workspace) -> None:
    size = team.ledger.head().size
    attempts = [
        lambda: team.identity.create_token("ana", "ana", expires=None),  # never expires: owners only
        lambda: team.identity.create_token("ana", "adm", expires="P1D"),
        lambda: team.identity.create_token("adm", "boss", expires="P1D"),
        lambda: team.identity.create_token("adm", "ana", expires="P1D"),  # an admin for a non-owner too
        lambda: team.identity.set_token_max_lifetime("ana", "P10Y"),
        lambda: team.identity.add("adm", "mallory", "service"),
        lambda: team.identity.grant_role("adm", "ana", "owner"),
        lambda: team.identity.disable("ana", "adm"),
        lambda: team.identity.revoke_token("ana", "0123456789abcdef"),
    ]
    for attempt in attempts:
        with pytest.raises(PolicyDenied):
            attempt()
    assert team.ledger.head().size == size + len(attempts)
    assert [actor for actor, _ in _denied(team)] == ["ana", "ana", "adm", "adm", "ana", "adm", "adm", "ana", "ana"]
    assert team.identity.tokens_of("ana") == [] and "mallory" not in [p.name for p in team.identity.list()]


def test_policy_changes_by_non_owners_are_refused_first_and_recorded(team: Workspace) -> None:
    rule = team.policy.add("owner", "ana", "customers", "read", "marketing")
    size = team.ledger.head().size
    messages = set()
    attempts = [
        lambda: team.policy.add("adm", "ana", "customers", "read", "marketing"),
        lambda: team.policy.add("ana", "adm", "", "read", "marketing", effect="bogus"),  # refused, not validated
        lambda: team.policy.remove("adm", rule.id),
        lambda: team.policy.remove("adm", 999_999),  # an unknown rule gets the same refusal
    ]
    for attempt in attempts:
        with pytest.raises(PolicyDenied) as exc:
            attempt()
        messages.add(str(exc.value).split(" ", 1)[1])  # the same words, whoever asks
    assert len(messages) == 1
    assert team.ledger.head().size == size + len(attempts)
    assert _denied(team)[-4:] == [("adm", "change_policy"), ("ana", "change_policy")] + [("adm", "change_policy")] * 2
    assert [r.id for r in team.policy.rules()] == [rule.id]
