"""Access commands as a user runs them: tokens act as other principals, policies decide, shares seal."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.cli.test_cli import run
from tests.vault.conftest import SCHEMA, consents_frame, people_frame


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("access-cli")
    path = base / "ws"
    w = ["--workspace", str(path)]
    assert run("init", "--workspace", str(path)).returncode == 0
    (base / "schema.yaml").write_text(yaml.safe_dump(SCHEMA))
    people_frame().to_csv(base / "people.csv", index=False)
    consents_frame().to_csv(base / "consents.csv", index=False)
    assert run(*w, "dataset", "create", "customers", "--schema", str(base / "schema.yaml")).returncode == 0
    r = run(*w, "dataset", "ingest", "customers", str(base / "people.csv"), "--consents", str(base / "consents.csv"))
    assert r.returncode == 0, r.stderr
    return path


def test_tokens_policies_and_denials(ws: Path) -> None:
    w = ["--workspace", str(ws)]
    assert run(*w, "principal", "add", "ana", "--kind", "service").returncode == 0
    assert run(*w, "role", "grant", "analyst", "--principal", "ana").returncode == 0
    r = run(*w, "token", "create", "--principal", "ana", "--json")
    assert r.returncode == 0, r.stderr
    token = json.loads(r.stdout)["token"]
    as_ana = [*w, "--token", token]
    # deny by default
    r = run(*as_ana, "subject", "export", "C-1001")
    assert r.returncode == 2 and "may not export" in r.stderr and token not in r.stderr
    r = run(
        *w,
        "policy",
        "allow",
        "role:analyst",
        "--dataset",
        "*",  # subject-level rights span every dataset: they need a rule on *
        "--action",
        "export",
        "--purpose",
        "subject_request",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    r = run(*as_ana, "subject", "export", "C-1001")
    assert r.returncode == 0 and json.loads(r.stdout)["subject"]["id"] == "C-1001"
    # an analyst cannot change the policy, nor read the ledger
    r = run(*as_ana, "policy", "allow", "ana", "--dataset", "*", "--action", "*", "--purpose", "*")
    assert r.returncode == 2 and "owner role is required" in r.stderr
    assert run(*as_ana, "ledger", "status").returncode == 2
    shown = json.loads(run(*w, "policy", "show", "--json").stdout)
    assert len(shown["rules"]) == 1 and shown["builtin"]
    r = run(*w, "ledger", "show", "--type", "access.denied", "--json")
    denied = json.loads(r.stdout)
    assert len(denied) >= 2 and all(e["event"]["actor"] == "ana" for e in denied)
    ledger = run(*w, "ledger", "show", "--limit", "1000", "--json").stdout
    assert token.split("_", 2)[2] not in ledger
    # revoked tokens are refused
    tid = token.split("_")[1]
    assert run(*w, "token", "revoke", tid).returncode == 0
    r = run(*as_ana, "subject", "export", "C-1001")
    assert r.returncode == 2 and "invalid, expired or revoked token" in r.stderr


def test_share_flow(ws: Path, tmp_path: Path) -> None:
    w = ["--workspace", str(ws)]
    assert run("share", "keygen", "--out", str(tmp_path / "bank.key")).returncode == 0
    r = run(
        *w,
        "share",
        "create",
        "--recipient",
        "bank",
        "--recipient-key",
        str(tmp_path / "bank.key.pub"),
        "--dataset",
        "customers",
        "--purpose",
        "credit_scoring",
        "--fields",
        "customer_id,income",
        "--max-uses",
        "1",
        "--recipient-jurisdiction",
        "EU",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    aid = json.loads(r.stdout)["id"]
    r = run(*w, "share", "export", aid, "--out", str(tmp_path / "p.pkg"))
    assert r.returncode == 0, r.stderr
    r = run(*w, "share", "export", aid, "--out", str(tmp_path / "p2.pkg"))
    assert r.returncode == 2 and "used 1 of 1" in r.stderr
    r = run(
        "share",
        "open",
        str(tmp_path / "p.pkg"),
        "--key",
        str(tmp_path / "bank.key"),
        "--out",
        str(tmp_path / "got"),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(tmp_path / "got" / "data.csv")) == 4
    listed = json.loads(run(*w, "share", "list", "--json").stdout)
    assert listed[0]["uses"] == 1
