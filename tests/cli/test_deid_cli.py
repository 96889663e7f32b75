"""`complai deid table` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from pycanon import anonymity

from complai.datasets import load_adult
from tests.cli.test_cli import run

QIS = "age,education,sex,race"


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
