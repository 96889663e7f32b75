"""The officer's console in a real browser (Debian's Chromium, through Playwright) against `complai serve`
in its own process: log in, read the overview, open the failing control, verify and fulfil an erasure
request, write and sign the DPIA. Each step is checked in the workspace afterwards; screenshots land in
the test's tmp_path and must be real, non-blank pictures."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from tests.dp.conftest import adult_workspace
from tests.service.live import start_server
from tests.service.test_console_pages import PASSWORD, audit_on_server, make_officer, subject_ids

CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 1280, 900


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Workspace, str, str, str]]:
    """A workspace with data, an officer, an erasure request and an audit whose DPIA control fails, served
    by `complai serve` on a free loopback port. Yields (workspace, base URL, request id, subject id)."""
    ws = adult_workspace(Workspace.init(tmp_path / "ws"), 20)
    make_officer(ws)
    subject = subject_ids(ws, 1)[0]
    rid = ws.session(OWNER, "subject_request").request_open("erasure", subject).value["id"]
    audit_on_server(ws)
    server = start_server(Path(ws.path), log=tmp_path / "serve.log")
    try:
        yield ws, server.url, rid, subject
    finally:
        server.stop()
        ws.close()


def _non_blank_png(path: Path) -> None:
    png = path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", png[16:24])
    assert width == WIDTH and height >= HEIGHT, (path, width, height)
    pixels = imread(path)[..., :3]
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 20, path  # text, badges, the header: not an empty page
    white = np.all(pixels > 0.97, axis=-1).mean()
    assert 0.2 < white < 0.995, (path, white)


def test_an_officer_reads_the_overview_fulfils_a_request_and_signs_a_dpia(
    served: tuple[Workspace, str, str, str], tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make browser)")
    from playwright.sync_api import expect, sync_playwright  # heavy: the browser driver

    expect.set_options(timeout=30_000)  # a machine busy with other tests renders slowly; never a pass by time

    ws, base, rid, subject = served
    shots = tmp_path / "screenshots"
    shots.mkdir()
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            page.set_default_timeout(30_000)
            # script errors, CSP violations, and any of the console's own requests that failed (the
            # browser's own look for a /favicon.ico aside)
            page.on(
                "console",
                lambda m: (
                    problems.append(m.text)
                    if m.type == "error" and not m.text.startswith("Failed to load resource")
                    else None
                ),
            )
            page.on(
                "response",
                lambda r: (
                    problems.append(f"{r.status} {r.url}")
                    if r.status >= 400 and not r.url.endswith("/favicon.ico")
                    else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(str(e)))

            # log in: the console sends the browser to the login page and back
            page.goto(base + "/console/")
            expect(page).to_have_url(re.compile(r"/console/login"))
            page.fill("#username", "dana")
            page.fill("#password", PASSWORD)
            page.click("button:has-text('Log in')")
            expect(page.locator("h1")).to_have_text("Overview")

            # the overview: the failing control first, with its fix
            controls = page.locator("#controls li.control")
            expect(controls.first).to_contain_text("A current DPIA exists where required")
            expect(controls.first).to_contain_text("How to fix it")
            expect(page.locator("#ledger")).to_contain_text("No signed checkpoint yet")
            page.screenshot(path=str(shots / "overview.png"), full_page=True)

            # open the failing control
            page.click("a[href='/console/controls/DPIA-1']")
            expect(page.locator("h1")).to_have_text("A current DPIA exists where required")
            expect(page.locator("main")).to_contain_text("How to fix it")
            expect(page.locator("table")).to_contain_text("adult")
            page.screenshot(path=str(shots / "control.png"), full_page=True)

            # the request work queue: verify the requester, then approve (fulfil) the erasure
            page.click("nav >> text=Requests")
            page.click(f"a[href='/console/requests/{rid}']")
            expect(page.locator("h1")).to_have_text("Erase their data")
            assert subject not in page.content()
            page.select_option("#method", "document")
            page.click("button:has-text('Record verification')")
            expect(page.locator(".notice")).to_have_text("Identity verification recorded.")
            page.fill("#subject", subject)
            page.click("button:has-text('Fulfil the request')")
            expect(page.locator(".notice")).to_have_text("Request carried out.")
            expect(page.locator("main")).to_contain_text("erase: done")
            page.screenshot(path=str(shots / "request.png"), full_page=True)

            # the DPIA: write it, review it, sign it off
            page.click("nav >> text=DPIAs")
            page.click("a[href='/console/dpias/adult']")
            page.click("button:has-text('Write version 1')")
            expect(page.locator("article.document")).to_contain_text("Why an assessment is needed")
            page.click("button:has-text('Sign version 1')")
            expect(page.locator(".notice")).to_have_text("Signed off.")
            expect(page.locator("main")).to_contain_text("signed off by dana")
            page.screenshot(path=str(shots / "dpia.png"), full_page=True)
        finally:
            browser.close()

    assert problems == []  # no script errors and no content-security-policy violations
    for name in ("overview", "control", "request", "dpia"):
        _non_blank_png(shots / f"{name}.png")
    # what the browser did is in the workspace
    audit = ws.session(OWNER, "audit")
    req = audit.request(rid)
    assert req["status"] == "fulfilled" and req["verification"] == "document"
    st = audit.dpia_status("adult")
    assert st["current"] and st["signed_by"] == "dana"
    actors = {json.loads(e.data)["actor"] for e in audit.ledger_entries(kind="dpia.recorded", limit=10)}
    assert actors == {"dana"}
