"""`complai taxonomy list`: the vocabulary a schema is written in, as a user reads it."""

from __future__ import annotations

import json
from pathlib import Path

from complai.app.workspace import Workspace
from tests.cli.test_cli import run


def _head(ws: Path) -> int:
    with Workspace.open(ws) as w:
        return w.ledger.head().size


def test_taxonomy_list(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run("init", "--workspace", str(ws)).returncode == 0
    before = _head(ws)
    r = run("--workspace", str(ws), "taxonomy", "list", "--json")
    assert r.returncode == 0, r.stderr
    every = json.loads(r.stdout)
    assert set(every) == {"categories", "purposes", "bases", "jurisdictions", "subjects"}
    bases = {t["key"]: t for t in every["bases"]}
    # GDPR Art. 6(1)(a) is consent, and it needs the subject's consent
    assert bases["gdpr.consent"]["article"] == "GDPR Art. 6(1)(a)" and bases["gdpr.consent"]["requires_consent"]
    assert "ccpa.notice_at_collection" in bases
    assert {"EU", "US-CA", "CN"} <= {t["key"] for t in every["jurisdictions"]}
    assert {"analytics", "credit_scoring"} <= {t["key"] for t in every["purposes"]}
    assert {"user.contact.email", "user.demographic.date_of_birth"} <= {t["key"] for t in every["categories"]}

    r = run("--workspace", str(ws), "taxonomy", "list", "purposes", "--json")
    assert r.returncode == 0 and list(json.loads(r.stdout)) == ["purposes"]
    r = run("--workspace", str(ws), "taxonomy", "list", "jurisdictions")
    assert r.returncode == 0 and "US-CA" in r.stdout and "schema: jurisdiction" in r.stdout
    assert _head(ws) == before  # the vocabulary is public: reading it records nothing


def test_unknown_kind_is_one_line_exit_2(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run("init", "--workspace", str(ws)).returncode == 0
    r = run("--workspace", str(ws), "taxonomy", "list", "colours")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "categories, purposes, bases, jurisdictions, subjects" in r.stderr
