"""The console's ledger explorer in a real browser (Debian's Chromium through Playwright) against
`complai serve` in its own process: an auditor logs in, opens an entry and verifies it in the browser
(WebCrypto SHA-256 and Ed25519); once the entry is edited at rest, the same check fails. Screenshots land
in the test's tmp_path."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.crypto.signing import Signer
from tests.ledger.helpers import fill
from tests.service.live import start_server

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "a long enough passphrase 7"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """A workspace with an auditor who has a password and a few hundred entries, served by `complai serve`."""
    tmp = tmp_path_factory.mktemp("explorer")
    # a log key whose base64 holds a "+" (about half do), the separator of the key's other parts:
    # the page must not split the key there
    for attempt in range(40):
        ws = Workspace.init(tmp / f"ws{attempt}")
        if "+" in ws.session(OWNER, "audit").ledger_status().log_key.encode().split("+", 2)[2]:
            break
        ws.close()
    try:
        owner = ws.session(OWNER, "security")
        owner.add_principal("alice", "human", password=PASSWORD)
        owner.grant_role("alice", "auditor")
        fill(ws.ledger, 300)
        ws.session(OWNER, "audit").ledger_checkpoint()
        path, origin = Path(ws.path), ws.session(OWNER, "audit").ledger_status().origin
    finally:
        ws.close()
    server = start_server(path, log=tmp / "serve.log")
    try:
        yield path, server.url, origin
    finally:
        server.stop()


def test_verify_in_the_browser_then_tamper(served: tuple[Path, str, str], tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make browser)")
    from playwright.sync_api import expect, sync_playwright  # heavy: the browser driver

    expect.set_options(timeout=30_000)  # a machine busy with other tests renders slowly; never a pass by time

    path, base, origin = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{base}/console/ledger")
            page.fill("#username", "alice")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/console/ledger")
            expect(page.locator("#entries tbody tr")).to_have_count(50)
            page.click("a[rel=next]")
            expect(page.locator("#entries tbody tr").first).to_contain_text("50")
            page.goto(f"{base}/console/ledger/120")
            expect(page.locator("h1")).to_have_text("Entry 120")
            page.click("#verify-button")
            result = page.locator("#verify-result")
            expect(result).to_contain_text("verified", timeout=15000)
            expect(page.locator("#verify")).to_have_attribute("data-state", "verified")
            expect(page.locator("#verify-steps li")).to_have_count(3)
            page.screenshot(path=str(tmp_path / "verified.png"), full_page=True)

            # a key the reader holds that is not the log's (same name, another key): the check fails
            page.fill("#vkey", Signer.generate(origin).verifier.encode())
            page.click("#verify-button")
            expect(page.locator("#verify")).to_have_attribute("data-state", "failed", timeout=15000)

            # the entry edited at rest (its stored leaf hash left alone): the browser's check fails
            with sqlite3.connect(path / "complai.db") as db:
                db.execute(
                    "UPDATE ledger_entries SET data = ? WHERE seq = 120",
                    (b'{"actor":"tester","n":999,"purpose":"audit","type":"test.probe"}',),
                )
            page.reload()
            page.click("#verify-button")
            expect(page.locator("#verify")).to_have_attribute("data-state", "failed", timeout=15000)
            expect(result).to_contain_text("do not lead to the signed root")
            page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)
            assert not [e for e in errors if "Content Security Policy" in e], errors
        finally:
            browser.close()
    assert (tmp_path / "verified.png").stat().st_size > 0 and (tmp_path / "failed.png").stat().st_size > 0
