"""Vault commands as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.cli.test_cli import run
from tests.vault.conftest import SCHEMA, consents_frame, people_frame


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("vault-cli")
    path = base / "ws"
    assert run("init", "--workspace", str(path)).returncode == 0
    (base / "schema.yaml").write_text(yaml.safe_dump(SCHEMA))
    people_frame().rename(columns={"customer_id": "cid"}).to_csv(base / "people.csv", index=False)
    consents_frame().to_csv(base / "consents.csv", index=False)
    w = ["--workspace", str(path)]
    r = run(*w, "dataset", "create", "customers", "--schema", str(base / "schema.yaml"))
    assert r.returncode == 0, r.stderr
    r = run(
        *w,
        "dataset",
        "ingest",
        "customers",
        str(base / "people.csv"),
        "--subject-column",
        "cid",
        "--consents",
        str(base / "consents.csv"),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rows"] == 4
    return path


def test_list_and_show(ws: Path) -> None:
    listed = json.loads(run("--workspace", str(ws), "dataset", "list", "--json").stdout)
    assert listed[0]["dataset"] == "customers" and listed[0]["records"] == 4
    shown = json.loads(run("--workspace", str(ws), "dataset", "show", "customers", "--json").stdout)
    assert shown["purposes"]["credit_scoring"] == "gdpr.consent" and shown["subjects"] == 4


def test_consent_and_subject_commands(ws: Path, tmp_path: Path) -> None:
    w = ["--workspace", str(ws)]
    assert run(*w, "consent", "withdraw", "C-1002", "--purpose", "marketing").returncode == 0
    assert run(*w, "consent", "grant", "C-1003", "--purpose", "marketing", "--notice-version", "v7").returncode == 0
    assert (
        run(
            *w, "subject", "rectify", "C-1003", "--dataset", "customers", "--field", "segment", "--value", "premium"
        ).returncode
        == 0
    )
    r = run(*w, "subject", "export", "C-1003", "--out", str(tmp_path / "x.json"))
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "x.json").read_text())
    assert doc["records"]["customers"][0]["fields"]["segment"] == "premium"
    assert any(c["notice_version"] == "v7" for c in doc["consents"])
    assert run(*w, "subject", "restrict", "C-1003", "--reason", "contested").returncode == 0
    assert run(*w, "subject", "restrict", "C-1003", "--lift").returncode == 0
    assert run(*w, "subject", "object", "C-1003", "--purpose", "fraud_detection").returncode == 0
    r = run(*w, "subject", "erase", "C-1004", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["erased"]
    r = run(*w, "subject", "export", "C-1004")
    assert r.returncode == 2 and "erased" in r.stderr


def test_bad_input_exits_2_with_one_line(ws: Path, tmp_path: Path) -> None:
    w = ["--workspace", str(ws)]
    bad = tmp_path / "bad.csv"
    bad.write_text("customer_id,income\nC-1,lots\n")
    r = run(*w, "dataset", "ingest", "customers", str(bad))
    assert r.returncode == 2 and "is not an integer" in r.stderr and r.stderr.count("\n") == 1
    r = run(*w, "dataset", "ingest", "customers", str(tmp_path / "missing.csv"))
    assert r.returncode == 2 and "not found" in r.stderr
    r = run(*w, "consent", "grant", "C-1001", "--purpose", "telepathy")
    assert r.returncode == 2 and "unknown purpose" in r.stderr
    r = run(*w, "dataset", "create", "other", "--schema", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "not found" in r.stderr


def test_keys_retention_and_backup(ws: Path, tmp_path: Path) -> None:
    w = ["--workspace", str(ws)]
    r = run(*w, "keys", "rotate", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["to_version"] == 2
    st = json.loads(run(*w, "keys", "status", "--json").stdout)
    assert st["kek_current"] == 2 and st["rotation_pending"] == 0
    r = run(*w, "retention", "sweep", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["records_deleted"] == 0
    r = run(*w, "backup", "create", str(tmp_path / "b.bak"), "--json")
    assert r.returncode == 0, r.stderr
    key = ws / "keys" / "backup.key"
    assert key.stat().st_mode & 0o077 == 0
    r = run(
        "backup",
        "restore",
        str(tmp_path / "b.bak"),
        "--workspace",
        str(tmp_path / "r"),
        "--key-file",
        str(key),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["later_ledger_checked"] is True
    assert run("--workspace", str(tmp_path / "r"), "ledger", "verify").returncode == 0
    broken = tmp_path / "broken.bak"
    data = bytearray((tmp_path / "b.bak").read_bytes())
    data[-40] ^= 1
    broken.write_bytes(bytes(data))
    r = run("backup", "restore", str(broken), "--workspace", str(tmp_path / "r2"), "--key-file", str(key))
    assert r.returncode == 1 and "tampered" in r.stderr and not (tmp_path / "r2").exists()
