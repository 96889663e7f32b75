"""Attacks on password login: guesses sent in parallel must not get past the per-principal limit (the
limit is counted and the attempt reserved in one write transaction, before the password is checked)."""

from __future__ import annotations

import threading

from complai.app.login import LoginLimits
from complai.app.workspace import Workspace
from complai.errors import AuthenticationFailed, RateLimited

PASSWORD = "correct horse battery"


def test_parallel_wrong_passwords_get_no_more_checks_than_the_limit(any_ws: Workspace) -> None:
    any_ws.session("owner", "security").add_principal("dana", "human", PASSWORD)
    limits = LoginLimits(per_principal=3, per_address=1000, window_s=900)
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def guess(i: int) -> None:
        start.wait()
        try:
            any_ws.login("dana", f"guess number {i}", address=f"10.0.0.{i}", limits=limits)
            outcome = "ok"
        except AuthenticationFailed:
            outcome = "checked"
        except RateLimited:
            outcome = "limited"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(outcomes) == 12
    # each address is new, so only the principal's limit stands between an attacker and the password
    assert outcomes.count("checked") == 3, outcomes
    assert outcomes.count("limited") == 9, outcomes
    # and the right password is refused too while the limit holds
    try:
        any_ws.login("dana", PASSWORD, address="10.0.1.1", limits=limits)
        raise AssertionError("a login past the limit was let through")
    except RateLimited:
        pass


def test_a_successful_login_does_not_count_as_a_failure(any_ws: Workspace) -> None:
    any_ws.session("owner", "security").add_principal("dana", "human", PASSWORD)
    limits = LoginLimits(per_principal=2, per_address=1000, window_s=900)
    for _ in range(4):
        assert any_ws.login("dana", PASSWORD, address="10.0.0.1", limits=limits).token
    try:
        any_ws.login("dana", "a wrong password", address="10.0.0.1", limits=limits)
    except AuthenticationFailed:
        pass
    assert any_ws.login("dana", PASSWORD, address="10.0.0.1", limits=limits).token
