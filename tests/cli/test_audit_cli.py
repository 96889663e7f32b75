"""`complai audit` and `complai audit verify` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from complai.workspace import Workspace
from tests.cli.test_cli import run
from tests.dp.conftest import adult_workspace


def test_audit_exit_codes_and_verification(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    adult_workspace(Workspace.init(ws), 200).close()
    w = ["--workspace", str(ws)]
    r = run(*w, "audit", "--out", str(tmp_path / "rep"), "--json")
    # no witness cosigns checkpoints yet, and Adult's analytics purpose lacks an Art. 9 condition
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    failing = {c["id"] for c in doc["controls"] if c["status"] == "fail"}
    assert failing == {"LEDGER-1", "BASIS-1"}
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
