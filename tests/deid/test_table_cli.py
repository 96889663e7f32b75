"""`complai deid table` on a customer table: direct identifiers leave, dates become ranges."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from complai.deid.tabular import date_range
from tests.cli.test_cli import run
from tests.deid.test_tabular import customers
from tests.vault.conftest import SCHEMA


def test_deid_table_drops_direct_identifiers_and_ranges_dates(tmp_path: Path) -> None:
    ws = ["--workspace", str(tmp_path / "ws")]
    assert run("init", *ws).returncode == 0
    src = tmp_path / "customers.csv"
    df = customers()
    df.to_csv(src, index=False)
    args = [*ws, "deid", "table", str(src), "--quasi", "birthdate,country", "--k", "5"]
    r = run(*args, "--out", str(tmp_path / "out.csv"), "--report", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    assert "direct identifiers dropped: customer_id, full_name, email" in r.stdout
    out = pd.read_csv(tmp_path / "out.csv", dtype=str)
    assert list(out.columns) == ["handle", "birthdate", "country", "balance"]
    for orig, label in zip(df["birthdate"], out["birthdate"], strict=True):
        lo, hi = date_range(label)
        assert lo.isoformat() <= orig <= hi.isoformat() and lo < hi
    assert json.loads((tmp_path / "r.json").read_text())["direct_identifiers"]["dropped"] == [
        "customer_id",
        "full_name",
        "email",
    ]
    # kept by name: in the output, in the report, and warned about
    r = run(*args, "--keep", "email", "--out", str(tmp_path / "kept.csv"), "--json")
    assert r.returncode == 0, r.stderr
    assert "warning: direct identifiers kept by request: email" in r.stderr
    assert json.loads(r.stdout)["direct_identifiers"]["kept"] == ["email"]
    assert pd.read_csv(tmp_path / "kept.csv")["email"].tolist() == df["email"].tolist()
    # a schema file declares handle a direct identifier; pseudonyms instead of dropping
    handle = {"name": "handle", "type": "string", "category": "user.unique_id", "identifier": "direct"}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**SCHEMA, "fields": [*SCHEMA["fields"], handle]}))
    r = run(
        *args,
        *("--schema", str(tmp_path / "s.yaml"), "--direct-identifiers", "pseudonymize", "--numeric", "birthdate"),
        *("--out", str(tmp_path / "p.csv")),
    )
    assert r.returncode == 0, r.stderr
    p = pd.read_csv(tmp_path / "p.csv")
    assert p["email"].str.fullmatch(r"<ID_[0-9a-f]{12}>").all() and p["handle"].str.startswith("<ID_").all()
    r = run(*args, "--keep", "shoe_size", "--out", str(tmp_path / "x.csv"))
    assert r.returncode == 2 and "unknown column" in r.stderr and not (tmp_path / "x.csv").exists()
