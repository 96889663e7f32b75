"""Attacks on jobs: an admin oversees every principal's jobs (state, progress, cancel), but a job's
result is its principal's alone. An audit's findings or a model's card must not reach, through
/api/v1/jobs, a caller that /api/v1/audits or /api/v1/models refuses. Job ids are not paths."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from tests.service.conftest import bearer


def test_an_overseer_sees_another_principals_job_but_not_its_result(
    client: TestClient, ws: Workspace, token_for: Callable[..., str]
) -> None:
    owner = ws.session("owner", "audit")
    job = owner.job_create("compliance.audit")
    owner.job_finish(job.id, result={"audit": 7, "summary": {"fail": 3, "pass": 5}})
    admin = token_for("adam", "admin")
    # the route the result belongs to refuses the admin
    assert client.get("/api/v1/audits", headers=bearer(admin)).status_code == 403
    one = client.get(f"/api/v1/jobs/{job.id}", headers=bearer(admin))
    assert one.status_code == 200, one.text
    assert one.json()["state"] == "succeeded" and one.json()["result"] is None
    listed = client.get("/api/v1/jobs", headers=bearer(admin)).json()
    assert [j["result"] for j in listed if j["id"] == job.id] == [None]
    assert "fail" not in one.text and "fail" not in str(listed)
    # the job's own principal still sees it
    mine = client.get(
        f"/api/v1/jobs/{job.id}", headers=bearer(ws.session("owner", "security").create_token("owner", "P1D").token)
    )
    assert mine.json()["result"] == {"audit": 7, "summary": {"fail": 3, "pass": 5}}


def test_an_admins_own_job_result_is_shown(client: TestClient, ws: Workspace, token_for: Callable[..., str]) -> None:
    admin = token_for("adam", "admin")
    session = ws.session("adam", "administration")
    job = session.job_create("retention.sweep")
    session.job_finish(job.id, result={"deleted": 0})
    assert client.get(f"/api/v1/jobs/{job.id}", headers=bearer(admin)).json()["result"] == {"deleted": 0}


def test_job_ids_that_look_like_paths_are_just_unknown(client: TestClient, owner_token: str) -> None:
    for job_id in ("..", "..%2F..%2Fcomplai.toml", "%00", "x" * 5000, "' OR 1=1 --"):
        r = client.get(f"/api/v1/jobs/{job_id}", headers=bearer(owner_token))
        assert r.status_code in (404, 400), (job_id, r.status_code)
        assert "complai.toml" not in r.text or r.status_code == 404
        assert "Traceback" not in r.text and "SELECT" not in r.text
