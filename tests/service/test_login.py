"""Password login: the API's OAuth2 password flow and the console's cookie; refusals recorded and
rate-limited per principal and per address; CSRF on the console's forms."""

from __future__ import annotations

from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from complai.service.console.web import COOKIE, csrf_token
from tests.service.conftest import bearer

PASSWORD = "correct horse battery"


def add_person(ws: Workspace, name: str = "dana", *roles: str) -> None:
    owner = ws.session("owner", "security")
    owner.add_principal(name, "human", PASSWORD)
    for role in roles:
        owner.grant_role(name, role)


def refusals(ws: Workspace) -> list[dict]:
    import json

    return [json.loads(e.data) for e in ws.session("owner", "audit").ledger_entries() if e.kind == "auth.refused"]


def test_password_flow_gives_a_short_lived_token_that_works(client: TestClient, ws: Workspace) -> None:
    add_person(ws, "dana", "auditor")
    r = client.post("/api/v1/auth/token", data={"username": "dana", "password": PASSWORD, "grant_type": "password"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    me = client.get("/api/v1/me", headers=bearer(body["access_token"])).json()
    assert me["principal"] == "dana"
    # logging out revokes it
    assert client.delete("/api/v1/auth/token", headers=bearer(body["access_token"])).status_code == 204
    assert client.get("/api/v1/me", headers=bearer(body["access_token"])).status_code == 401


def test_wrong_password_is_refused_recorded_and_never_echoed(client: TestClient, ws: Workspace) -> None:
    add_person(ws)
    r = client.post("/api/v1/auth/token", data={"username": "dana", "password": "not the password!"})
    assert r.status_code == 401
    assert "not the password" not in r.text
    recorded = refusals(ws)
    assert recorded[-1]["actor"] == "dana" and recorded[-1]["reason"] == "password login refused"
    # an unknown name gets the same answer, recorded as anonymous
    r2 = client.post("/api/v1/auth/token", data={"username": "nobody", "password": "whatever it is"})
    assert r2.status_code == 401 and r2.json()["detail"] == r.json()["detail"]
    assert refusals(ws)[-1]["actor"] == "anonymous"


def test_failed_logins_are_rate_limited_per_principal(client: TestClient, ws: Workspace) -> None:
    add_person(ws)
    for _ in range(5):
        r = client.post("/api/v1/auth/token", data={"username": "dana", "password": "wrong guess!!"})
        assert r.status_code == 401
    before = len(refusals(ws))
    # the sixth is refused without checking the password, even the right one, and not recorded again
    r = client.post("/api/v1/auth/token", data={"username": "dana", "password": PASSWORD})
    assert r.status_code == 429 and r.headers["retry-after"]
    assert len(refusals(ws)) == before


def test_failed_logins_are_rate_limited_per_address(client: TestClient, ws: Workspace) -> None:
    add_person(ws)
    for i in range(20):
        client.post("/api/v1/auth/token", data={"username": f"guess{i}", "password": "wrong guess!!"})
    r = client.post("/api/v1/auth/token", data={"username": "dana", "password": PASSWORD})
    assert r.status_code == 429


def test_a_service_principal_cannot_log_in_with_a_password(client: TestClient, ws: Workspace, token_for) -> None:
    token_for("robot", "analyst")
    r = client.post("/api/v1/auth/token", data={"username": "robot", "password": "anything at all"})
    assert r.status_code == 401


def test_console_redirects_to_login_then_back(client: TestClient, ws: Workspace) -> None:
    add_person(ws, "dana", "auditor")
    r = client.get("/console/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login?next=/console/")
    r = client.post(
        "/console/login",
        data={"username": "dana", "password": PASSWORD, "next": "/console/"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/console/"
    cookie = r.headers["set-cookie"]
    assert COOKIE in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    page = client.get("/console/")
    assert page.status_code == 200 and "dana" in page.text


def test_console_login_never_redirects_off_site(client: TestClient, ws: Workspace) -> None:
    add_person(ws)
    for target in ("https://evil.example/", "//evil.example/", "/console\\\\evil"):
        r = client.post(
            "/console/login",
            data={"username": "dana", "password": PASSWORD, "next": target},
            follow_redirects=False,
        )
        assert r.headers["location"] == "/console/"


def test_console_forms_need_the_csrf_token(client: TestClient, ws: Workspace) -> None:
    add_person(ws)
    client.post("/console/login", data={"username": "dana", "password": PASSWORD})
    token = client.cookies.get(COOKIE)
    assert client.post("/console/logout", data={"csrf": "forged"}, follow_redirects=False).status_code == 403
    r = client.post(
        "/console/logout",
        data={"csrf": csrf_token(token)},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert r.status_code == 403
    r = client.post("/console/logout", data={"csrf": csrf_token(token)}, follow_redirects=False)
    assert r.status_code == 303
    # the login token was revoked, not just forgotten by the browser
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 401


def test_console_wrong_password_shows_the_form_again(client: TestClient, ws: Workspace) -> None:
    add_person(ws)
    r = client.post("/console/login", data={"username": "dana", "password": "wrong guess!!"})
    assert r.status_code == 401 and "Wrong name or password" in r.text and COOKIE not in r.headers.get("set-cookie", "")
