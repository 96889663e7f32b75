"""Attacks on the data-subject portal from outside: an identifier that names several recipients (the
code would go to an attacker too, and the portal would relay mail past its per-identifier limit), case
variants of one address, and submissions sent in parallel past the limits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from complai.access.identity import OWNER
from complai.app.portal import OUTBOX, OutboxChannel, PortalLimits
from complai.app.workspace import Workspace
from complai.errors import RateLimited
from complai.service.app import create_app
from tests.service.conftest import settings_for
from tests.service.test_portal import csrf, kinds


@pytest.fixture
def ws(sqlite_ws: Workspace) -> Workspace:
    owner = sqlite_ws.session(OWNER, "security")
    owner.add_principal("portal", "service")
    owner.add_rule("portal", "*", "admin", "subject_request")
    return sqlite_ws


@pytest.fixture
def client(ws: Workspace) -> Iterator[TestClient]:
    settings = replace(settings_for(ws), portal_principal="portal")
    with TestClient(create_app(settings, workspace=ws), raise_server_exceptions=False) as c:
        yield c


def messages(ws: Workspace) -> list[Path]:
    d = Path(ws.path) / OUTBOX
    return sorted(d.iterdir()) if d.exists() else []


@pytest.mark.parametrize(
    "identifier",
    [
        "victim@example.org, attacker@evil.example",
        "victim@example.org;attacker@evil.example",
        '"victim@example.org" <attacker@evil.example>',
        "<attacker@evil.example>",
        "list: victim@example.org, attacker@evil.example;",
        "victim@example.org,",
    ],
)
def test_an_identifier_naming_other_recipients_is_refused_and_nothing_is_sent(
    client: TestClient, ws: Workspace, identifier: str
) -> None:
    before = kinds(ws)
    r = client.post("/portal/requests", data={"csrf": csrf(client), "kind": "access", "identifier": identifier})
    assert r.status_code == 400, r.text
    assert "one address" in r.text
    assert messages(ws) == []
    assert kinds(ws) == before  # no portal.submitted


def test_a_plain_address_still_gets_its_code(client: TestClient, ws: Workspace) -> None:
    r = client.post("/portal/requests", data={"csrf": csrf(client), "kind": "access", "identifier": "a.b@example.org"})
    assert r.status_code == 200, r.text
    [message] = messages(ws)
    assert "To: a.b@example.org\n" in message.read_text()


def test_case_variants_of_an_address_share_its_limit(ws: Workspace) -> None:
    portal = ws.session("portal", "subject_request")
    channel = OutboxChannel(Path(ws.path) / OUTBOX)
    limits = PortalLimits(submissions_per_subject=2, submissions_per_address=100)
    for ident in ("victim@example.org", "Victim@Example.org"):
        portal.portal_submit("access", ident, address="10.0.0.1", channel=channel, limits=limits)
    with pytest.raises(RateLimited):
        portal.portal_submit("access", "VICTIM@EXAMPLE.ORG ", address="10.0.0.2", channel=channel, limits=limits)
    assert len(messages(ws)) == 2


def test_parallel_submissions_do_not_pass_the_limit(ws: Workspace) -> None:
    channel = OutboxChannel(Path(ws.path) / OUTBOX)
    limits = PortalLimits(submissions_per_subject=3, submissions_per_address=100)
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(10)

    def submit(i: int) -> None:
        portal = ws.session("portal", "subject_request")
        start.wait()
        try:
            portal.portal_submit("erasure", "victim@example.org", address=f"10.0.0.{i}", channel=channel, limits=limits)
            outcome = "sent"
        except RateLimited:
            outcome = "limited"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(outcomes) == ["limited"] * 7 + ["sent"] * 3
    assert len(messages(ws)) == 3
