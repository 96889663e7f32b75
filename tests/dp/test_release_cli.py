"""`complai dp query` and `dataset create` refuse what cannot be answered or calibrated: one line, exit
code 2, nothing spent; the JSON answer holds noisy values and public parameters only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.test_cli import run
from tests.vault.conftest import SCHEMA, people_frame


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("dp-cli")
    path = base / "ws"
    assert run("init", "--workspace", str(path)).returncode == 0
    schema = {**SCHEMA, "purposes": {**SCHEMA["purposes"], "analytics": "gdpr.legitimate_interests"}}
    (base / "schema.yaml").write_text(yaml.safe_dump(schema))
    people_frame().to_csv(base / "people.csv", index=False)
    w = ["--workspace", str(path)]
    r = run(*w, "dataset", "create", "customers", "--schema", str(base / "schema.yaml"))
    assert r.returncode == 0, r.stderr
    r = run(*w, "dataset", "ingest", "customers", str(base / "people.csv"), "--subject-column", "customer_id")
    assert r.returncode == 0, r.stderr
    assert run(*w, "dp", "budget", "customers", "--set", "5", "1e-6").returncode == 0
    return path


def _spent(w: list[str]) -> float:
    return float(json.loads(run(*w, "dp", "budget", "customers", "--json").stdout)[0]["epsilon_spent_at_delta"])


def test_answer_carries_no_row_count(workspace: Path) -> None:
    w = ["--workspace", str(workspace)]
    sql = "SELECT COUNT(*) FROM customers WHERE income > 700000"
    r = run(*w, "dp", "query", "customers", sql, "--epsilon", "0.01", "--purpose", "analytics", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc) == {"values", "accuracy", "epsilon", "delta", "rho", "mechanism", "budget_remaining"}
    r = run(*w, "ledger", "show", "--json")
    assert r.returncode == 0, r.stderr
    assert "rows_used" not in r.stdout


@pytest.mark.parametrize(
    ("sql", "options", "message"),
    [
        ("SELECT QUANTILE(income, 1e-400) FROM customers", ["--epsilon", "0.1"], "between 0 and 1"),
        ("SELECT COUNT(*) FROM customers WHERE income > 'abc'", ["--epsilon", "0.1"], "numeric"),
        ("SELECT COUNT(*) FROM customers", ["--epsilon", "1e-320"], "epsilon must be a positive number"),
        (
            "SELECT COUNT(*) FROM customers WHERE " + " OR ".join(f"income = {i}" for i in range(3000)),
            ["--epsilon", "0.1"],
            "at most 1000 conditions",
        ),
    ],
)
def test_dp_query_refusals(workspace: Path, sql: str, options: list[str], message: str) -> None:
    w = ["--workspace", str(workspace)]
    before = _spent(w)
    r = run(*w, "dp", "query", "customers", sql, *options, "--purpose", "analytics")
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and r.stderr.strip().count("\n") == 0
    assert _spent(w) == before


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ({"name": "score", "type": "float", "category": "user.behavior", "min": float("nan"), "max": 1}, "min"),
        ({"name": "score", "type": "float", "category": "user.behavior", "min": 0, "max": float("inf")}, "max"),
        ({"name": "tier", "type": "category", "category": "user.behavior", "values": []}, "at least one"),
    ],
)
def test_dataset_create_refuses_unusable_schema(tmp_path: Path, field: dict[str, Any], message: str) -> None:
    ws = tmp_path / "ws"
    assert run("init", "--workspace", str(ws)).returncode == 0
    schema = {**SCHEMA, "fields": [*SCHEMA["fields"], field]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(schema))  # .nan / .inf / []
    r = run("--workspace", str(ws), "dataset", "create", "customers", "--schema", str(tmp_path / "s.yaml"))
    assert r.returncode == 2 and message in r.stderr and r.stderr.strip().count("\n") == 0
    r = run("--workspace", str(ws), "dataset", "list", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == []
