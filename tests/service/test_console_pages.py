"""The console's everyday pages through the ASGI client: the overview (controls from the latest audit,
incidents with their 72-hour clocks, requests near their deadline, budgets, the last checkpoint), a
failing control, the request work queue, DPIAs and incidents. Every form needs the CSRF token and its
effect shows in the session's state; a person without the role gets "not allowed" (403, recorded); the
pages show subjects only by pseudonym."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.ledger.witness import Witness
from complai.service.app import create_app
from complai.service.console.web import COOKIE, csrf_token
from tests.dp.conftest import adult_workspace
from tests.service.conftest import settings_for

PASSWORD = "correct horse battery"


def add_person(ws: Workspace, name: str, *roles: str) -> None:
    owner = ws.session(OWNER, "security")
    owner.add_principal(name, "human", PASSWORD)
    for role in roles:
        owner.grant_role(name, role)


def make_officer(ws: Workspace, name: str = "dana") -> None:
    """A data-protection officer: audits, administers the registers, and carries out subject requests."""
    add_person(ws, name, "auditor", "admin")
    owner = ws.session(OWNER, "administration")
    for action in ("export", "erase"):
        owner.add_rule(name, "*", action, "subject_request")


def log_in(client: TestClient, name: str) -> str:
    r = client.post("/console/login", data={"username": name, "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 303, r.text
    token = client.cookies.get(COOKIE)
    assert token
    return csrf_token(token)


def audit_on_server(ws: Workspace) -> dict[str, Any]:
    """An audit whose report the service keeps (<workspace>/audits/<ledger entry>/), as the API runs it."""
    root = Path(ws.path) / "audits"
    root.mkdir(mode=0o700, exist_ok=True)
    staging = root / ".run"
    result = ws.session(OWNER, "audit").compliance_audit(staging, ("json",))
    staging.rename(root / str(result["ledger_seq"]))
    return dict(result)


def subject_ids(ws: Workspace, n: int = 3) -> list[str]:
    return [str(s) for s in ws.vault.fetch("adult", "analytics", ["subject_id"])[0]["subject_id"].iloc[:n]]


def text_of(html: str) -> str:
    """The page's visible words, tags dropped and spaces folded."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def denied(ws: Workspace, actor: str) -> int:
    return sum(
        1
        for e in ws.session(OWNER, "audit").ledger_entries(kind="access.denied", limit=10_000)
        if json.loads(e.data)["actor"] == actor
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workspace every test starts from, made once: 40 people of the adult sample, an officer (dana),
    an auditor (ada) and someone with no role (eve)."""
    path = tmp_path_factory.mktemp("console") / "ws"
    w = Workspace.init(path, clock=ManualClock())
    try:
        adult_workspace(w, 40)
        make_officer(w)
        add_person(w, "eve")
        add_person(w, "ada", "auditor")
    finally:
        w.close()
    return path


@pytest.fixture
def ws(template: Path, tmp_path: Path, clock: ManualClock) -> Iterator[Workspace]:
    shutil.copytree(template, tmp_path / "ws")
    w = Workspace.open(tmp_path / "ws", clock=clock)
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def client(ws: Workspace) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(ws), workspace=ws), raise_server_exceptions=False) as c:
        yield c


def logged_in(client: TestClient, ws: Workspace, name: str) -> str:
    """As `log_in`, with a token the owner mints instead of a password check (an Argon2 hash costs
    seconds on a busy machine; the login form is tested in test_login.py and by the refusals below)."""
    token = ws.session(OWNER, "security").create_token(name, "P60D").token
    client.cookies.set(COOKIE, token, path="/console")
    return csrf_token(token)


@pytest.fixture
def csrf(client: TestClient, ws: Workspace) -> str:
    return logged_in(client, ws, "dana")


# --- overview and controls -------------------------------------------------------------------------


def test_overview_before_any_audit_says_run_one(client: TestClient, csrf: str) -> None:
    page = client.get("/console/")
    assert page.status_code == 200
    words = text_of(page.text)
    assert "No audit yet — run one" in words
    assert "No open incidents" in words and "No signed checkpoint yet" in words
    assert 'href="/console/incidents"' in page.text and 'href="/console/requests"' in page.text


def test_overview_shows_failing_controls_first_with_their_fix_and_the_clocks(
    client: TestClient, csrf: str, ws: Workspace, clock: ManualClock
) -> None:
    sec = ws.session(OWNER, "security")
    incident = sec.incident_open("a laptop with exports was lost").value["id"]
    subject = subject_ids(ws, 1)[0]
    rid = ws.session(OWNER, "subject_request").request_open("erasure", subject).value["id"]
    audit_on_server(ws)  # no DPIA for adult: DPIA-1 fails; no checkpoint: LEDGER-1 warns

    clock.advance(timedelta(days=27))  # the incident's 72 hours are long gone; the request is due in days
    page = client.get("/console/")
    assert page.status_code == 200
    html = page.text
    words = text_of(html)
    # failing controls before warnings, each with its items and the fix
    assert html.index("/console/controls/DPIA-1") < html.index("/console/controls/LEDGER-1")
    assert "How to fix it:" in words and "no DPIA (required for special categories" in words
    assert "no signed checkpoint yet" in words
    assert "RECON-1" not in html  # passing controls are only counted
    # the incident is overdue by days; the erasure is due within the week
    assert re.search(r"notify the authority \d+ days overdue", words), words
    assert f"/console/incidents/{incident}" in html
    assert re.search(r"due in \d days", words) and f"/console/requests/{rid}" in html
    assert subject not in html


def test_overview_budgets_running_low(client: TestClient, csrf: str, ws: Workspace) -> None:
    ws.session(OWNER, "analytics").dp_query("SELECT COUNT(*) FROM adult", 9.0)  # of the 10 the dataset has
    words = text_of(client.get("/console/").text)
    assert re.search(r"adult ?, the whole dataset: 10(\.0)?% left", words), words


def test_overview_checkpoint_and_its_witnesses(client: TestClient, csrf: str, ws: Workspace, tmp_path: Path) -> None:
    ws.session(OWNER, "audit").ledger_checkpoint()
    words = text_of(client.get("/console/").text)
    assert re.search(r"The last checkpoint covers \d+ of \d+ entries", words)
    assert "No witness is trusted" in words
    witness = Witness.init(tmp_path / "witness", "w.example")
    ws.session(OWNER, "administration").trust_witness(witness.verifier)
    ws.session(OWNER, "audit").ledger_checkpoint()
    words = text_of(client.get("/console/").text)
    assert "Not yet cosigned by a witness (w.example trusted)" in words
    assert ws.session(OWNER, "audit").witness_cosign(witness) is not None
    words = text_of(client.get("/console/").text)
    assert "Cosigned by w.example." in words


def test_a_failing_control_opens_with_its_items_and_fix(client: TestClient, csrf: str, ws: Workspace) -> None:
    audit_on_server(ws)
    page = client.get("/console/controls/DPIA-1")
    assert page.status_code == 200
    words = text_of(page.text)
    assert "failing" in words and "How to fix it" in words and "adult" in words
    assert 'href="/console/dpias"' in page.text  # where the fix is done
    assert client.get("/console/controls/NOPE-9").status_code == 404


def test_a_report_changed_on_disk_is_not_shown(client: TestClient, csrf: str, ws: Workspace) -> None:
    result = audit_on_server(ws)
    path = Path(ws.path) / "audits" / str(result["ledger_seq"]) / "report.json"
    path.write_bytes(path.read_bytes().replace(b'"fail"', b'"pass"'))
    words = text_of(client.get("/console/").text)
    assert "details are not here" in words and "/console/controls/DPIA-1" not in words
    assert client.get("/console/controls/DPIA-1").status_code == 404


# --- the request work queue -------------------------------------------------------------------------


def _open_requests(ws: Workspace) -> tuple[list[str], list[str]]:
    subjects = subject_ids(ws, 3)
    s = ws.session(OWNER, "subject_request")
    rids = [
        s.request_open("erasure", subjects[0]).value["id"],
        s.request_open("restriction", subjects[1], "US-CA").value["id"],  # CCPA: due in 45 days, acknowledge in 10
        s.request_open("access", subjects[2], "CN").value["id"],  # PIPL: 15 days, the soonest
    ]
    return rids, subjects


def test_requests_are_listed_by_deadline_with_pseudonyms_only(client: TestClient, csrf: str, ws: Workspace) -> None:
    rids, subjects = _open_requests(ws)
    page = client.get("/console/requests")
    assert page.status_code == 200
    order = [page.text.index(f"/console/requests/{r}") for r in rids]
    # PIPL (15 days) before GDPR (a month) before CCPA (45 days)
    assert order[2] < order[0] < order[1]
    one = client.get(f"/console/requests/{rids[0]}")
    for html in (page.text, one.text):
        assert not any(s in html for s in subjects)
    pseudonym = ws.session(OWNER, "audit").request(rids[0])["subject"]
    assert pseudonym in one.text and "Erase their data" in one.text


def test_long_lists_come_a_page_at_a_time(
    client: TestClient, csrf: str, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from complai.service.console import pages

    monkeypatch.setattr(pages, "PAGE", 2)
    rids, _ = _open_requests(ws)
    first, second = client.get("/console/requests"), client.get("/console/requests?page=2")
    assert "Page 1 of 2" in first.text and 'href="/console/requests?page=2"' in first.text
    shown = [[r for r in rids if f"/console/requests/{r}" in p.text] for p in (first, second)]
    assert shown == [[rids[0], rids[2]], [rids[1]]]
    assert client.get("/console/requests?page=0").status_code in (400, 422)


def test_each_request_form_changes_the_register(client: TestClient, csrf: str, ws: Workspace) -> None:
    rids, subjects = _open_requests(ws)
    audit = ws.session(OWNER, "audit")

    def post(path: str, **data: str) -> Any:
        return client.post(path, data={"csrf": csrf, **data}, follow_redirects=False)

    r = post(f"/console/requests/{rids[0]}/verify", method="document")
    assert r.status_code == 303 and r.headers["location"] == f"/console/requests/{rids[0]}?done=verified"
    assert audit.request(rids[0])["verification"] == "document"
    assert "Identity verification recorded." in client.get(r.headers["location"]).text

    assert post(f"/console/requests/{rids[1]}/acknowledge").status_code == 303
    assert audit.request(rids[1])["acknowledged_at"] is not None

    due = audit.request(rids[1])["due_at"]
    assert post(f"/console/requests/{rids[1]}/extend", reason="several systems hold the data").status_code == 303
    after = audit.request(rids[1])
    assert after["extended"] and after["due_at"] > due

    # fulfil (approve) the erasure: the subject's id is typed in, checked against the request
    r = post(f"/console/requests/{rids[0]}/fulfil", subject=subjects[0])
    assert r.status_code == 303 and r.headers["location"].endswith("?done=fulfilled")
    assert audit.request(rids[0])["status"] == "fulfilled"
    assert "Request carried out." in client.get(r.headers["location"]).text

    # an access request answers with the export, as a file
    post(f"/console/requests/{rids[2]}/verify", method="account")
    r = post(f"/console/requests/{rids[2]}/fulfil", subject=subjects[2])
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    assert r.json() and audit.request(rids[2])["status"] == "fulfilled"

    assert post(f"/console/requests/{rids[1]}/reject", reason="manifestly unfounded").status_code == 303
    assert audit.request(rids[1])["status"] == "rejected"


def test_a_rectification_takes_its_corrections_from_the_form(client: TestClient, csrf: str, ws: Workspace) -> None:
    subject = subject_ids(ws, 1)[0]
    ws.session(OWNER, "administration").add_rule("dana", "adult", "ingest", "subject_request")
    rid = ws.session(OWNER, "subject_request").request_open("rectification", subject).value["id"]
    client.post(f"/console/requests/{rid}/verify", data={"csrf": csrf, "method": "email"})
    page = client.get(f"/console/requests/{rid}")
    assert 'name="changes"' in page.text and "Correct their data" in page.text
    r = client.post(f"/console/requests/{rid}/fulfil", data={"csrf": csrf, "subject": subject, "changes": "age 44"})
    assert r.status_code == 400 and "DATASET.FIELD=VALUE" in r.text
    assert ws.session(OWNER, "audit").request(rid)["steps"] == []
    r = client.post(
        f"/console/requests/{rid}/fulfil",
        data={"csrf": csrf, "subject": subject, "changes": "adult.age=44\n"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    steps = ws.session(OWNER, "audit").request(rid)["steps"]
    assert [s["step"] for s in steps] == ["rectify adult.age"]
    ages = ws.vault.fetch("adult", "analytics", ["subject_id", "age"])[0]
    assert steps[0]["status"] == "done" and ws.session(OWNER, "audit").request(rid)["status"] == "fulfilled"
    assert ages.loc[ages["subject_id"] == subject, "age"].tolist() == [44]


def test_a_refused_request_action_is_the_error_page_and_changes_nothing(
    client: TestClient, csrf: str, ws: Workspace
) -> None:
    rids, subjects = _open_requests(ws)
    before = ws.session(OWNER, "audit").request(rids[0])
    # not verified yet: fulfilling is refused
    r = client.post(f"/console/requests/{rids[0]}/fulfil", data={"csrf": csrf, "subject": subjects[0]})
    assert r.status_code == 403 and "verify the requester" in r.text and "<html" in r.text
    # the wrong subject is refused too, and never echoed
    client.post(f"/console/requests/{rids[0]}/verify", data={"csrf": csrf, "method": "email"})
    r = client.post(f"/console/requests/{rids[0]}/fulfil", data={"csrf": csrf, "subject": subjects[1]})
    assert r.status_code == 403 and subjects[1] not in r.text
    # an unknown method is bad input
    r = client.post(f"/console/requests/{rids[1]}/verify", data={"csrf": csrf, "method": "telepathy"})
    assert r.status_code in (400, 422) and "unknown verification method" in r.text
    after = ws.session(OWNER, "audit").request(rids[0])
    assert after["status"] == before["status"] == "open" and after["steps"] == []


def test_request_forms_need_the_csrf_token(client: TestClient, csrf: str, ws: Workspace) -> None:
    rids, _ = _open_requests(ws)
    audit = ws.session(OWNER, "audit")
    head = audit.ledger_head().size
    before = audit.request(rids[1])
    for path, data in (
        ("verify", {"method": "document"}),
        ("acknowledge", {}),
        ("extend", {"reason": "busy"}),
        ("reject", {"reason": "no"}),
        ("fulfil", {"subject": "x"}),
    ):
        r = client.post(f"/console/requests/{rids[1]}/{path}", data={"csrf": "forged", **data}, follow_redirects=False)
        assert r.status_code == 403 and "form expired" in r.text, path
        r = client.post(f"/console/requests/{rids[1]}/{path}", data=data, follow_redirects=False)
        assert r.status_code == 403, path
        r = client.post(
            f"/console/requests/{rids[1]}/{path}",
            data={"csrf": csrf, **data},
            headers={"Origin": "https://evil.example"},
            follow_redirects=False,
        )
        assert r.status_code == 403, path
    assert audit.request(rids[1]) == before
    assert audit.ledger_head().size == head  # nothing recorded


# --- DPIAs ----------------------------------------------------------------------------------------


def test_dpia_written_reviewed_and_signed_from_its_page(client: TestClient, csrf: str, ws: Workspace) -> None:
    listing = text_of(client.get("/console/dpias").text)
    assert "adult" in listing and "none yet" in listing
    r = client.post("/console/dpias/adult/generate", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    page = client.get(r.headers["location"])
    words = text_of(page.text)
    assert "Version 1" in words and "Why an assessment is needed" in words and "Residual risk" in words
    assert "Sign version 1" in words
    assert ws.session(OWNER, "audit").dpia_status("adult")["why"] == "not signed off"

    r = client.post("/console/dpias/adult/sign", data={"csrf": csrf, "version": "1"}, follow_redirects=False)
    assert r.status_code == 303
    st = ws.session(OWNER, "audit").dpia_status("adult")
    assert st["current"] and st["signed_by"] == "dana"  # signed in the name of who is logged in
    assert "current" in text_of(client.get("/console/dpias").text)
    # a version signed once cannot be signed again
    r = client.post("/console/dpias/adult/sign", data={"csrf": csrf, "version": "1"})
    assert r.status_code == 400 and "already signed off" in r.text


def test_dpia_forms_need_the_csrf_token(client: TestClient, csrf: str, ws: Workspace) -> None:
    ws.session(OWNER, "audit").dpia_generate("adult")
    for path, data in (("generate", {}), ("sign", {"version": "1"})):
        assert client.post(f"/console/dpias/adult/{path}", data={"csrf": "forged", **data}).status_code == 403
    st = ws.session(OWNER, "audit").dpia_status("adult")
    assert st["version"] == 1 and st["signed_by"] is None


# --- incidents ------------------------------------------------------------------------------------


def test_incident_opened_notified_and_closed_from_the_console(
    client: TestClient, csrf: str, ws: Workspace, clock: ManualClock
) -> None:
    r = client.post(
        "/console/incidents", data={"csrf": csrf, "description": "a misdirected email"}, follow_redirects=False
    )
    assert r.status_code == 303
    iid = r.headers["location"].split("/")[-1].split("?")[0]
    sec = ws.session(OWNER, "security")
    assert [i["description"] for i in sec.incidents()] == ["a misdirected email"]
    clock.advance(timedelta(hours=70))
    listing = text_of(client.get("/console/incidents").text)
    assert "notify in 2 hours" in listing

    r = client.post(
        f"/console/incidents/{iid}/notify", data={"csrf": csrf, "authority": "CNIL"}, follow_redirects=False
    )
    assert r.status_code == 303
    (i,) = sec.incidents()
    assert i["authority"] == "CNIL" and i["notified_at"] and not i["late"]
    assert "Notification recorded." in client.get(r.headers["location"]).text

    assert client.post(f"/console/incidents/{iid}/close", data={"csrf": "forged"}).status_code == 403
    assert sec.incidents()[0]["closed_at"] is None
    assert (
        client.post(f"/console/incidents/{iid}/close", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    )
    assert sec.incidents()[0]["closed_at"] is not None
    assert client.get("/console/incidents/inc-nothere").status_code == 404


def test_incident_past_72_hours_reads_overdue(client: TestClient, csrf: str, ws: Workspace, clock: ManualClock) -> None:
    iid = ws.session(OWNER, "security").incident_open("ransomware on a file server").value["id"]
    clock.advance(timedelta(hours=75))
    words = text_of(client.get(f"/console/incidents/{iid}").text)
    assert "3 hours overdue" in words


# --- refusals -------------------------------------------------------------------------------------

PAGES = [
    "/console/requests",
    "/console/dpias",
    "/console/dpias/adult",
    "/console/incidents",
    "/console/controls/DPIA-1",
]


def test_a_person_without_the_role_is_not_allowed_and_it_is_recorded(client: TestClient, ws: Workspace) -> None:
    audit_on_server(ws)
    rids, _ = _open_requests(ws)
    log_in(client, "eve")
    for path in [*PAGES, f"/console/requests/{rids[0]}"]:
        before = denied(ws, "eve")
        page = client.get(path)
        assert page.status_code == 403, path
        assert "Not allowed" in page.text and "<html" in page.text
        assert denied(ws, "eve") == before + 1, path
    overview = client.get("/console/")
    assert overview.status_code == 403
    words = text_of(overview.text)
    assert "Not allowed" in words and words.count("not available to you") == 5


def test_the_overview_shows_what_a_person_may_see_and_says_the_rest_is_not_available(
    client: TestClient, ws: Workspace
) -> None:
    ws.session(OWNER, "administration").add_rule("eve", "*", "audit", "security")  # incidents only
    ws.session(OWNER, "security").incident_open("a door left open in the server room")
    logged_in(client, ws, "eve")
    before = denied(ws, "eve")
    page = client.get("/console/")
    assert page.status_code == 200
    words = text_of(page.text)
    assert "a door left open in the server room" in words and words.count("not available to you") == 4
    assert "Not allowed" not in words
    assert denied(ws, "eve") == before + 4  # each refused section recorded once


def test_a_person_without_the_role_cannot_act_even_with_a_valid_form(client: TestClient, ws: Workspace) -> None:
    rids, subjects = _open_requests(ws)
    iid = ws.session(OWNER, "security").incident_open("a lost badge").value["id"]
    ws.session(OWNER, "audit").dpia_generate("adult")
    csrf = log_in(client, "eve")
    before = (
        ws.session(OWNER, "audit").requests(),
        ws.session(OWNER, "security").incidents(),
        ws.session(OWNER, "audit").dpia_status("adult"),
    )
    for path, data in (
        (f"/console/requests/{rids[0]}/verify", {"method": "document"}),
        (f"/console/requests/{rids[0]}/fulfil", {"subject": subjects[0]}),
        (f"/console/requests/{rids[0]}/reject", {"reason": "no"}),
        (f"/console/incidents/{iid}/close", {}),
        ("/console/incidents", {"description": "made up"}),
        ("/console/dpias/adult/sign", {"version": "1"}),
    ):
        r = client.post(path, data={"csrf": csrf, **data})
        assert r.status_code == 403 and "Not allowed" in r.text, path
    after = (
        ws.session(OWNER, "audit").requests(),
        ws.session(OWNER, "security").incidents(),
        ws.session(OWNER, "audit").dpia_status("adult"),
    )
    assert after == before


def test_an_auditor_sees_the_overview_but_cannot_act_on_requests(client: TestClient, ws: Workspace) -> None:
    rids, _ = _open_requests(ws)
    csrf = logged_in(client, ws, "ada")
    assert client.get("/console/").status_code == 200
    assert client.get(f"/console/requests/{rids[0]}").status_code == 200
    r = client.post(f"/console/requests/{rids[0]}/verify", data={"csrf": csrf, "method": "document"})
    assert r.status_code == 403
    assert not ws.session(OWNER, "audit").request(rids[0])["verified"]


def test_pages_need_a_login(client: TestClient) -> None:
    for path in ["/console/", *PAGES]:
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
