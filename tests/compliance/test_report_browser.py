"""The audit report of a workspace with failures, opened in headless Chromium: the screenshot has the
window's size and is not blank, and in the rendered page the first control after the summary is the
failing one, then the warning."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
from matplotlib.image import imread

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from tests.dp.conftest import adult_workspace

WIDTH, HEIGHT = 1280, 2000


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    assert found, "Chromium is needed for this test (make browser installs Debian's chromium)"
    return found


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def test_the_report_of_a_failing_workspace_renders_failures_first(sqlite_ws: Workspace, tmp_path: Path) -> None:
    ws = adult_workspace(sqlite_ws, 200)
    ws.session(OWNER, "analytics").dp_query("SELECT COUNT(*) FROM adult", 0.5)
    # a model trained without differential privacy fails DP-1; no checkpoint yet warns in LEDGER-1
    ws.session(OWNER, "train_ai_system").train("adult", label="income", private=False, epochs=1)
    out = ws.session(OWNER, "audit").compliance_audit(tmp_path / "report", formats=("json", "html"))
    status = {c["id"]: c["status"] for c in out["report"]["controls"]}
    assert status["DP-1"] == "fail" and status["LEDGER-1"] == "warning"
    assert out["report"]["models"][0]["flags"] == ["trained without differential privacy"]
    page = Path(out["files"]["html"])

    chrome = _chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'p'}"]
    shot = tmp_path / "report.png"
    r = subprocess.run(
        [chrome, *flags, f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    png = shot.read_bytes()
    assert _png_size(png) == (WIDTH, HEIGHT)
    pixels = imread(shot)[..., :3]
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text, badges, the header: not a blank page
    white = np.all(pixels > 0.98, axis=-1).mean()
    assert 0.2 < white < 0.98

    dom = subprocess.run(
        [chrome, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=False
    ).stdout
    sections = re.findall(r'<section[^>]*\bid="([^"]+)"', dom)
    after = sections[sections.index("summary") + 1 :]
    failing = [k for k, s in status.items() if s == "fail"]
    assert after[0] == f"control-{failing[0]}" and status[failing[0]] == "fail"
    assert after[: len(failing) + 1] == [*(f"control-{k}" for k in failing), "control-LEDGER-1"]
    assert 'id="chart-activity"' in dom and 'id="chart-budget"' in dom and out["digest"] in dom
