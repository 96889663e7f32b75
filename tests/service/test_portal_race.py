"""The portal's limit on wrong codes per address holds when the codes come in parallel: each attempt is
counted in the write transaction that records its refusal, so however many arrive at once from one
address, no more than the limit are ever checked; the rest are refused as rate-limited unchecked. On
each backend the run has (PostgreSQL when COMPLAI_TEST_DATABASE_URL is set)."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from complai.access.identity import OWNER
from complai.app.portal import OUTBOX, OutboxChannel, PortalLimits
from complai.app.workspace import Workspace
from complai.errors import AuthenticationFailed, RateLimited

LIMIT = 6
PARALLEL = 24
ADDRESS = "198.51.100.7"
# a wrong code locks nothing here: every refusal below is the address's limit, not the submission's
LIMITS = PortalLimits(refusals_per_address=LIMIT, code_attempts=1000)


def portal(ws: Workspace) -> None:
    owner = ws.session(OWNER, "security")
    owner.add_principal("portal", "service")
    owner.add_rule("portal", "*", "admin", "subject_request")


def submitted(ws: Workspace) -> tuple[str, str]:
    """A submission's reference and its one-time code, as the outbox holds them."""
    session = ws.session("portal", "subject_request")
    receipt = session.portal_submit(
        "access", "racer@example.org", address=ADDRESS, channel=OutboxChannel(Path(ws.path) / OUTBOX), limits=LIMITS
    )
    (message,) = (Path(ws.path) / OUTBOX).iterdir()
    m = re.search(r"one-time code: (\d{8})", message.read_text())
    assert m is not None
    return receipt.reference, m.group(1)


def all_at_once(attempts: list[Callable[[], object]]) -> Counter[str]:
    """Run the attempts in threads released together; count how each ended."""
    gate = threading.Barrier(len(attempts))
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def run(attempt: Callable[[], object]) -> None:
        gate.wait()
        try:
            attempt()
            outcome = "accepted"
        except AuthenticationFailed:
            outcome = "checked and refused"
        except RateLimited:
            outcome = "rate-limited"
        except Exception as exc:  # any other end fails the test, by name
            outcome = type(exc).__name__
        with lock:
            outcomes[outcome] += 1

    threads = [threading.Thread(target=run, args=(a,)) for a in attempts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return outcomes


def refused_codes(ws: Workspace) -> int:
    entries = ws.session(OWNER, "audit").ledger_entries(kind="auth.refused", limit=10_000)
    return sum(1 for e in entries if json.loads(e.data).get("reason", "").startswith("portal code refused"))


def test_parallel_wrong_codes_from_one_address_never_pass_its_limit(any_ws: Workspace) -> None:
    portal(any_ws)
    reference, code = submitted(any_ws)
    wrong = [f"{(int(code) + i) % 10**8:08d}" for i in range(1, PARALLEL + 1)]

    def attempt(c: str) -> Callable[[], object]:
        return lambda: any_ws.session("portal", "subject_request").portal_verify(
            reference, c, address=ADDRESS, limits=LIMITS
        )

    outcomes = all_at_once([attempt(c) for c in wrong])
    assert outcomes == {"checked and refused": LIMIT, "rate-limited": PARALLEL - LIMIT}
    assert refused_codes(any_ws) == LIMIT  # each checked code recorded once; the limited ones not at all
    # the right code is refused too from that address, unchecked; from another it opens the request
    session = any_ws.session("portal", "subject_request")
    assert all_at_once([lambda: session.portal_verify(reference, code, address=ADDRESS, limits=LIMITS)]) == {
        "rate-limited": 1
    }
    done = session.portal_verify(reference, code, address="203.0.113.9", limits=LIMITS)
    assert done.view["status"] != "pending" and done.follow_code


def test_parallel_wrong_follow_ups_and_codes_share_the_limit(any_ws: Workspace) -> None:
    portal(any_ws)
    reference, code = submitted(any_ws)

    def follow(i: int, address: str = ADDRESS) -> Callable[[], object]:
        return lambda: any_ws.session("portal", "subject_request").portal_status(
            reference, f"WRONG-FOLLOW-UP-{i:04d}", address=address, limits=LIMITS
        )

    def verify(i: int, address: str = ADDRESS) -> Callable[[], object]:
        c = f"{(int(code) + i) % 10**8:08d}"
        return lambda: any_ws.session("portal", "subject_request").portal_verify(
            reference, c, address=address, limits=LIMITS
        )

    attempts = [(follow if i % 2 else verify)(i) for i in range(1, PARALLEL + 1)]
    outcomes = all_at_once(attempts)
    assert outcomes == {"checked and refused": LIMIT, "rate-limited": PARALLEL - LIMIT}
    # another address has its own allowance
    assert all_at_once([follow(0, "203.0.113.9"), verify(PARALLEL + 1, "203.0.113.9")]) == {"checked and refused": 2}
