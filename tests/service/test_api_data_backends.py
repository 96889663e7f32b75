"""Ingest by upload and governed reads over HTTP on every backend the run has (PostgreSQL when
COMPLAI_TEST_DATABASE_URL is set), and a cancel that lands inside the ingest's transaction."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

import complai.service.api.data as data_api
from complai.app.session import Session
from complai.app.workspace import Workspace
from tests.service.conftest import bearer
from tests.service.test_api_data import API, READ, csv_bytes, events, people, records, wait_job, with_people


def test_ingest_and_read_on_every_backend(any_client: TestClient, any_ws: Workspace) -> None:
    with_people(any_ws, 0)
    token = any_ws.session("owner", "security").create_token("owner", "P1D").token
    r = any_client.post(
        f"{API}/datasets/people/ingest",
        headers=bearer(token),
        files={"file": ("people.csv", csv_bytes(people(30)), "text/csv")},
    )
    assert r.status_code == 202, r.text
    done = wait_job(any_client, token, r.json()["id"])
    assert done["state"] == "succeeded" and done["result"]["rows"] == 30, done
    page = any_client.get(f"{API}/datasets/people/records?purpose={READ}&limit=20&offset=10", headers=bearer(token))
    assert page.status_code == 200, page.text
    local = any_ws.session("owner", READ).read("people")
    names = dict(zip(local["customer_id"], local["full_name"], strict=True))
    got = page.json()["rows"]
    assert len({row["customer_id"] for row in got}) == 20
    assert all(names[row["customer_id"]] == row["full_name"] for row in got)
    assert [e["rows"] for e in events(any_ws, "vault.read")] == [20, 30]


def test_a_cancel_inside_the_ingest_transaction_rolls_it_back(
    any_client: TestClient, any_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every row stored, then cancelled at the ingest's last check before its commit: nothing is kept.
    On SQLite the ingest holds the one write transaction, so the cancel reaches the job in process."""
    with_people(any_ws, 0)
    token = any_ws.session("owner", "security").create_token("owner", "P1D").token
    monkeypatch.setattr(data_api, "CANCEL_CHECK_S", 1e9)  # checks: before the ingest, and after its last row
    reached, go = threading.Event(), threading.Event()
    calls = {"n": 0}
    original = Session.job_cancel_requested

    def paused(self: Session, job_id: str) -> bool:
        calls["n"] += 1
        if calls["n"] == 2:  # inside the transaction, every row written
            reached.set()
            go.wait(30)
        return original(self, job_id)

    monkeypatch.setattr(Session, "job_cancel_requested", paused)
    r = any_client.post(
        f"{API}/datasets/people/ingest",
        headers=bearer(token),
        files={"file": ("people.csv", csv_bytes(people(50)), "text/csv")},
    )
    job_id = r.json()["id"]
    assert reached.wait(30)
    assert any_client.delete(f"{API}/jobs/{job_id}", headers=bearer(token)).status_code == 200
    go.set()
    done = wait_job(any_client, token, job_id)
    assert done["state"] == "cancelled", done
    assert records(any_ws) == 0 and not events(any_ws, "vault.ingested")
