"""The HTML report renders in headless Chromium: a screenshot is taken and the rendered page's main
elements (summary, the three charts, records of processing, controls, the digest) are present."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from tests.dp.conftest import adult_workspace


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    assert found, "Chromium is needed for this test (make test installs Debian's chromium)"
    return found


def test_html_report_renders_in_headless_chromium(sqlite_ws: Workspace, tmp_path: Path) -> None:
    ws = adult_workspace(sqlite_ws, 60)
    ws.session(OWNER, "analytics").dp_query("SELECT COUNT(*) FROM adult", 0.5)
    subject = ws.vault.fetch("adult", "analytics", ["subject_id"])[0]["subject_id"].iloc[0]
    ws.session(OWNER, "subject_request").request_open("access", subject)
    out = ws.session(OWNER, "audit").compliance_audit(tmp_path / "report")
    page = Path(out["files"]["html"])
    chrome = _chromium()
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = tmp_path / "report.png"
    r = subprocess.run(
        [chrome, *flags, "--window-size=1280,2000", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    dom = subprocess.run(
        [chrome, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=False
    ).stdout
    for element in (
        'id="summary"',
        'id="chart-status"',
        'id="chart-budget"',
        'id="chart-deadlines"',
        'id="ropa"',
        'id="control-LEDGER-1"',
        'id="control-REQ-1"',
        'id="report-digest"',
    ):
        assert element in dom, element
    assert out["digest"] in dom and "<polyline" in dom  # the budget line was drawn from the ledger's spends
