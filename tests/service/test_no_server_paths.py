"""No answer over HTTP names a path on the server (the workspace's folder, its SQLite file, its audit
reports or uploads): a remote caller has no use for one, and it tells an attacker where to look. Every
GET route of the API and the console is read by callers who may see everything, after an audit whose
reports the server keeps and an ingest whose upload it held."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from tests.service.conftest import bearer
from tests.service.test_console_pages import add_person, log_in
from tests.vault.conftest import people_frame

API = "/api/v1"


def wait_job(client: TestClient, token: str, job_id: str) -> dict[str, Any]:
    for _ in range(3000):
        state: dict[str, Any] = client.get(f"{API}/jobs/{job_id}", headers=bearer(token)).json()
        if state["state"] in ("succeeded", "failed", "cancelled"):
            return state
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish")


def server_paths(ws: Workspace, tmp_path: Path) -> list[str]:
    here = Path(ws.path)
    return sorted({str(here), str(here.resolve()), str(tmp_path), str(tmp_path.resolve())})


def api_gets(client: TestClient) -> list[str]:
    """The API's GET routes without a parameter in their path, from its schema."""
    schema = client.get(f"{API}/openapi.json").json()
    return sorted(p for p, ops in schema["paths"].items() if "get" in ops and "{" not in p)


def console_pages(client: TestClient, limit: int = 200) -> dict[str, str]:
    """The console's pages a logged-in person reaches by following its links from the overview."""
    pages: dict[str, str] = {}
    todo = ["/console/"]
    while todo and len(pages) < limit:
        path = todo.pop(0)
        if path in pages:
            continue
        r = client.get(path)
        pages[path] = r.text if r.status_code == 200 and r.headers["content-type"].startswith("text/html") else ""
        for link in re.findall(r'href="(/console/[^"#?]*)', pages[path]):
            if link not in pages and "logout" not in link:
                todo.append(link)
    return pages


def with_server_state(client: TestClient, ws: Workspace, token: str) -> dict[str, str]:
    """An audit kept on the server and an ingest from an upload, both as jobs; their ids."""
    h = bearer(token)
    audit = client.post(f"{API}/audits", headers=h, json={"formats": ["json", "md"]})
    assert audit.status_code == 202, audit.text
    assert wait_job(client, token, audit.json()["id"])["state"] == "succeeded"
    people = people_frame().head(5)
    ingest = client.post(
        f"{API}/datasets/customers/ingest",
        headers=h,
        params={"purpose": "credit_scoring"},
        data={"mode": "upsert"},
        files={"file": ("people.csv", people.to_csv(index=False).encode(), "text/csv")},
    )
    assert ingest.status_code == 202, ingest.text
    assert wait_job(client, token, ingest.json()["id"])["state"] in ("succeeded", "failed")
    return {"audit": audit.json()["id"], "ingest": ingest.json()["id"]}


def test_no_api_answer_names_a_server_path(
    client: TestClient, customers: Workspace, owner_token: str, tmp_path: Path
) -> None:
    jobs = with_server_state(client, customers, owner_token)
    paths = [f"{API}/jobs/{j}" for j in jobs.values()] + [f"{API}/datasets/customers"]
    paths += [p for p in api_gets(client) if not p.endswith("openapi.json")]
    assert f"{API}/status" in paths and f"{API}/jobs" in paths
    seen = 0
    for path in paths:
        r = client.get(path, headers=bearer(owner_token))
        if r.status_code != 200:
            continue
        seen += 1
        for server_path in server_paths(customers, tmp_path):
            assert server_path not in r.text, (path, server_path)
    assert seen >= 10


def test_status_says_the_backend_not_where_it_is(client: TestClient, owner_token: str) -> None:
    r = client.get(f"{API}/status", headers=bearer(owner_token))
    assert r.status_code == 200, r.text
    body = r.json()
    assert "path" not in body
    assert body["database"] == "sqlite"
    assert body["datasets"] == 0 and body["ledger_size"] >= 1


def test_no_console_page_names_a_server_path(
    client: TestClient, customers: Workspace, owner_token: str, tmp_path: Path
) -> None:
    with_server_state(client, customers, owner_token)
    add_person(customers, "dana", "auditor", "admin")
    customers.session(OWNER, "administration").add_rule("dana", "*", "export", "subject_request")
    log_in(client, "dana")
    pages = console_pages(client)
    assert sum(1 for text in pages.values() if text) >= 5, sorted(pages)
    for path, text in pages.items():
        for server_path in server_paths(customers, tmp_path):
            assert server_path not in text, (path, server_path)


def test_the_local_status_still_names_the_workspace(ws: Workspace) -> None:
    """The CLI's `complai status` runs on the server's own machine: its session op keeps the path."""
    status = ws.session(OWNER, "audit").status().as_dict()
    assert Path(status["path"]) == Path(ws.path)
