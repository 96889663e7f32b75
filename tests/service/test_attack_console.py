"""Attacks on the console from outside: the first audit run from the console makes the server's folder
of audit reports private (0700), as the API does, not world-readable by the process's umask."""

from __future__ import annotations

import stat
import time
from pathlib import Path

from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from complai.service.console.web import COOKIE, csrf_token


def test_the_first_console_audit_makes_a_private_folder(client: TestClient, ws: Workspace) -> None:
    owner = ws.session("owner", "security")
    owner.add_principal("dana", "human", "correct horse battery")
    owner.grant_role("dana", "auditor")
    r = client.post(
        "/console/login", data={"username": "dana", "password": "correct horse battery"}, follow_redirects=False
    )
    assert r.status_code == 303
    assert not (Path(ws.path) / "audits").exists()
    r = client.post("/console/audits", data={"csrf": csrf_token(client.cookies[COOKIE])}, follow_redirects=False)
    assert r.status_code == 303, r.text
    folder = Path(ws.path) / "audits"
    for _ in range(600):
        if folder.exists() and any(p.name.isdigit() for p in folder.iterdir()):
            break
        time.sleep(0.1)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for report in folder.iterdir():
        assert stat.S_IMODE(report.stat().st_mode) == 0o700


def test_a_login_posted_from_another_site_is_refused(client: TestClient, ws: Workspace) -> None:
    """Login CSRF: another site's page must not log the visitor's browser into the attacker's account."""
    ws.session("owner", "security").add_principal("mallory", "human", "correct horse battery")
    form = {"username": "mallory", "password": "correct horse battery"}
    r = client.post("/console/login", data=form, headers={"Origin": "https://evil.example"}, follow_redirects=False)
    assert r.status_code == 403
    assert COOKIE not in r.headers.get("set-cookie", "")
    same = client.post("/console/login", data=form, headers={"Origin": "http://testserver"}, follow_redirects=False)
    assert same.status_code == 303 and COOKIE in same.headers["set-cookie"]
