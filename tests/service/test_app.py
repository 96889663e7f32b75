"""The service's frame: problem details, authentication, security headers, size limits, jobs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from tests.service.conftest import bearer


def test_health_needs_no_token_and_says_the_version(client: TestClient) -> None:
    r = client.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_a_request_without_a_token_is_a_401_problem(client: TestClient) -> None:
    r = client.get("/api/v1/me")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["title"] == "authentication failed"
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_a_forged_token_is_refused_recorded_and_never_echoed(
    client: TestClient, ws: Workspace, owner_token: str
) -> None:
    forged = owner_token[:-4] + "AAAA"
    r = client.get("/api/v1/me", headers=bearer(forged))
    assert r.status_code == 401
    assert forged not in r.text and owner_token.split("_")[2] not in r.text
    entries = ws.session("owner", "audit").ledger_entries()
    assert any(e.kind == "auth.refused" for e in entries)


def test_me_names_the_caller_and_its_roles(client: TestClient, token_for) -> None:
    token = token_for("ana", "analyst")
    r = client.get("/api/v1/me", headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.json()["principal"] == "ana" and r.json()["roles"] == ["analyst"]


def test_security_headers_on_every_response(client: TestClient) -> None:
    for path in ("/api/v1/health", "/api/v1/me", "/api/v1/nowhere"):
        h = client.get(path).headers
        assert h["x-content-type-options"] == "nosniff"
        assert h["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert h["cache-control"] == "no-store"
        assert "access-control-allow-origin" not in h


def test_no_cors_for_another_origin(client: TestClient, owner_token: str) -> None:
    r = client.options("/api/v1/me", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers


def test_a_body_over_the_limit_is_413_before_it_is_read(client: TestClient, owner_token: str) -> None:
    r = client.post("/api/v1/jobs/x", headers=bearer(owner_token), content=b"x" * (100 * 1024))
    assert r.status_code == 413
    assert r.json()["title"] == "request too large"


def test_unknown_route_is_a_404_problem(client: TestClient) -> None:
    r = client.get("/api/v1/nowhere")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def test_jobs_are_their_principals_own(client: TestClient, ws: Workspace, token_for) -> None:
    ana = ws.session("owner", "administration")  # an owner's job, seen by no analyst
    job = ana.job_create("test.sleep")
    token = token_for("ana", "analyst")
    assert client.get(f"/api/v1/jobs/{job.id}", headers=bearer(token)).status_code == 404
    assert client.get("/api/v1/jobs", headers=bearer(token)).json() == []


def test_a_job_runs_reports_and_finishes(client: TestClient, ws: Workspace, owner_token: str) -> None:
    runner = client.app.state.jobs
    session = ws.session("owner", "administration")

    def work(s, progress):
        for i in range(3):
            progress(i + 1, 3)
        return {"rows": 3}

    job = runner.submit(session, "test.count", work, total=3, unit="rows")
    for _ in range(200):
        state = client.get(f"/api/v1/jobs/{job.id}", headers=bearer(owner_token)).json()
        if state["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.02)
    assert state["state"] == "succeeded", state
    assert state["result"] == {"rows": 3} and state["progress"]["done"] == 3


def test_openapi_schema_is_served(client: TestClient) -> None:
    doc = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/me" in doc["paths"]
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


def test_no_interactive_docs_page_loads_scripts_from_elsewhere(client: TestClient) -> None:
    # FastAPI's Swagger page pulls its scripts from a CDN beside the bearer token: not served
    assert client.get("/api/docs").status_code == 404
    assert client.get("/api/redoc").status_code == 404
    assert client.get("/api/v1/openapi.json").status_code == 200


def test_the_served_app_has_the_request_deadline_inside_the_security_headers(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`complai serve` hands each worker its deadlines with its other settings; the deadline's answers
    pass through the security headers, and a streamed body through it before its size limit."""
    from complai.config import ServiceSettings
    from complai.service.app import UPLOAD_PATHS, factory
    from complai.service.middleware import BodyLimit, RequestDeadline, SecurityHeaders, Unexpected

    settings = ServiceSettings(workspace=Path(ws.path), request_timeout_s=7.5, upload_timeout_s=900)
    for k, v in settings.to_env().items():
        monkeypatch.setenv(k, v)
    app = factory()
    assert [m.cls for m in app.user_middleware] == [SecurityHeaders, RequestDeadline, BodyLimit, Unexpected]
    deadline = app.user_middleware[1]
    assert deadline.kwargs["seconds"] == 7.5 and deadline.kwargs["upload_seconds"] == 900.0
    assert deadline.kwargs["upload_paths"] == UPLOAD_PATHS


def test_a_worker_runs_as_many_requests_at_once_as_its_settings_say(ws: Workspace) -> None:
    import dataclasses

    import anyio.to_thread

    from complai.config import ServiceSettings
    from complai.service.app import create_app

    settings = dataclasses.replace(ServiceSettings(workspace=Path(ws.path)), request_threads=3)
    with TestClient(create_app(settings, workspace=ws)) as c:
        assert c.portal is not None
        assert c.portal.call(lambda: anyio.to_thread.current_default_thread_limiter().total_tokens) == 3
