"""Tokens: wrong, revoked and expired tokens refused; compared in constant time; never recorded."""

from __future__ import annotations

import hmac
import logging
from datetime import timedelta

import pytest

from complai.errors import AuthenticationFailed, InvalidInput
from complai.workspace import Workspace


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
