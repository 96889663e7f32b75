"""`complai deid table` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from pycanon import anonymity

from complai import quickstart
from complai.datasets import load_adult
from tests.cli.test_cli import run

QIS = "age,education,sex,race"
KEPT_QUICKSTART_STEPS = (
    quickstart.create_workspace,
    quickstart.load_data,
    quickstart.register_dataset,
    quickstart.ingest,
    quickstart.dp_statistics,
)


def test_deid_table(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run("init", "--workspace", str(ws)).returncode == 0
    src = tmp_path / "adult.csv"
    load_adult("test").drop(columns=["split"]).to_csv(src, index=False)
    r = run(
        "--workspace",
        str(ws),
        "deid",
        "table",
        str(src),
        "--quasi",
        QIS,
        "--sensitive",
        "income",
        "--k",
        "5",
        "--l",
        "2",
        "--out",
        str(tmp_path / "out.csv"),
        "--report",
        str(tmp_path / "r.json"),
    )
    assert r.returncode == 0, r.stderr
    out = pd.read_csv(tmp_path / "out.csv", dtype=str)
    assert len(out) == 16281
    assert anonymity.k_anonymity(out, QIS.split(",")) >= 5
    assert anonymity.l_diversity(out, QIS.split(","), ["income"]) >= 2
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["achieved"]["k"] >= 5
    shown = json.loads(run("--workspace", str(ws), "ledger", "show", "--type", "deid.table", "--json").stdout)
    assert shown[0]["event"]["achieved_k"] == report["achieved"]["k"]
    for bad, message in (
        (["--quasi", "shoe_size", "--k", "5"], "unknown column"),
        (["--quasi", "age", "--k", "99999"], "larger than the table"),
        (["--quasi", "age,sex", "--numeric", "sex", "--k", "5"], "not numeric"),
    ):
        r = run("--workspace", str(ws), "deid", "table", str(src), *bad, "--out", str(tmp_path / "x.csv"))
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert not (tmp_path / "x.csv").exists()


def test_deid_text_file_scan(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run("init", "--workspace", str(ws)).returncode == 0
    w = ["--workspace", str(ws)]
    r = run(*w, "deid", "text", "Card 5555 5555 5555 4444, IBAN DE89 3704 0044 0532 0130 00", "--regex-only")
    assert r.returncode == 0 and r.stdout.strip() == "Card <CREDIT_CARD>, IBAN <IBAN_CODE>"
    r = run(*w, "deid", "text", "Card 5555 5555 5555 4444", "--operator", "tokenize", "--regex-only")
    token_text = r.stdout.strip()
    assert "5555" not in token_text
    r = run(*w, "deid", "detokenize", token_text)
    assert r.returncode == 0 and r.stdout.strip() == "Card 5555 5555 5555 4444"
    src = tmp_path / "msgs.txt"
    src.write_text("mail me at jane@example.org\nno personal data here\n")
    r = run(*w, "deid", "file", str(src), "--out", str(tmp_path / "clean.txt"), "--operator", "hash", "--regex-only")
    assert r.returncode == 0, r.stderr
    lines = (tmp_path / "clean.txt").read_text().splitlines()
    assert lines[0].startswith("mail me at <EMAIL_ADDRESS_") and lines[1] == "no personal data here"
    csv = tmp_path / "t.csv"
    pd.DataFrame({"email": ["a@example.org", "b@example.org"], "n": [1, 2]}).to_csv(csv, index=False)
    r = run(*w, "deid", "scan", str(csv), "--json", "--regex-only")
    assert json.loads(r.stdout)[0]["category"] == "user.contact.email"
    r = run(*w, "deid", "text", "x", "--operator", "shred")
    assert r.returncode == 2 and "unknown operator" in r.stderr
    r = run(*w, "deid", "scan", "no_such_dataset")
    assert r.returncode == 2 and "--purpose" in r.stderr


def test_dp_budget_cli(tmp_path: Path) -> None:
    import yaml

    from tests.cli.test_vault_cli import SCHEMA  # the customers schema

    ws = tmp_path / "ws"
    w = ["--workspace", str(ws)]
    assert run("init", "--workspace", str(ws)).returncode == 0
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SCHEMA))
    assert run(*w, "dataset", "create", "customers", "--schema", str(tmp_path / "s.yaml")).returncode == 0
    r = run(*w, "dp", "budget", "customers")
    assert r.returncode == 0 and "no privacy budget" in r.stdout
    r = run(*w, "dp", "budget", "customers", "--set", "3", "1e-6", "--json")
    assert r.returncode == 0, r.stderr
    state = json.loads(r.stdout)[0]
    assert state["epsilon"] == 3 and state["epsilon_spent_at_delta"] == 0 and state["epsilon_remaining_at_delta"] == 3
    r = run(*w, "dp", "budget", "customers", "--set", "0", "1e-6")
    assert r.returncode == 2 and "epsilon must be a positive number" in r.stderr


def test_dp_query_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the quickstart's workspace as its DP statistics step leaves it (the Adult data, its consents, a budget
    # of 3 with 1 spent); the later steps (training, federation, audit) are the whole run's, in test_cli
    steps = [step for step in quickstart.STEPS if step[1] in KEPT_QUICKSTART_STEPS]
    assert len(steps) == len(KEPT_QUICKSTART_STEPS)
    monkeypatch.setattr(quickstart, "STEPS", steps)
    ws = tmp_path / "ws"
    quickstart.run_quickstart(ws, quiet=True)
    w = ["--workspace", str(ws)]
    before = json.loads(run(*w, "dp", "budget", "adult", "--json").stdout)[0]["epsilon_spent_at_delta"]
    r = run(
        *w,
        "dp",
        "query",
        "adult",
        "SELECT sex, COUNT(*), AVG(age) FROM adult GROUP BY sex",
        "--epsilon",
        "0.3",
        "--purpose",
        "analytics",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc["values"]["count(*)"]) == {"Female", "Male"} and doc["epsilon"] == 0.3
    assert abs(doc["budget_remaining"]["epsilon_spent_at_delta"] - before - 0.3) < 1e-9
    r = run(*w, "dp", "query", "adult", "SELECT MAX(age) FROM adult", "--epsilon", "0.3", "--purpose", "analytics")
    assert r.returncode == 2 and "unsupported expression" in r.stderr
    r = run(*w, "dp", "query", "adult", "SELECT COUNT(*) FROM adult", "--epsilon", "50", "--purpose", "analytics")
    assert r.returncode == 2 and "exhausted" in r.stderr
