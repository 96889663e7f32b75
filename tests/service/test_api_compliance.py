"""/api/v1 compliance: audits (jobs, reports served and verified), RoPA, DPIAs, incidents, status and
vocabulary, through the ASGI client: each route's success, refusals (403, recorded), unknown ids (404),
bad bodies (400, one line, nothing written)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from tests.service.api_helpers import bad, refused, size
from tests.service.conftest import bearer
from tests.vault.conftest import SCHEMA

API = "/api/v1"


def finished(client: TestClient, headers: dict[str, str], job: dict) -> dict:
    for _ in range(1000):
        state = client.get(f"{API}/jobs/{job['id']}", headers=headers).json()
        if state["state"] in ("succeeded", "failed", "cancelled"):
            return state
        time.sleep(0.02)
    raise AssertionError(f"job did not finish: {state}")


# --- audits ------------------------------------------------------------------------------------------


def test_an_audit_runs_as_a_job_and_its_reports_are_served_and_verified(
    client: TestClient, ws: Workspace, token_for: Callable[..., str]
) -> None:
    h = bearer(token_for("aud", "auditor"))
    r = client.post(f"{API}/audits", headers=h, json={"epsilon_cap": 5.0})
    assert r.status_code == 202, r.text
    job = finished(client, h, r.json())
    assert job["state"] == "succeeded", job
    seq = job["result"]["audit"]
    entry = ws.session("owner", "audit").ledger_entries(start=seq, limit=1)[0]
    assert entry.seq == seq and entry.kind == "compliance.audited"
    recorded = json.loads(entry.data)
    listed = client.get(f"{API}/audits", headers=h).json()
    assert [a["seq"] for a in listed] == [seq]
    one = client.get(f"{API}/audits/{seq}", headers=h).json()
    assert one == listed[0]
    assert one["report_digest"] == recorded["report_digest"] == job["result"]["digest"]
    assert one["actor"] == "aud" and one["reports"] == ["json", "md", "html"]
    r = client.get(f"{API}/audits/{seq}/report", headers=h)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    report = r.content
    assert json.loads(report)["summary"]["fail"] == recorded["failed"]
    md = client.get(f"{API}/audits/{seq}/report?format=md", headers=h)
    assert md.headers["content-type"].startswith("text/markdown") and recorded["report_digest"] in md.text
    html = client.get(f"{API}/audits/{seq}/report?format=html", headers=h)
    assert html.headers["content-type"].startswith("text/html") and "<html" in html.text.lower()
    r = client.post(f"{API}/audits/{seq}/verify", headers=h)
    assert r.status_code == 200 and r.json()["ok"] and r.json()["ledger_seq"] == seq
    r = client.post(f"{API}/audits/verify", headers=h, files={"report": ("report.json", report, "application/json")})
    assert r.status_code == 200, r.text
    assert r.json()["digest"] == recorded["report_digest"]
    tampered = report.replace(b'"fail":', b'"fail": ', 1)
    r = client.post(f"{API}/audits/verify", headers=h, files={"report": ("report.json", tampered, "application/json")})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


def test_audit_refusals_unknown_audits_and_bad_bodies(
    client: TestClient, ws: Workspace, tmp_path: Path, token_for: Callable[..., str]
) -> None:
    analyst = bearer(token_for("ana", "analyst"))
    before = size(ws)
    refused(ws, client.post(f"{API}/audits", headers=analyst, json={}), before)
    assert ws.session("owner", "administration").jobs() == []
    for path in ("/audits", "/ropa"):
        before = size(ws)
        refused(ws, client.get(f"{API}{path}", headers=analyst), before)
    assert not (Path(ws.path) / "audits").exists()  # a refusal leaves no folder behind
    h = bearer(token_for("aud", "auditor"))
    assert client.get(f"{API}/audits/4242", headers=h).status_code == 404
    assert client.get(f"{API}/audits/1/report", headers=h).status_code == 404  # an entry that is no audit
    # an audit run elsewhere (the CLI) is listed, without reports on the server
    seq = ws.session("owner", "audit").compliance_audit(tmp_path / "cli-report", ("json",))["ledger_seq"]
    assert client.get(f"{API}/audits/{seq}", headers=h).json()["reports"] == []
    r = client.get(f"{API}/audits/{seq}/report", headers=h)
    assert r.status_code == 404 and "server" in r.json()["detail"]
    before = size(ws)
    bad(ws, client.post(f"{API}/audits", headers=h, json={"epsilon_cap": -1}), before)
    bad(ws, client.post(f"{API}/audits", headers=h, json={"epsilon_cap": "10"}), before)
    bad(ws, client.post(f"{API}/audits", headers=h, json={"out": "/etc"}), before)
    bad(ws, client.get(f"{API}/audits/{seq}/report?format=pdf", headers=h), before)
    bad(ws, client.post(f"{API}/audits/verify", headers=h), before)
    assert ws.session("owner", "administration").jobs() == []


# --- records of processing and DPIAs -----------------------------------------------------------------


def test_records_of_processing_and_a_dpia_generated_signed_and_current(
    client: TestClient, customers: Workspace, token_for: Callable[..., str]
) -> None:
    # records of processing as json
    h = bearer(token_for("aud", "auditor"))
    r = client.get(f"{API}/ropa", headers=h)
    assert r.status_code == 200
    records = {(x["dataset"], x["purpose"]): x for x in r.json()}
    assert set(records) == {("customers", p) for p in SCHEMA["purposes"]}
    assert records[("customers", "fraud_detection")]["lawful_basis"] == "gdpr.legitimate_interests"

    # dpia generated signed and current
    ws = customers
    admin = bearer(token_for("adam", "admin"))
    auditor = h
    r = client.post(f"{API}/dpias/customers", headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1 and r.json()["document"]["risks"]
    st = client.get(f"{API}/dpias/customers", headers=auditor).json()
    assert st["current"] is False and st["signed_by"] is None
    r = client.post(f"{API}/dpias/customers/sign", headers=admin, json={"by": "dpo@example.org"})
    assert r.status_code == 200 and r.json()["signed_by"] == "dpo@example.org"
    assert client.get(f"{API}/dpias/customers", headers=auditor).json()["current"] is True
    before = size(ws)
    bad(ws, client.post(f"{API}/dpias/customers/sign", headers=admin, json={"by": "dpo"}), before)  # signed already
    bad(ws, client.post(f"{API}/dpias/customers/sign", headers=admin, json={"by": "dpo", "version": 0}), before)
    bad(ws, client.post(f"{API}/dpias/customers/sign", headers=admin, json={}), before)
    assert client.post(f"{API}/dpias/nothing", headers=admin).status_code == 404
    assert client.get(f"{API}/dpias/nothing", headers=auditor).status_code == 404
    before = size(ws)
    refused(ws, client.post(f"{API}/dpias/customers", headers=auditor), before)  # generating is admin
    before = size(ws)
    refused(ws, client.post(f"{API}/dpias/nothing", headers=auditor), before)  # refused before it is looked up


# --- incidents ---------------------------------------------------------------------------------------


def test_incidents_status_and_vocabulary(client: TestClient, ws: Workspace, token_for: Callable[..., str]) -> None:
    # incident opened listed notified and closed
    admin = bearer(token_for("adam", "admin"))
    auditor = bearer(token_for("aud", "auditor"))
    r = client.post(f"{API}/incidents", headers=admin, json={"description": "a laptop was stolen"})
    assert r.status_code == 201, r.text
    inc = r.json()
    assert inc["notify_by"] > inc["opened_at"] and inc["notified_at"] is None
    assert [i["id"] for i in client.get(f"{API}/incidents", headers=auditor).json()] == [inc["id"]]
    r = client.post(f"{API}/incidents/{inc['id']}/notify", headers=admin, json={"authority": "CNIL"})
    assert r.status_code == 200 and r.json()["notified_at"] is not None
    r = client.post(f"{API}/incidents/{inc['id']}/close", headers=admin)
    assert r.status_code == 200 and r.json()["closed_at"] is not None
    assert client.post(f"{API}/incidents/inc-nothing/close", headers=admin).status_code == 404
    assert client.post(f"{API}/incidents/inc-nothing/notify", headers=admin, json={"authority": "x"}).status_code == 404
    before = size(ws)
    refused(ws, client.post(f"{API}/incidents", headers=auditor, json={"description": "x"}), before)
    before = size(ws)
    bad(ws, client.post(f"{API}/incidents", headers=admin, json={"description": ""}), before)
    bad(ws, client.post(f"{API}/incidents", headers=admin, json={"description": "x", "kind": "breach"}), before)
    bad(ws, client.get(f"{API}/incidents?limit=0", headers=auditor), before)
    assert len(client.get(f"{API}/incidents", headers=auditor).json()) == 1

    # status for overseers and vocabulary for all
    st = client.get(f"{API}/status", headers=auditor).json()
    assert st["ledger_size"] == size(ws) and st["datasets"] == 0
    analyst = bearer(token_for("ana", "analyst"))
    before = size(ws)
    refused(ws, client.get(f"{API}/status", headers=analyst), before)
    every = client.get(f"{API}/vocabulary", headers=analyst).json()
    assert set(every) == {"categories", "purposes", "bases", "jurisdictions", "subjects"}
    bases = client.get(f"{API}/vocabulary/bases", headers=analyst).json()
    assert "gdpr.consent" in [t["key"] for t in bases] and bases == every["bases"]
    assert "credit_scoring" in [t["key"] for t in every["purposes"]]
    assert client.get(f"{API}/vocabulary/spells", headers=analyst).status_code == 400


# --- status and vocabulary ---------------------------------------------------------------------------
