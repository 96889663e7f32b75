"""Tokens: wrong, revoked and expired tokens refused; compared in constant time; never recorded."""

from __future__ import annotations

import hmac
import logging
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from complai.access.identity import redact_tokens
from complai.app.workspace import Workspace
from complai.errors import AuthenticationFailed, InvalidInput, PolicyDenied
from complai.events import decode_event


@pytest.fixture
def svc(ws: Workspace) -> Workspace:
    ws.identity.add("owner", "svc", "service")
    ws.identity.grant_role("owner", "svc", "auditor")
    return ws


def test_token_round_trip_and_refusals(svc: Workspace, clock) -> None:  # type: ignore[no-untyped-def]
    tid, token = svc.identity.create_token("owner", "svc", expires="P1D")
    assert svc.session(token, "audit").principal == "svc"
    bad = token[:-1] + ("A" if token[-1] != "A" else "B")
    for wrong in (bad, "cpl_0000000000000000_" + "x" * 43, "not-a-token", ""):
        with pytest.raises(AuthenticationFailed, match="invalid, expired or revoked token"):
            svc.session(wrong, "audit") if wrong.startswith("cpl_") else svc.identity.authenticate(wrong)
    clock.advance(timedelta(days=2))
    with pytest.raises(AuthenticationFailed):
        svc.session(token, "audit")
    clock.advance(timedelta(days=-2))
    svc.identity.revoke_token("owner", tid)
    with pytest.raises(AuthenticationFailed):
        svc.session(token, "audit")
    reasons = [e for e in svc.ledger.entries(kind="auth.refused")]
    assert len(reasons) == 6


def test_disabling_a_principal_revokes_its_tokens(svc: Workspace) -> None:
    _, token = svc.identity.create_token("owner", "svc", expires=None)
    svc.identity.disable("owner", "svc")
    with pytest.raises(AuthenticationFailed):
        svc.session(token, "audit")
    with pytest.raises(AuthenticationFailed, match="disabled"):
        svc.session("svc", "audit")


def test_comparison_is_constant_time(svc: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    _, token = svc.identity.create_token("owner", "svc")
    calls = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    svc.identity.authenticate(token)
    with pytest.raises(AuthenticationFailed):
        svc.identity.authenticate("cpl_0123456789abcdef_" + "y" * 43)  # unknown id: still one comparison
    assert calls == [(32, 32), (32, 32)]


def test_tokens_never_reach_the_ledger_logs_or_errors(svc: Workspace, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tid, token = svc.identity.create_token("owner", "svc")
    secret = token.split("_", 2)[2]
    svc.session(token, "audit")
    messages = []
    for wrong in (token + "x", token.replace(secret, secret[::-1])):
        try:
            svc.session(wrong, "audit")
        except AuthenticationFailed as exc:
            messages.append(str(exc))
    ledger = b"".join(e.data for e in svc.ledger.entries())
    assert tid.encode() in ledger  # the id is recorded ...
    assert secret.encode() not in ledger  # ... the secret never
    assert all(secret not in m for m in messages)
    assert secret not in caplog.text
    with svc.store.read() as conn:
        stored = b"".join(bytes(r[0]) for r in conn.exec_driver_sql("SELECT secret_hash FROM tokens"))
    assert secret.encode() not in stored


def test_passwords_are_argon2id(svc: Workspace) -> None:
    svc.identity.add("owner", "alice", "human", password="correct horse battery")
    assert svc.identity.verify_password("alice", "correct horse battery").name == "alice"
    with svc.store.read() as conn:
        stored = conn.exec_driver_sql("SELECT password_hash FROM principals WHERE name='alice'").scalar()
    assert stored.startswith("$argon2id$")
    for name, pw in (("alice", "wrong password!!"), ("nobody", "correct horse battery")):
        with pytest.raises(AuthenticationFailed, match="wrong name or password"):
            svc.identity.verify_password(name, pw)
    with pytest.raises(InvalidInput, match="12 characters"):
        svc.identity.add("owner", "bob", "human", password="short")


# --- minting rules ---------------------------------------------------------------------------------


@pytest.fixture
def team(ws: Workspace) -> Workspace:
    """ana (analyst), adm (admin), boss (a second owner) beside the workspace owner."""
    for name, role in (("ana", "analyst"), ("adm", "admin"), ("boss", "owner")):
        ws.identity.add("owner", name, "service")
        ws.identity.grant_role("owner", name, role)
    return ws


def test_minting_for_another_principal_needs_the_owner_role(team: Workspace) -> None:
    with pytest.raises(PolicyDenied, match="the owner role is required"):
        team.identity.create_token("ana", "adm", expires="P1D")
    for target in ("boss", "ana"):  # an admin mints for no one else, owner or not
        with pytest.raises(PolicyDenied, match="may not mint tokens for others"):
            team.identity.create_token("adm", target, expires="P1D")
    _, token = team.identity.create_token("boss", "ana", expires="P1D")  # an owner for a non-owner
    assert team.identity.authenticate(token).name == "ana"
    _, token = team.identity.create_token("owner", "boss", expires=None)  # owner for anyone, any lifetime
    assert team.identity.authenticate(token).name == "boss"
    created = [decode_event(e.data) for e in team.ledger.entries(kind="token.created")]
    assert [(e.actor, e.principal) for e in created] == [("boss", "ana"), ("owner", "boss")]  # type: ignore[attr-defined]


@pytest.mark.parametrize("minter", ["ana", "adm"])
def test_self_service_is_bounded_by_the_workspace_maximum(team: Workspace, minter: str) -> None:
    for too_long in (None, "P91D", "P1Y"):
        with pytest.raises(PolicyDenied, match="expire within P90D"):
            team.identity.create_token(minter, minter, expires=too_long)
    team.identity.create_token(minter, minter, expires="P90D")
    team.identity.set_token_max_lifetime("owner", "P7D")
    with pytest.raises(PolicyDenied, match="expire within P7D"):
        team.identity.create_token(minter, minter, expires="P8D")
    team.identity.create_token(minter, minter, expires="P7D")
    assert team.identity.token_max_lifetime() == "P7D"
    with pytest.raises(PolicyDenied, match="owner role is required"):
        team.identity.set_token_max_lifetime(minter, "P10Y")
    assert team.identity.token_max_lifetime() == "P7D"
    assert [decode_event(e.data).actor for e in team.ledger.entries(kind="token.lifetime_set")] == ["owner"]


def test_a_token_never_outlives_the_token_that_mints_it(team: Workspace, clock) -> None:  # type: ignore[no-untyped-def]
    _, minting = team.identity.create_token("owner", "boss", expires="P10D")
    bound = team.identity.authenticate_credential(minting).expires_at
    assert bound is not None
    for who, whom in (("boss", "boss"), ("boss", "ana")):
        for too_long in (None, "P11D"):
            with pytest.raises(PolicyDenied, match="cannot outlive the token that mints it"):
                team.identity.create_token(who, whom, expires=too_long, credential_expires=bound)
        team.identity.create_token(who, whom, expires="P10D", credential_expires=bound)
    # an owner holding the workspace's keys (no token) may mint a token that never expires
    team.identity.create_token("owner", "owner", expires=None)


def test_maximum_lifetime_must_be_a_positive_duration(team: Workspace) -> None:
    for bad in ("P0D", "forever", "", "P99999999Y"):
        with pytest.raises(InvalidInput):
            team.identity.set_token_max_lifetime("owner", bad)
    assert team.identity.token_max_lifetime() == "P90D"


# --- tokens are never echoed -----------------------------------------------------------------------

_SECRETS = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", min_size=43, max_size=43
)


@st.composite
def _mangled_tokens(draw: st.DrawFn) -> tuple[str, str]:
    """A token-looking string that holds a secret but is not a valid token, and that secret."""
    secret = draw(_SECRETS)
    token_id = draw(st.text(alphabet="0123456789abcdef", min_size=16, max_size=16))
    token = f"cpl_{token_id}_{secret}"
    how = draw(st.sampled_from(["pad", "bearer", "upper", "lower", "newline", "truncate", "extend", "quote"]))
    mangled = {
        "pad": lambda t: " " + t + " ",
        "bearer": lambda t: "Bearer " + t,
        "upper": str.upper,
        "lower": str.lower,
        "newline": lambda t: t + "\n",
        "truncate": lambda t: t[:-1],
        "extend": lambda t: t + "x",
        "quote": lambda t: f'"{t}"',
    }[how](token)
    return mangled, secret


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_mangled_tokens())
def test_malformed_tokens_are_never_echoed(svc: Workspace, case: tuple[str, str]) -> None:
    mangled, secret = case
    core = secret[8:-8]  # no 27-character run of the secret, in any case, appears in the message
    for attempt in (lambda: svc.session(mangled, "audit"), lambda: svc.identity.authenticate(mangled)):
        with pytest.raises(AuthenticationFailed) as info:
            attempt()
        message = str(info.value)
        assert core.lower() not in message.lower()
        assert message == "invalid, expired or revoked token"


def test_revoking_by_the_whole_token_does_not_echo_it(svc: Workspace) -> None:
    tid, token = svc.identity.create_token("owner", "svc")
    secret = token.split("_", 2)[2]
    for wrong in (token, " " + token, token.upper()):
        with pytest.raises(InvalidInput) as info:
            svc.identity.revoke_token("owner", wrong)
        assert secret.lower() not in str(info.value).lower() and "token's id" in str(info.value)
    svc.identity.revoke_token("owner", tid)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(case=_mangled_tokens(), before=st.text(max_size=20), after=st.text(max_size=20))
def test_redaction_removes_any_token_secret_from_a_message(case: tuple[str, str], before: str, after: str) -> None:
    """The CLI's last line of defence: whatever message an error carries, no token secret survives."""
    mangled, secret = case
    core = secret[8:-8]
    for given_token in (mangled, None):
        out = redact_tokens(before + mangled + after, given_token)
        assert core.lower() not in out.lower()


def test_revoking_another_principal_token_needs_owner_or_admin(team: Workspace) -> None:
    ana_tid, _ = team.identity.create_token("owner", "ana", expires="P1D")
    boss_tid, _ = team.identity.create_token("owner", "boss", expires="P1D")
    adm_tid, _ = team.identity.create_token("owner", "adm", expires="P1D")
    with pytest.raises(PolicyDenied, match="may not revoke"):
        team.identity.revoke_token("ana", adm_tid)
    with pytest.raises(PolicyDenied, match="may not revoke"):
        team.identity.revoke_token("adm", boss_tid)  # an admin cannot lock an owner out
    team.identity.revoke_token("adm", ana_tid)
    team.identity.revoke_token("ana", team.identity.create_token("ana", "ana", expires="P1D")[0])  # its own
    team.identity.revoke_token("owner", boss_tid)
