"""The portal in a real browser (Debian's Chromium, through Playwright) against `complai serve --portal`
in its own process: a person asks for erasure, reads the code from the outbox, confirms it, and once an
officer has fulfilled the request, sees it fulfilled. Screenshots land in the test's tmp_path."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from complai.access.identity import OWNER
from complai.app.portal import OUTBOX
from complai.app.workspace import Workspace
from complai.errors import NotFound
from tests.dp.conftest import adult_workspace
from tests.service.live import start_server

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Workspace, str]]:
    """A workspace with data and a portal principal, served by `complai serve --portal portal`."""
    ws = adult_workspace(Workspace.init(tmp_path / "ws"), 12)
    owner = ws.session(OWNER, "security")
    owner.add_principal("portal", "service")
    owner.add_rule("portal", "*", "admin", "subject_request")
    server = start_server(Path(ws.path), "--portal", "portal", log=tmp_path / "serve.log")
    try:
        yield ws, server.url
    finally:
        server.stop()
        ws.close()


def test_a_person_asks_for_erasure_and_sees_it_fulfilled(served: tuple[Workspace, str], tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make browser)")
    from playwright.sync_api import sync_playwright  # heavy: the browser driver

    ws, base = served
    subject = str(ws.vault.fetch("adult", "analytics", ["subject_id"])[0]["subject_id"].iloc[0])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(base + "/portal/")
            assert page.locator("a[href^='/console'], link[href*='console']").count() == 0
            page.check("input[name=kind][value=erasure]")
            page.fill("#identifier", subject)
            page.screenshot(path=str(tmp_path / "1-ask.png"), full_page=True)
            page.click("button[type=submit]")
            page.wait_for_load_state()
            assert "Check your messages" in page.content(), page.content()[:3000]
            reference = page.input_value("#reference")
            [message] = list((Path(ws.path) / OUTBOX).iterdir())
            found = re.search(r"one-time code: (\d{8})", message.read_text())
            assert found is not None and reference in message.read_text()
            page.fill("#code", found.group(1))
            page.screenshot(path=str(tmp_path / "2-code.png"), full_page=True)
            page.click("button[type=submit]")
            page.wait_for_selector("#follow-code")
            assert page.inner_text("#status") == "open"
            page.screenshot(path=str(tmp_path / "3-confirmed.png"), full_page=True)

            # the officer fulfils it, through a session, without the identifier
            officer = ws.session(OWNER, "subject_request")
            [req] = officer.requests()
            assert req["type"] == "erasure" and req["verification"] == "email"
            assert officer.portal_fulfil(req["id"]).value["status"] == "fulfilled"
            with pytest.raises(NotFound):
                officer.export_subject(subject)

            page.click("text=Refresh")
            page.wait_for_selector("#status.fulfilled")
            assert page.inner_text("#status") == "fulfilled"
            page.screenshot(path=str(tmp_path / "4-fulfilled.png"), full_page=True)
        finally:
            browser.close()
    assert all(
        (tmp_path / f).stat().st_size > 0 for f in ("1-ask.png", "2-code.png", "3-confirmed.png", "4-fulfilled.png")
    )
