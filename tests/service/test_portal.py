"""The data-subject portal: a person submits a request, proves the address with a one-time code from the
outbox, follows the request and downloads its export; nothing before verification tells whether the
person holds data here; codes are limited and expire; forms need CSRF; submissions are rate-limited."""

from __future__ import annotations

import json
import logging
import re
import socket
import stat
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from complai.access.identity import OWNER
from complai.app.portal import OUTBOX, PortalLimits
from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.config import ServiceSettings
from complai.errors import NotFound
from complai.service.app import create_app
from complai.store.tables import ledger_entries, portal_requests
from tests.dp.conftest import adult_workspace
from tests.service.conftest import settings_for

UNKNOWN = "nobody.here@example.org"


@pytest.fixture
def ws(sqlite_ws: Workspace) -> Workspace:
    w = adult_workspace(sqlite_ws, 12)
    owner = w.session(OWNER, "security")
    owner.add_principal("portal", "service")
    owner.add_rule("portal", "*", "admin", "subject_request")
    return w


@pytest.fixture
def portal_settings(ws: Workspace) -> ServiceSettings:
    return replace(settings_for(ws), portal_principal="portal")


@pytest.fixture
def client(ws: Workspace, portal_settings: ServiceSettings) -> Iterator[TestClient]:
    with TestClient(create_app(portal_settings, workspace=ws), raise_server_exceptions=False) as c:
        yield c


def subject_of(ws: Workspace, i: int = 0) -> str:
    return str(ws.vault.fetch("adult", "analytics", ["subject_id"])[0]["subject_id"].iloc[i])


def outbox(ws: Workspace) -> list[Path]:
    d = Path(ws.path) / OUTBOX
    return sorted(d.iterdir(), key=lambda p: p.stat().st_mtime_ns) if d.exists() else []


def csrf(client: TestClient) -> str:
    page = client.get("/portal/")
    assert page.status_code == 200
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m is not None
    return m.group(1)


def submit(client: TestClient, kind: str, identifier: str, **extra: str) -> tuple[int, str]:
    r = client.post("/portal/requests", data={"csrf": csrf(client), "kind": kind, "identifier": identifier, **extra})
    return r.status_code, r.text


def reference_in(page: str) -> str:
    m = re.search(r'name="reference" type="text" value="([A-Z0-9-]+)"', page)
    assert m is not None, page
    return m.group(1)


def code_in(message: Path) -> str:
    m = re.search(r"one-time code: (\d{8})", message.read_text())
    assert m is not None
    return m.group(1)


def verify(client: TestClient, reference: str, code: str) -> tuple[int, str]:
    r = client.post("/portal/verify", data={"csrf": csrf(client), "reference": reference, "code": code})
    return r.status_code, r.text


def kinds(ws: Workspace) -> list[str]:
    with ws.store.read() as conn:
        return list(conn.execute(select(ledger_entries.c.kind).order_by(ledger_entries.c.seq)).scalars())


def ledger_bytes(ws: Workspace) -> bytes:
    with ws.store.read() as conn:
        return b"".join(bytes(r) for r in conn.execute(select(ledger_entries.c.data)).scalars())


def test_without_a_principal_the_portal_is_closed(sqlite_ws: Workspace) -> None:
    with TestClient(create_app(settings_for(sqlite_ws), workspace=sqlite_ws), raise_server_exceptions=False) as c:
        page = c.get("/portal/")
        assert page.status_code == 404 and "portal is closed" in page.text
        refused = c.post("/portal/requests", data={"kind": "access", "identifier": UNKNOWN})
        assert refused.status_code in (403, 404)
    assert not outbox(sqlite_ws)


def test_the_portal_has_its_own_pages_and_cookie(client: TestClient) -> None:
    page = client.get("/portal/")
    assert page.status_code == 200
    assert "/static/portal.css" in page.text and "console" not in page.text.lower()
    cookie = page.headers["set-cookie"].lower()
    assert "complai_portal_csrf=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert "path=/portal" in cookie
    assert page.headers["cache-control"] == "no-store"
    assert client.get("/static/portal.css").status_code == 200


def test_access_request_from_submission_to_download(
    client: TestClient, ws: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    subject = subject_of(ws)
    status, page = submit(client, "access", subject)
    assert status == 200 and "Check your messages" in page
    reference = reference_in(page)
    [message] = outbox(ws)
    assert stat.S_IMODE(message.stat().st_mode) == 0o600
    assert stat.S_IMODE(message.parent.stat().st_mode) == 0o700
    assert f"To: {subject}" in message.read_text() and reference in message.read_text()
    code = code_in(message)

    status, page = verify(client, reference, code)
    assert status == 200 and "Your identity is confirmed" in page
    follow = re.search(r'id="follow-code">([A-Z0-9-]+)<', page)
    assert follow is not None
    follow_code = follow.group(1)
    [req] = ws.session(OWNER, "audit").requests()
    assert req["type"] == "access" and req["verified"] and req["verification"] == "email"
    assert req["subject"] == ws.pseudonyms.subject(subject)
    assert f'data-due="{req["due_at"]}"' in page
    # the code worked once
    assert verify(client, reference, code)[0] == 400

    officer = ws.session(OWNER, "subject_request")
    assert officer.portal_request(req["id"]) == {
        "request": req["id"],
        "kind": "access",
        "purpose": None,
        "details": None,
    }
    assert officer.portal_fulfil(req["id"]).value["status"] == "fulfilled"

    shown = client.post(
        "/portal/follow", data={"csrf": csrf(client), "reference": reference, "follow_code": follow_code}
    )
    assert shown.status_code == 200 and 'class="status fulfilled"' in shown.text and "Download your data" in shown.text
    download = client.post(
        "/portal/export", data={"csrf": csrf(client), "reference": reference, "follow_code": follow_code.lower()}
    )
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    exported = json.loads(download.content)
    assert exported["records"]["adult"], exported.keys()
    wrong = client.post("/portal/export", data={"csrf": csrf(client), "reference": reference, "follow_code": code})
    assert wrong.status_code == 400 and "records" not in wrong.text

    events = kinds(ws)
    assert events.count("portal.submitted") == 1 and events.count("request.opened") == 1
    assert events.count("request.updated") == 2  # identity verified, fulfilled
    # the ledger and the logs name the person by pseudonym only; codes never appear
    for secret in (subject, code, reference, reference.replace("-", ""), follow_code, follow_code.replace("-", "")):
        assert secret.encode() not in ledger_bytes(ws)
        assert secret not in caplog.text
    with ws.store.read() as conn:
        row = conn.execute(select(portal_requests)).one()
    for secret in (subject, code, reference.replace("-", ""), follow_code.replace("-", "")):
        assert secret.encode() not in repr(tuple(row)).encode()
    assert row.identifier_enc is None  # destroyed once the request was fulfilled


def _normalised(page: str, reference: str) -> str:
    return page.replace(reference, "REFERENCE")


def test_known_and_unknown_identifiers_are_indistinguishable_before_verification(
    client: TestClient, ws: Workspace
) -> None:
    known = subject_of(ws)
    unknown = known[:-1] + ("x" if known[-1] != "x" else "y")  # the same length, held nowhere
    with pytest.raises(NotFound):
        ws.vault.export(unknown, OWNER)
    token = csrf(client)
    a = client.post("/portal/requests", data={"csrf": token, "kind": "erasure", "identifier": known})
    b = client.post("/portal/requests", data={"csrf": token, "kind": "erasure", "identifier": unknown})
    assert a.status_code == b.status_code == 200
    assert _normalised(a.text, reference_in(a.text)) == _normalised(b.text, reference_in(b.text))
    assert {k: v for k, v in a.headers.items()} == {k: v for k, v in b.headers.items()}
    ma, mb = outbox(ws)
    assert stat.S_IMODE(ma.stat().st_mode) == stat.S_IMODE(mb.stat().st_mode) == 0o600

    def shape(m: Path, ident: str, reference: str) -> str:
        text = re.sub(r"Message-ID: .*", "", m.read_text())
        return text.replace(ident, "ID").replace(code_in(m), "CODE").replace(reference, "REF")

    assert shape(ma, known, reference_in(a.text)) == shape(mb, unknown, reference_in(b.text))
    # the ledger records both alike (by pseudonym), and nothing else
    assert kinds(ws)[-2:] == ["portal.submitted", "portal.submitted"]
    # once verified, each enters the register: the unknown one under the portal's jurisdiction
    assert verify(client, reference_in(a.text), code_in(ma))[0] == 200
    assert verify(client, reference_in(b.text), code_in(mb))[0] == 200
    by_subject = {r["subject"]: r for r in ws.session(OWNER, "audit").requests()}
    assert by_subject[ws.pseudonyms.subject(unknown)]["jurisdiction"] == "EU"
    assert by_subject[ws.pseudonyms.subject(known)]["verification"] == "email"


def test_wrong_codes_are_limited_recorded_and_lock_the_submission(client: TestClient, ws: Workspace) -> None:
    status, page = submit(client, "erasure", UNKNOWN)
    reference = reference_in(page)
    code = code_in(outbox(ws)[0])
    wrong = f"{(int(code) + 1) % 10**8:08d}"
    before = kinds(ws).count("auth.refused")
    for _ in range(PortalLimits().code_attempts):
        status, page = verify(client, reference, wrong)
        assert status == 400 and "wrong" in page
    assert kinds(ws).count("auth.refused") - before == PortalLimits().code_attempts
    # locked: the right code no longer works, and nothing was opened
    assert verify(client, reference, code)[0] == 400
    assert ws.session(OWNER, "audit").requests() == []


def test_an_expired_code_is_refused(client: TestClient, ws: Workspace, clock: ManualClock) -> None:
    status, page = submit(client, "restriction", subject_of(ws))
    reference, code = reference_in(page), code_in(outbox(ws)[0])
    clock.advance(timedelta(seconds=PortalLimits().code_ttl_s + 1))
    status, page = verify(client, reference, code)
    assert status == 400 and "expired" in page
    assert ws.session(OWNER, "audit").requests() == []


def test_portal_forms_need_the_csrf_token_and_this_origin(client: TestClient, ws: Workspace) -> None:
    token = csrf(client)
    data = {"kind": "access", "identifier": UNKNOWN}
    assert client.post("/portal/requests", data=data).status_code == 403
    assert client.post("/portal/requests", data={**data, "csrf": token + "x"}).status_code == 403
    cross = client.post("/portal/requests", data={**data, "csrf": token}, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403 and "another site" in cross.text
    assert client.post("/portal/follow", data={"reference": "A", "follow_code": "B"}).status_code == 403
    assert not outbox(ws)
    assert "portal.submitted" not in kinds(ws)


def test_submissions_are_rate_limited_per_identifier_and_per_address(client: TestClient, ws: Workspace) -> None:
    limits = PortalLimits()
    for _ in range(limits.submissions_per_subject):
        assert submit(client, "access", UNKNOWN)[0] == 200
    status, page = submit(client, "access", UNKNOWN)
    assert status == 429 and "Too many requests" in page
    for i in range(limits.submissions_per_address - limits.submissions_per_subject):
        assert submit(client, "access", f"other{i}@example.org")[0] == 200
    status, page = submit(client, "access", "fresh@example.org")
    assert status == 429
    assert len(outbox(ws)) == limits.submissions_per_address


def test_a_consent_is_withdrawn_once_the_code_is_entered(client: TestClient, ws: Workspace) -> None:
    subject = subject_of(ws, 1)
    purpose, name = ws.session("portal", "subject_request").portal_purposes()[0]
    assert f'<option value="{purpose}" >{name}</option>' in client.get("/portal/").text
    ws.session(OWNER, "administration").grant_consent(subject, purpose)
    status, page = submit(client, "withdrawal", subject, purpose=purpose)
    assert status == 200
    status, page = verify(client, reference_in(page), code_in(outbox(ws)[0]))
    assert status == 200 and "consent withdrawn" in page and 'class="status done"' in page
    assert kinds(ws)[-1] == "consent.withdrawn"
    assert ws.session(OWNER, "audit").requests() == []  # a withdrawal is carried out, not registered


def test_unverified_submissions_and_closed_requests_are_purged(
    client: TestClient, ws: Workspace, clock: ManualClock
) -> None:
    def rows() -> set[str]:
        with ws.store.read() as conn:
            return {r.kind for r in conn.execute(select(portal_requests))}

    _, page = submit(client, "erasure", subject_of(ws))
    assert verify(client, reference_in(page), code_in(outbox(ws)[0]))[0] == 200
    [req] = ws.session(OWNER, "audit").requests()
    ws.session(OWNER, "subject_request").portal_fulfil(req["id"])
    submit(client, "access", UNKNOWN)
    clock.advance(timedelta(days=2))
    submit(client, "portability", "later@example.org")
    assert rows() == {"erasure", "portability"}  # the unverified access is gone
    clock.advance(timedelta(days=PortalLimits().retention_days))
    submit(client, "restriction", "later@example.org")
    assert rows() == {"restriction"}  # so are the closed erasure and the unverified portability
    assert ws.session(OWNER, "audit").request(req["id"])["status"] == "fulfilled"  # the register keeps it


class Relay(threading.Thread):
    """A minimal SMTP relay on loopback (enough of RFC 5321 for smtplib): it keeps what it is given."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port: int = self.sock.getsockname()[1]
        self.received: list[tuple[list[str], str]] = []

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as rf:
                conn.sendall(b"220 relay\r\n")
                rcpt: list[str] = []
                while line := rf.readline():
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        conn.sendall(b"250 relay\r\n")
                    elif verb == b"RCPT":
                        rcpt.append(line.decode().strip())
                        conn.sendall(b"250 ok\r\n")
                    elif verb == b"DATA":
                        conn.sendall(b"354 go on\r\n")
                        body = b""
                        while (chunk := rf.readline()) not in (b".\r\n", b""):
                            body += chunk
                        self.received.append((rcpt, body.decode()))
                        conn.sendall(b"250 queued\r\n")
                    elif verb == b"QUIT":
                        conn.sendall(b"221 bye\r\n")
                        break
                    else:
                        conn.sendall(b"250 ok\r\n")

    def close(self) -> None:
        self.sock.close()


def test_codes_go_out_by_smtp_when_configured(ws: Workspace, portal_settings: ServiceSettings) -> None:
    relay = Relay()
    relay.start()
    cfg = replace(
        portal_settings, portal_channel="smtp", smtp_host="127.0.0.1", smtp_port=relay.port, smtp_security="plain"
    )
    try:
        with TestClient(create_app(cfg, workspace=ws), raise_server_exceptions=False) as c:
            status, page = submit(c, "portability", "someone@example.org")
        assert status == 200
        [(rcpt, body)] = relay.received
        assert [r.upper() for r in rcpt] == ["RCPT TO:<SOMEONE@EXAMPLE.ORG>"]
        assert reference_in(page) in body and re.search(r"one-time code: \d{8}", body)
        assert not outbox(ws)
    finally:
        relay.close()


def test_a_code_that_cannot_be_sent_leaves_nothing_behind(ws: Workspace, portal_settings: ServiceSettings) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = replace(portal_settings, portal_channel="smtp", smtp_host="127.0.0.1", smtp_port=port, smtp_security="plain")
    before = kinds(ws)
    with TestClient(create_app(cfg, workspace=ws), raise_server_exceptions=False) as c:
        status, page = submit(c, "access", "someone@example.org")
    assert status == 503 and "Nothing was recorded" in page
    assert kinds(ws) == before
    with ws.store.read() as conn:
        assert conn.execute(select(portal_requests)).all() == []


def test_serve_refuses_a_portal_that_could_not_act(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.cli.test_authn import cli

    monkeypatch.setenv("COMPLAI_WORKSPACE", str(ws.path))
    unknown = cli("serve", "--portal", "frontdesk")
    assert unknown.returncode == 2 and "no enabled principal 'frontdesk'" in unknown.stderr
    ws.session(OWNER, "security").add_principal("frontdesk", "service")
    unruled = cli("serve", "--portal", "frontdesk")
    assert unruled.returncode == 2 and "may not act for the portal" in unruled.stderr
    nowhere = cli("serve", "--portal", "portal", "--portal-channel", "smtp")
    assert nowhere.returncode == 2 and "--smtp-host" in nowhere.stderr
    bad = cli("serve", "--portal", "portal", "--portal-jurisdiction", "Atlantis")
    assert bad.returncode == 2


def test_wrong_follow_ups_from_one_address_are_limited(client: TestClient, ws: Workspace) -> None:
    token = csrf(client)
    data = {"csrf": token, "reference": "AAAA-BBBB-CCCC-DDDD", "follow_code": "EEEE-FFFF-GGGG-HHHH"}
    for _ in range(PortalLimits().refusals_per_address):
        refused = client.post("/portal/follow", data=data)
        assert refused.status_code == 400 and "no request has this reference" in refused.text
    limited = client.post("/portal/follow", data=data)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "60"
    # the limit covers one-time codes from that address too
    assert verify(client, "AAAA-BBBB-CCCC-DDDD", "12345678")[0] == 429
