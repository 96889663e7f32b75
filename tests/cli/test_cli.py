"""The command line as a user runs it: real processes, exit codes, one-line errors, JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from complai.crypto.signing import VerifierKey
from complai.ledger import merkle
from complai.ledger.checkpoint import verify_note


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "complai.cli.main", *args], capture_output=True, text=True, env=full_env, check=False
    )


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "qs"
    r = run("quickstart", "--workspace", str(path), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["dataset"] == "adult" and "credit_scoring" in summary["purposes"]
    assert summary["rows"] == 48842
    # the clean quickstart workspace passes every control that applies to it, and says where the report is
    assert summary["audit"]["summary"]["fail"] == 0 and summary["audit"]["summary"]["pass"] >= 10
    assert Path(summary["audit"]["html"]).is_file()
    assert summary["model"]["epsilon"] <= 1.0 and summary["federated"]["accuracy"] > 0.7
    return path


def test_version() -> None:
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("complai ")


def test_init_twice_refuses_with_exit_2(tmp_path: Path) -> None:
    target = tmp_path / "ws"
    assert run("init", "--workspace", str(target)).returncode == 0
    before = sorted(p.name for p in target.rglob("*"))
    r = run("init", "--workspace", str(target))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "already exists" in r.stderr
    assert sorted(p.name for p in target.rglob("*")) == before


def test_status_on_missing_or_corrupt_workspace(tmp_path: Path) -> None:
    r = run("--workspace", str(tmp_path / "missing"), "status")
    assert r.returncode == 2 and "no complai workspace" in r.stderr and r.stderr.count("\n") == 1
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "complai.toml").write_text("not = [toml")
    r = run("--workspace", str(tmp_path / "bad"), "status")
    assert r.returncode == 2 and "corrupt workspace" in r.stderr and "Traceback" not in r.stderr


def test_workspace_from_environment(quickstart: Path) -> None:
    r = run("status", "--json", env={"COMPLAI_WORKSPACE": str(quickstart)})
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["datasets"] == 1 and st["ledger_size"] >= 2


def test_debug_shows_traceback(tmp_path: Path) -> None:
    r = run("--debug", "--workspace", str(tmp_path / "missing"), "status")
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_quickstart_refuses_to_overwrite_without_reset(quickstart: Path, tmp_path: Path) -> None:
    r = run("quickstart", "--workspace", str(quickstart))
    assert r.returncode == 2 and "--reset" in r.stderr
    other = tmp_path / "not-a-workspace"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    r = run("quickstart", "--workspace", str(other), "--reset")
    assert r.returncode == 2 and (other / "precious.txt").exists()


def test_ledger_prove_outputs_a_verifiable_proof(quickstart: Path) -> None:
    r = run("--workspace", str(quickstart), "ledger", "prove", "1")
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    key = VerifierKey.parse(p["log_key"])
    note = verify_note(p["checkpoint"], key)
    assert note.checkpoint.size == p["tree_size"]
    leaf = merkle.leaf_hash(p["entry"].encode())
    assert leaf.hex() == p["leaf_hash"]
    merkle.verify_inclusion(
        p["seq"], p["tree_size"], leaf, [bytes.fromhex(x) for x in p["proof"]], note.checkpoint.root
    )
    r = run("--workspace", str(quickstart), "ledger", "prove", "999")
    assert r.returncode == 2 and "no ledger entry 999" in r.stderr


def test_ledger_show_status_export_and_witness(quickstart: Path, tmp_path: Path) -> None:
    ws = ["--workspace", str(quickstart)]
    shown = json.loads(run(*ws, "ledger", "show", "--type", "dataset.registered", "--json").stdout)
    assert [e["type"] for e in shown] == ["dataset.registered"]
    status = json.loads(run(*ws, "ledger", "status", "--json").stdout)
    assert status["entries_by_type"]["workspace.created"] == 1
    init = run("ledger", "witness", "init", str(tmp_path / "w"), "--name", "w.example")
    assert init.returncode == 0, init.stderr
    vkey = init.stdout.strip()
    assert run(*ws, "ledger", "witness", "add", vkey).returncode == 0
    assert run(*ws, "ledger", "checkpoint").returncode == 0
    assert run(*ws, "ledger", "witness", "cosign", str(tmp_path / "w")).returncode == 0
    v = run(*ws, "ledger", "verify", "--witnesses", "1", "--json")
    assert v.returncode == 0 and json.loads(v.stdout)["ok"]
    assert run(*ws, "ledger", "export", str(tmp_path / "exp")).returncode == 0
    ve = run("ledger", "verify-export", str(tmp_path / "exp"), "--witnesses", "1", "--json")
    assert ve.returncode == 0, ve.stdout + ve.stderr
    assert run(*ws, "ledger", "verify", "--witnesses", "2").returncode == 1
