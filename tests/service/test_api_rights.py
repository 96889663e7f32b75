"""/api/v1 subject rights, consents, the request register, retention, keys and backups, through the
ASGI client: each route's success, its refusals (403, recorded, nothing else written), unknown ids
(404), bad bodies (400, one line, nothing written); a request's lifecycle on every backend."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.service.api import rights as rights_api
from complai.vault.backup import load_backup_key
from tests.service.api_helpers import bad, kinds_since, refused, size, with_customers
from tests.service.conftest import bearer

API = "/api/v1"


def finished(client: TestClient, headers: dict[str, str], job: dict) -> dict:
    for _ in range(500):
        state = client.get(f"{API}/jobs/{job['id']}", headers=headers).json()
        if state["state"] in ("succeeded", "failed", "cancelled"):
            return state
        time.sleep(0.02)
    raise AssertionError(f"job did not finish: {state}")


def export(ws: Workspace, subject: str) -> dict:
    return ws.session("owner", "subject_request").export_subject(subject)


# --- subjects ----------------------------------------------------------------------------------------


def test_export_rectify_restrict_object_and_erase(client: TestClient, customers: Workspace, owner_token: str) -> None:
    # export is a json download of the subjects data
    r = client.post(f"{API}/subjects/export", headers=bearer(owner_token), json={"subject": "C-1001"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["content-disposition"].startswith("attachment")
    doc = r.json()
    assert doc["records"]["customers"][0]["fields"]["full_name"] == "Margarethe Vandersloot"
    assert {c["purpose"] for c in doc["consents"]} == {"credit_scoring", "marketing"}
    assert "C-1001" not in str(r.url)

    # rectify restrict object and erase
    ws, h = customers, bearer(owner_token)
    before = size(ws)
    body = {"subject": "C-1003", "dataset": "customers", "field": "segment", "value": "premium"}
    r = client.post(f"{API}/subjects/rectify", headers=h, json=body)
    assert r.status_code == 200, r.text
    assert export(ws, "C-1003")["records"]["customers"][0]["fields"]["segment"] == "premium"
    r = client.post(f"{API}/subjects/rectify", headers=h, json={**body, "field": "income", "value": 7})
    assert r.status_code == 200, r.text
    assert export(ws, "C-1003")["records"]["customers"][0]["fields"]["income"] == 7
    r = client.post(f"{API}/subjects/restrict", headers=h, json={"subject": "C-1003", "reason": "contested"})
    assert r.status_code == 200
    r = client.post(f"{API}/subjects/restrict", headers=h, json={"subject": "C-1003", "lift": True})
    assert r.status_code == 200
    r = client.post(f"{API}/subjects/object", headers=h, json={"subject": "C-1003", "purpose": "fraud_detection"})
    assert r.status_code == 200
    r = client.post(
        f"{API}/subjects/object", headers=h, json={"subject": "C-1002", "purpose": "marketing", "opt_out": True}
    )
    assert r.status_code == 200
    r = client.post(f"{API}/subjects/erase", headers=h, json={"subject": "C-1004"})
    assert r.status_code == 200 and isinstance(r.json()["ledger_seq"], int)
    changes = [k for k in kinds_since(ws, before) if k != "subject.exported"]  # the test's own exports
    assert changes == ["subject.rectified"] * 2 + ["subject.restricted"] * 2 + ["subject.objected"] * 2 + [
        "subject.erased"
    ]
    r = client.post(f"{API}/subjects/export", headers=h, json={"subject": "C-1004"})
    assert r.status_code == 404 and "erased" in r.json()["detail"]


def test_subject_refusals_unknown_subjects_and_bad_bodies(
    client: TestClient, customers: Workspace, owner_token: str, token_for: Callable[..., str]
) -> None:
    ws = customers
    admin = bearer(token_for("adam", "admin"))  # admin is not export, erase or ingest
    for path, body in (
        ("export", {"subject": "C-1001"}),
        ("erase", {"subject": "C-1001"}),
        ("rectify", {"subject": "C-1001", "dataset": "customers", "field": "segment", "value": "retail"}),
        ("restrict", {"subject": "C-1001"}),
        ("object", {"subject": "C-1001", "purpose": "marketing"}),
    ):
        before = size(ws)
        r = client.post(f"{API}/subjects/{path}", headers=admin, json=body)
        refused(ws, r, before)
        assert "Vandersloot" not in r.text
    assert export(ws, "C-1001")["records"]["customers"][0]["fields"]["segment"] == "premium"
    h = bearer(owner_token)
    assert client.post(f"{API}/subjects/export", headers=h, json={"subject": "C-9999"}).status_code == 404
    assert client.post(f"{API}/subjects/erase", headers=h, json={"subject": "C-9999"}).status_code == 404
    before = size(ws)
    bad(ws, client.post(f"{API}/subjects/erase", headers=h, json={}), before)
    bad(ws, client.post(f"{API}/subjects/erase", headers=h, json={"subject": 1001}), before)
    bad(ws, client.post(f"{API}/subjects/erase", headers=h, json={"subject": "C-1001", "why": "x"}), before)
    rectify = {"subject": "C-1001", "dataset": "customers", "field": "segment", "value": "gold"}
    bad(ws, client.post(f"{API}/subjects/rectify", headers=h, json=rectify), before)
    bad(ws, client.post(f"{API}/subjects/rectify", headers=h, json={**rectify, "field": "income", "value": -5}), before)
    bad(ws, client.post(f"{API}/subjects/restrict", headers=h, json={"subject": "C-1001", "lift": True}), before)
    bad(ws, client.post(f"{API}/subjects/object", headers=h, json={"subject": "C-1001", "purpose": "nap"}), before)
    assert export(ws, "C-1001")["records"]["customers"][0]["fields"]["segment"] == "premium"


def test_consents_granted_and_withdrawn_by_admins(
    client: TestClient, customers: Workspace, token_for: Callable[..., str]
) -> None:
    ws = customers
    admin = bearer(token_for("adam", "admin"))
    r = client.post(
        f"{API}/consents", headers=admin, json={"subject": "C-1003", "purpose": "marketing", "notice_version": "v7"}
    )
    assert r.status_code == 201, r.text
    consents = export(ws, "C-1003")["consents"]
    assert any(c["purpose"] == "marketing" and c["notice_version"] == "v7" for c in consents)
    r = client.post(f"{API}/consents/withdraw", headers=admin, json={"subject": "C-1001", "purpose": "marketing"})
    assert r.status_code == 200
    live = [c for c in export(ws, "C-1001")["consents"] if c["purpose"] == "marketing" and not c.get("withdrawn_at")]
    assert live == []
    analyst = bearer(token_for("ana", "analyst"))
    before = size(ws)
    refused(
        ws, client.post(f"{API}/consents", headers=analyst, json={"subject": "C-1004", "purpose": "marketing"}), before
    )
    before = size(ws)
    r = client.post(f"{API}/consents/withdraw", headers=admin, json={"subject": "C-1004", "purpose": "marketing"})
    assert r.status_code == 404 and size(ws) == before  # no live consent to withdraw
    bad(ws, client.post(f"{API}/consents", headers=admin, json={"subject": "C-1004", "purpose": "naps"}), before)


# --- the request register ----------------------------------------------------------------------------


def test_a_requests_lifecycle_on_every_backend(any_client: TestClient, any_ws: Workspace) -> None:
    ws = with_customers(any_ws)
    h = bearer(ws.session("owner", "security").create_token("owner", "P1D").token)
    r = any_client.post(f"{API}/requests", headers=h, json={"type": "access", "subject": "C-1002"})
    assert r.status_code == 201, r.text
    req = r.json()
    assert req["status"] == "open" and req["jurisdiction"] == "EU" and not req["verified"]
    assert "C-1002" not in r.text  # the register names subjects by pseudonym
    rid = req["id"]
    r = any_client.post(f"{API}/requests/{rid}/fulfil", headers=h, json={"subject": "C-1002"})
    assert r.status_code == 403 and "verify" in r.json()["detail"]
    assert any_client.post(f"{API}/requests/{rid}/verify", headers=h, json={"method": "document"}).json()["verified"]
    ack = any_client.post(f"{API}/requests/{rid}/acknowledge", headers=h).json()
    assert ack["acknowledged_at"] is not None
    extended = any_client.post(f"{API}/requests/{rid}/extend", headers=h, json={"reason": "complex"}).json()
    assert extended["extended"] and extended["due_at"] > req["due_at"]
    r = any_client.post(f"{API}/requests/{rid}/fulfil", headers=h, json={"subject": "C-1001"})
    assert r.status_code == 403  # not the request's subject
    r = any_client.post(f"{API}/requests/{rid}/fulfil", headers=h, json={"subject": "C-1002"})
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["request"]["status"] == "fulfilled"
    assert done["export"]["records"]["customers"][0]["fields"]["full_name"] == "Bartholomew Quigley"
    assert any_client.get(f"{API}/requests/{rid}", headers=h).json()["status"] == "fulfilled"
    listed = any_client.get(f"{API}/requests", headers=h).json()
    assert [x["id"] for x in listed] == [rid]
    r = any_client.post(f"{API}/requests/{rid}/reject", headers=h, json={"reason": "late"})
    assert r.status_code == 400  # a closed request stays closed


def test_request_refusals_unknown_ids_bad_bodies_and_an_admins_fulfilment(
    client: TestClient, customers: Workspace, owner_token: str, token_for: Callable[..., str]
) -> None:
    # request refusals unknown ids and bad bodies
    ws, h = customers, bearer(owner_token)
    rid = client.post(f"{API}/requests", headers=h, json={"type": "erasure", "subject": "C-1004"}).json()["id"]
    client.post(f"{API}/requests/{rid}/verify", headers=h, json={"method": "account"})
    steward = bearer(token_for("stu", "steward"))
    for method, path, body in (
        ("post", "/requests", {"type": "access", "subject": "C-1001"}),
        ("get", "/requests", None),
        ("get", f"/requests/{rid}", None),
        ("post", f"/requests/{rid}/verify", {"method": "email"}),
        ("post", f"/requests/{rid}/acknowledge", None),
        ("post", f"/requests/{rid}/extend", {"reason": "x"}),
        ("post", f"/requests/{rid}/reject", {"reason": "x"}),
        ("post", f"/requests/{rid}/fulfil", {"subject": "C-1004"}),
    ):
        before = size(ws)
        r = client.request(method, f"{API}{path}", headers=steward, json=body)
        refused(ws, r, before)
        assert "sp:" not in r.text  # nothing of the request is shown
    assert export(ws, "C-1004")["records"]["customers"]  # the steward erased nothing
    for path in ("/requests/req-nothing", "/requests/req-nothing/acknowledge"):
        method = "get" if path.count("/") == 2 else "post"
        assert client.request(method, f"{API}{path}", headers=h).status_code == 404
    before = size(ws)
    bad(ws, client.post(f"{API}/requests", headers=h, json={"type": "gossip", "subject": "C-1001"}), before)
    bad(ws, client.post(f"{API}/requests", headers=h, json={"type": "access"}), before)
    bad(ws, client.post(f"{API}/requests/{rid}/extend", headers=h, json={"reason": ""}), before)
    bad(ws, client.post(f"{API}/requests/{rid}/fulfil", headers=h, json={"subject": "C-1004", "out": "/tmp/x"}), before)
    bad(ws, client.get(f"{API}/requests?limit=100000", headers=h), before)
    r = client.post(f"{API}/requests/{rid}/reject", headers=h, json={"reason": "a legal hold applies"})
    assert r.status_code == 200 and r.json()["status"] == "rejected"

    # an admin fulfils only what its own rights allow
    ws = customers
    admin = bearer(token_for("adam", "admin"))
    rid = client.post(f"{API}/requests", headers=admin, json={"type": "erasure", "subject": "C-1004"}).json()["id"]
    client.post(f"{API}/requests/{rid}/verify", headers=admin, json={"method": "account"})
    r = client.post(f"{API}/requests/{rid}/fulfil", headers=admin, json={"subject": "C-1004"})
    assert r.status_code == 200, r.text
    step = r.json()["request"]["steps"][0]
    assert r.json()["request"]["status"] == "partial" and step["status"] == "failed"  # erase is not admin
    assert export(ws, "C-1004")["records"]["customers"]


# --- retention, keys, backups ------------------------------------------------------------------------


def test_retention_sweep_runs_as_a_job(client: TestClient, customers: Workspace, clock: ManualClock) -> None:
    ws = customers
    clock.advance(timedelta(days=31))  # past the dataset's P30D retention
    h = bearer(ws.session("owner", "security").create_token("owner", "P1D").token)
    r = client.post(f"{API}/retention/sweep", headers=h)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/api/v1/jobs/{r.json()['id']}"
    job = finished(client, h, r.json())
    assert job["state"] == "succeeded", job
    assert job["result"]["records_deleted"] == 4 and job["result"]["subjects_shredded"] == 4


def test_a_refused_job_is_never_queued_and_keys_rotate_as_a_job(
    client: TestClient, customers: Workspace, owner_token: str, token_for: Callable[..., str]
) -> None:
    # a refused job is a 403 and never queued
    ws = customers
    auditor = bearer(token_for("aud", "auditor"))
    for path, body in (("/retention/sweep", None), ("/keys/rotate", {})):
        before = size(ws)
        refused(ws, client.post(f"{API}{path}", headers=auditor, json=body), before)
    assert ws.session("owner", "administration").jobs() == []
    owner = bearer(ws.session("owner", "security").create_token("owner", "P1D").token)
    before = size(ws)
    bad(ws, client.post(f"{API}/keys/rotate", headers=owner, json={"batch_size": 0}), before)
    assert ws.session("owner", "administration").jobs() == []

    # keys status and rotation
    h = bearer(owner_token)
    st = client.get(f"{API}/keys", headers=h).json()
    assert st["kek_current"] == 1 and st["deks"] == 4
    r = client.post(f"{API}/keys/rotate", headers=h, json={"batch_size": 2})
    assert r.status_code == 202
    job = finished(client, h, r.json())
    assert job["state"] == "succeeded" and job["result"]["to_version"] == 2 and job["result"]["deks_rewrapped"] == 4
    assert client.get(f"{API}/keys", headers=h).json()["kek_current"] == 2
    assert export(customers, "C-1001")["records"]["customers"]  # still readable


def test_a_backup_is_refused_streamed_restored_with_the_cli_key_and_never_restored_over_http(
    client: TestClient,
    customers: Workspace,
    owner_token: str,
    token_for: Callable[..., str],
    tmp_path: Path,
    clock: ManualClock,
) -> None:
    # backup refusal and restore refused over http
    ws = customers
    analyst = bearer(token_for("ana", "analyst"))
    before = size(ws)
    refused(ws, client.post(f"{API}/backups", headers=analyst), before)
    assert not (Path(ws.path) / "keys" / "backup.key").exists()  # nothing written for a refusal
    r = client.post(f"{API}/backups/restore", headers=bearer(owner_token), files={"file": ("b", b"x" * 10)})
    assert r.status_code == 405 and "complai backup restore" in r.json()["detail"]
    assert client.post(f"{API}/backups/restore").status_code == 401
    # a backup is streamed and restores with the cli key
    r = client.post(f"{API}/backups", headers=bearer(owner_token))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    assert b"Vandersloot" not in r.content and b"C-1001" not in r.content
    archive = tmp_path / "ws.backup"
    archive.write_bytes(r.content)
    key = load_backup_key(Path(ws.path) / "keys" / "backup.key")
    result = Workspace.restore_backup(archive, tmp_path / "restored", key, clock=clock)
    assert result["tables"]["records"] == 4
    with Workspace.open(tmp_path / "restored", clock=clock) as restored:
        assert restored.session("owner", "subject_request").export_subject("C-1002")["records"]["customers"]


def test_no_subject_id_in_any_route_of_the_api() -> None:
    """Subject ids travel in bodies: no path or query parameter of these routes names a subject."""
    checked = 0
    for route in rights_api.router.routes:
        path = getattr(route, "path", "")
        if not path.startswith(("/subjects", "/consents", "/requests")):
            continue
        checked += 1
        params = [p.name for p in route.dependant.path_params + route.dependant.query_params]
        assert not any("subject" in p for p in params), (path, params)
        if path.startswith(("/subjects", "/consents")):
            assert [p.name for p in route.dependant.body_params] == ["body"], path
    assert checked >= 14
