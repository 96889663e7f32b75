"""`complai audit` and `complai audit verify` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from complai.app.workspace import Workspace
from tests.cli.test_cli import run
from tests.dp.conftest import adult_workspace


def test_audit_exit_codes_and_verification(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    adult_workspace(Workspace.init(ws), 200).close()
    w = ["--workspace", str(ws)]
    r = run(*w, "audit", "--out", str(tmp_path / "rep"), "--json")
    # Adult needs a DPIA (special categories, profiling): that fails; no checkpoint and no witness to
    # cosign one yet only warn (missing evidence, with the command that supplies it)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    failing = {c["id"] for c in doc["controls"] if c["status"] == "fail"}
    assert failing == {"DPIA-1"}
    assert {c["id"] for c in doc["controls"] if c["status"] == "warning"} == {"LEDGER-1"}
    report = tmp_path / "rep" / "report.json"
    r = run(*w, "audit", "verify", str(report))
    assert r.returncode == 0 and "report verified" in r.stdout
    report.write_bytes(report.read_bytes().replace(b'"fail"', b'"pass"', 1))
    r = run(*w, "audit", "verify", str(report))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    r = run(*w, "audit", "verify", str(tmp_path / "missing.json"))
    assert r.returncode == 2
    r = run(*w, "audit", "--out", str(tmp_path / "x"), "--format", "pdf")
    assert r.returncode == 2 and "unknown report format" in r.stderr


def test_request_commands(tmp_path: Path) -> None:
    ws_path = tmp_path / "ws"
    ws = adult_workspace(Workspace.init(ws_path), 30)
    subject = ws.vault.fetch("adult", "analytics", ["subject_id"])[0]["subject_id"].iloc[0]
    ws.close()
    w = ["--workspace", str(ws_path)]
    r = run(*w, "request", "open", "--type", "access", "--subject", subject, "--json")
    assert r.returncode == 0, r.stderr
    req = json.loads(r.stdout)
    assert req["jurisdiction"] == "EU" and req["status"] == "open" and not req["verified"]
    out = tmp_path / "export.json"
    r = run(*w, "request", "fulfil", req["id"], "--subject", subject, "--out", str(out))
    assert r.returncode == 2 and "verify the requester" in r.stderr and not out.exists()
    assert run(*w, "request", "verify", req["id"], "--method", "document").returncode == 0
    r = run(*w, "request", "fulfil", req["id"], "--subject", subject, "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "fulfilled"
    assert json.loads(out.read_text())["subject"]["id"] == subject
    listed = json.loads(run(*w, "request", "list", "--json").stdout)
    assert [x["id"] for x in listed] == [req["id"]]
    r = run(*w, "request", "open", "--type", "nonsense", "--subject", subject)
    assert r.returncode == 2 and "unknown request type" in r.stderr


def test_periodic_audits_record_each_run(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    adult_workspace(Workspace.init(ws), 30).close()
    w = ["--workspace", str(ws)]
    r = run(*w, "audit", "run", "--every", "PT1S", "--count", "2", "--out", str(tmp_path / "runs"), "--format", "json")
    assert r.returncode == 0, r.stderr
    reports = sorted((tmp_path / "runs").glob("*/report.json"))
    assert len(reports) == 2
    second = json.loads(reports[1].read_bytes())
    first = json.loads(reports[0].read_bytes())
    assert second["scope"]["since"] == first["scope"]["ledger_size"]  # incremental after the first
    for path in reports:
        assert run(*w, "audit", "verify", str(path)).returncode == 0
    r = run(*w, "audit", "run", "--every", "daily")
    assert r.returncode == 2 and "ISO-8601 period" in r.stderr
