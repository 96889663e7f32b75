"""`complai serve` as an operator runs it: --access-log writes one line per request (method, path,
status), and still no token, body or query value."""

from __future__ import annotations

from pathlib import Path

import httpx

from complai.app.workspace import Workspace
from tests.service.live import serving


def test_access_log_names_each_request_and_no_secret(tmp_path: Path) -> None:
    ws_path = tmp_path / "ws"
    Workspace.init(ws_path).close()
    with serving(ws_path, "--access-log") as server:
        assert httpx.get(server.url + "/api/v1/health", timeout=10).status_code == 200
        forged = "cpl_0123456789abcdef_not-a-real-secret"
        httpx.get(server.url + "/api/v1/me", headers={"Authorization": f"Bearer {forged}"}, timeout=10)
        server.stop()
        out = server.output()
    assert "GET /api/v1/health" in out and " 200" in out
    assert "GET /api/v1/me" in out
    assert "not-a-real-secret" not in out
