"""The officer's side of a portal request: the console marks it, shows what was asked (never the
identifier) and fulfils it without a subject id; the API says it came through the portal and fulfils it
without a subject (refusing one); the person then sees it fulfilled on the portal and downloads the export."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from complai.access.identity import OWNER
from complai.app.portal import OUTBOX, OutboxChannel, PortalLimits
from complai.app.workspace import Workspace
from complai.errors import InvalidInput, NotFound
from complai.service.app import create_app
from complai.service.console.web import COOKIE, csrf_token
from tests.dp.conftest import adult_workspace
from tests.service.conftest import bearer, settings_for
from tests.service.test_portal import code_in, csrf, outbox, reference_in, subject_of, submit, verify

CORRECTION = "My age is wrong: it should read 44 <b>not</b> what you hold"


@pytest.fixture
def ws(sqlite_ws: Workspace) -> Workspace:
    """Twelve people of the adult sample, the portal principal, an officer (dana: auditor and admin, who
    may export, erase and correct for subject requests) and an auditor (ada)."""
    w = adult_workspace(sqlite_ws, 12)
    owner = w.session(OWNER, "security")
    owner.add_principal("portal", "service")
    owner.add_rule("portal", "*", "admin", "subject_request")
    for name, roles in (("dana", ("auditor", "admin")), ("ada", ("auditor",))):
        owner.add_principal(name, "human")
        for role in roles:
            owner.grant_role(name, role)
    for action in ("export", "erase", "ingest"):
        owner.add_rule("dana", "*", action, "subject_request")
    return w


@pytest.fixture
def client(ws: Workspace) -> Iterator[TestClient]:
    settings = replace(settings_for(ws), portal_principal="portal")
    with TestClient(create_app(settings, workspace=ws), raise_server_exceptions=False) as c:
        yield c


def token(ws: Workspace, name: str) -> str:
    return ws.session(OWNER, "security").create_token(name, "P1D").token


def console_as(client: TestClient, ws: Workspace, name: str) -> str:
    """Logged in to the console as `name` (a token the owner mints); returns the form's CSRF token."""
    t = token(ws, name)
    client.cookies.set(COOKIE, t, path="/console")
    return csrf_token(t)


def through_portal(ws: Workspace, kind: str, identifier: str, **extra: str) -> str:
    """A request made and verified through the portal's session operations; its register id."""
    portal, limits = ws.session("portal", "subject_request"), PortalLimits()
    box = Path(ws.path) / OUTBOX
    before = set(box.iterdir()) if box.exists() else set()
    receipt = portal.portal_submit(
        kind, identifier, address="127.0.0.1", channel=OutboxChannel(box), limits=limits, **extra
    )
    [message] = set(box.iterdir()) - before
    portal.portal_verify(receipt.reference, code_in(message), address="127.0.0.1", limits=limits)
    [rid] = [r["id"] for r in ws.session(OWNER, "audit").requests() if r["type"] == kind and r["status"] == "open"]
    return rid


def ages(ws: Workspace, subject: str) -> list[int]:
    frame = ws.vault.fetch("adult", "analytics", ["subject_id", "age"])[0]
    return [int(a) for a in frame.loc[frame["subject_id"] == subject, "age"]]


def test_access_through_the_portal_fulfilled_over_the_api_and_downloaded(client: TestClient, ws: Workspace) -> None:
    subject = subject_of(ws, 1)
    status, page = submit(client, "access", subject)
    assert status == 200
    reference = reference_in(page)
    [message] = outbox(ws)
    status, page = verify(client, reference, code_in(message))
    assert status == 200
    found = re.search(r'id="follow-code">([A-Z0-9-]+)<', page)
    assert found is not None
    follow = {"reference": reference, "follow_code": found.group(1)}
    before = client.post("/portal/follow", data={"csrf": csrf(client), **follow})
    assert "Download your data" not in before.text

    officer = bearer(token(ws, "dana"))
    [listed] = client.get("/api/v1/requests", headers=officer).json()
    rid = listed["id"]
    shown = client.get(f"/api/v1/requests/{rid}", headers=officer)
    assert shown.status_code == 200
    assert shown.json()["portal"] == {
        "kind": "access",
        "purpose": None,
        "verified_by": "email",
        "identifier_held": True,
        "details": None,
    }
    assert subject not in shown.text

    done = client.post(f"/api/v1/requests/{rid}/fulfil", headers=officer, json={})
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["portal"] is True and body["export"] is None and body["request"]["status"] == "fulfilled"
    assert subject not in done.text  # the export is not handed to the officer
    assert client.get(f"/api/v1/requests/{rid}", headers=officer).json()["portal"]["identifier_held"] is False

    after = client.post("/portal/follow", data={"csrf": csrf(client), **follow})
    assert after.status_code == 200 and 'class="status fulfilled"' in after.text and "Download your data" in after.text
    download = client.post("/portal/export", data={"csrf": csrf(client), **follow})
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    exported = json.loads(download.content)
    assert exported["subject"]["id"] == subject and len(exported["records"]["adult"]) == 1


def test_the_api_refuses_a_subject_for_a_portal_request_and_requires_one_otherwise(
    client: TestClient, ws: Workspace
) -> None:
    subject = subject_of(ws, 2)
    rid = through_portal(ws, "erasure", subject)
    officer = bearer(token(ws, "dana"))
    for body in ({"subject": subject}, {"subject": "someone-else"}, {"purpose": "marketing"}):
        r = client.post(f"/api/v1/requests/{rid}/fulfil", headers=officer, json=body)
        assert r.status_code == 400 and "came through the portal" in r.json()["detail"], r.text
    assert ws.session(OWNER, "audit").request(rid)["steps"] == [] and ages(ws, subject)  # nothing erased

    other = subject_of(ws, 3)
    plain = ws.session(OWNER, "subject_request").request_open("access", other).value["id"]
    ws.session(OWNER, "subject_request").request_verify(plain, "document")
    r = client.post(f"/api/v1/requests/{plain}/fulfil", headers=officer, json={})
    assert r.status_code == 400 and "subject" in r.json()["detail"]
    assert client.get(f"/api/v1/requests/{plain}", headers=officer).json()["portal"] is None
    r = client.post(f"/api/v1/requests/{plain}/fulfil", headers=officer, json={"subject": other})
    assert r.status_code == 200 and r.json()["portal"] is False and r.json()["export"]["records"]["adult"]
    # the body stays strict
    r = client.post(f"/api/v1/requests/{rid}/fulfil", headers=officer, json={"subject": 7})
    assert r.status_code == 400 and "came through the portal" not in r.text

    r = client.post(f"/api/v1/requests/{rid}/fulfil", headers=officer, json={})
    assert r.status_code == 200 and r.json()["request"]["status"] == "fulfilled"
    assert ages(ws, subject) == []
    again = client.post(f"/api/v1/requests/{rid}/fulfil", headers=officer, json={})
    assert again.status_code == 400 and "closed" in again.json()["detail"]


def test_the_console_marks_shows_and_fulfils_a_portal_rectification(client: TestClient, ws: Workspace) -> None:
    subject = subject_of(ws, 4)
    rid = through_portal(ws, "rectification", subject, details=CORRECTION)
    other = subject_of(ws, 5)
    plain = ws.session(OWNER, "subject_request").request_open("rectification", other).value["id"]
    form = console_as(client, ws, "dana")

    queue = client.get("/console/requests")
    assert queue.status_code == 200
    rows = {m.group(1): m.group(2) for m in re.finditer(r'<a href="/console/requests/([^"]+)">(.*?)<br>', queue.text)}
    assert 'class="badge"' in rows[rid] and "portal" in rows[rid]
    assert "portal" not in rows[plain]

    page = client.get(f"/console/requests/{rid}")
    assert page.status_code == 200
    assert "identity verified by email through the portal" in page.text
    assert "My age is wrong: it should read 44 &lt;b&gt;not&lt;/b&gt; what you hold" in page.text  # escaped
    assert 'name="subject"' not in page.text and 'name="changes"' in page.text
    assert subject not in page.text
    assert 'name="subject"' in client.get(f"/console/requests/{plain}").text  # today's form

    sent = client.post(
        f"/console/requests/{rid}/fulfil", data={"csrf": form, "subject": subject, "changes": "adult.age=44"}
    )
    assert sent.status_code == 400 and ages(ws, subject) != [44]
    done = client.post(
        f"/console/requests/{rid}/fulfil", data={"csrf": form, "changes": "adult.age=44\n"}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"].endswith("done=fulfilled-portal")
    assert ages(ws, subject) == [44]
    after = client.get(done.headers["location"])
    assert "Request carried out" in after.text and "no longer held" in after.text and CORRECTION[:12] not in after.text
    assert ws.session(OWNER, "audit").request(rid)["status"] == "fulfilled"


def test_an_auditor_sees_a_portal_request_but_not_what_was_asked_and_nothing_is_refused(
    client: TestClient, ws: Workspace
) -> None:
    rid = through_portal(ws, "rectification", subject_of(ws, 6), details=CORRECTION)
    refused_before = ws.session(OWNER, "audit").ledger_entries(kind="access.denied", limit=10_000)
    console_as(client, ws, "ada")
    page = client.get(f"/console/requests/{rid}")
    assert page.status_code == 200 and "identity verified by email through the portal" in page.text
    assert "My age is wrong" not in page.text
    shown = client.get(f"/api/v1/requests/{rid}", headers=bearer(token(ws, "ada"))).json()
    assert shown["portal"]["kind"] == "rectification" and shown["portal"]["details"] is None
    assert ws.session(OWNER, "audit").ledger_entries(kind="access.denied", limit=10_000) == refused_before
    refused = client.post(f"/api/v1/requests/{rid}/fulfil", headers=bearer(token(ws, "ada")), json={})
    assert refused.status_code == 403


def test_session_marks_portal_requests_and_keeps_the_identifier_from_the_officer(ws: Workspace) -> None:
    subject = subject_of(ws, 7)
    rid = through_portal(ws, "objection", subject, purpose="marketing")
    plain = ws.session(OWNER, "subject_request").request_open("access", subject_of(ws, 8)).value["id"]
    audit = ws.session("ada", "audit")
    assert audit.portal_request_ids() == frozenset({rid})
    assert audit.portal_summary(plain) is None
    summary = ws.session("dana", "subject_request").portal_summary(rid)
    assert summary == {
        "kind": "objection",
        "purpose": "marketing",
        "verified_by": "email",
        "identifier_held": True,
        "details": None,
    }
    assert subject not in json.dumps(summary)
    with pytest.raises(NotFound):
        ws.session("dana", "subject_request").portal_fulfil(plain)
    with TestClient(create_app(settings_for(ws), workspace=ws), raise_server_exceptions=False) as client:
        console_as(client, ws, "dana")
        page = client.get(f"/console/requests/{rid}")
        assert page.status_code == 200 and "Use concerned" in page.text
        assert ws.taxonomy.purpose("marketing").name in page.text and 'name="purpose"' not in page.text
        assert 'name="subject"' not in page.text and subject not in page.text
    ws.session("dana", "subject_request").portal_fulfil(rid)
    with pytest.raises(InvalidInput, match="closed"):
        ws.session("dana", "subject_request").portal_fulfil(rid)
