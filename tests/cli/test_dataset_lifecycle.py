"""`complai dataset alter` and `complai dataset drop` as a user runs them: the diff printed, narrowing refused
with a count, dry runs that write nothing, a drop that asks for the name (or --yes), refusals that exit 2."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from complai.app.workspace import Workspace
from complai.vault.schema import load_schema
from tests.cli.test_authn import cli, ledger_size, one_line, token_for
from tests.vault.conftest import SCHEMA, consents_frame, people_frame


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    with Workspace.init(path) as w:
        w.catalog.register(load_schema(SCHEMA, w.taxonomy), actor="owner")
        w.vault.ingest("customers", people_frame(), actor="owner", consents_data=consents_frame())
        w.identity.add("owner", "ana", "service")
        w.identity.grant_role("owner", "ana", "analyst")
    return path


def _write(tmp_path: Path, **fields: dict[str, object]) -> Path:
    schema = json.loads(json.dumps(SCHEMA))
    schema["fields"] = [{**f, **fields.get(f["name"], {})} for f in schema["fields"]]
    extra = fields.get("_extra")
    if extra:
        schema["fields"].append(extra)
    path = tmp_path / "new.yaml"
    path.write_text(yaml.safe_dump(schema))
    return path


TIER = {"name": "tier", "type": "integer", "category": "user.behavior", "min": 0, "max": 5}


def test_a_dry_run_prints_the_diff_and_writes_nothing(ws: Path, tmp_path: Path) -> None:
    new = _write(tmp_path, income={"max": 1_000_000}, _extra=TIER)
    size = ledger_size(ws)
    r = cli("--workspace", str(ws), "dataset", "alter", "customers", "--schema", str(new), "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["dry_run"] is True and out["ledger_seq"] is None and out["records_checked"] == 4
    assert out["changes"] == {"added": ["tier (integer)"], "narrowed": ["income: max 10000000.0 -> 1000000.0"]}
    assert ledger_size(ws) == size
    human = cli("--workspace", str(ws), "dataset", "alter", "customers", "--schema", str(new), "--dry-run")
    assert human.returncode == 0 and "tier (integer)" in human.stdout and "nothing changed" in human.stdout
    assert ledger_size(ws) == size


def test_alter_changes_the_version_and_a_narrowing_is_refused_with_a_count(ws: Path, tmp_path: Path) -> None:
    refused = cli(
        "--workspace",
        str(ws),
        "dataset",
        "alter",
        "customers",
        "--schema",
        str(_write(tmp_path, income={"max": 100_000})),
    )
    assert refused.returncode == 2 and one_line(refused)
    assert "2 stored record(s) do not fit the new schema (income: 2)" in refused.stderr
    r = cli(
        "--workspace",
        str(ws),
        "dataset",
        "alter",
        "customers",
        "--schema",
        str(_write(tmp_path, _extra=TIER)),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["from_version"], out["version"]) == (1, 2) and isinstance(out["ledger_seq"], int)
    shown = cli("--workspace", str(ws), "dataset", "show", "customers", "--json")
    assert json.loads(shown.stdout)["schema_version"] == 2
    assert "schema version 2" in cli("--workspace", str(ws), "dataset", "show", "customers").stdout
    with Workspace.open(ws) as w:
        frame = w.session("owner", "customer_support").read("customers")
    assert "tier" in frame.columns and frame["tier"].isna().all()


def test_drop_asks_for_the_name_and_refuses_without_a_terminal(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    size = ledger_size(ws)
    r = cli("--workspace", str(ws), "dataset", "drop", "customers")
    assert r.returncode == 2 and one_line(r) and "--yes" in r.stderr
    monkeypatch.setattr("complai.cli.vault._interactive", lambda: True)
    monkeypatch.setattr("sys.stdin", io.StringIO("custmers\n"))
    r = cli("--workspace", str(ws), "dataset", "drop", "customers")
    assert r.returncode == 2 and "does not match" in r.stderr
    assert ledger_size(ws) == size
    monkeypatch.setattr("sys.stdin", io.StringIO("customers\n"))
    r = cli("--workspace", str(ws), "dataset", "drop", "customers")
    assert r.returncode == 0, r.stderr
    assert "4 records deleted; 4 subjects crypto-shredded" in r.stdout
    assert ledger_size(ws) == size + 1


def test_drop_with_yes_prints_counts_and_a_refused_principal_changes_nothing(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPLAI_TOKEN", token_for(ws, "ana"))
    size = ledger_size(ws)
    r = cli("--workspace", str(ws), "dataset", "drop", "customers", "--yes")
    assert r.returncode == 2 and one_line(r)
    assert ledger_size(ws) == size + 1  # the refusal, recorded
    monkeypatch.delenv("COMPLAI_TOKEN")
    r = cli("--workspace", str(ws), "dataset", "drop", "customers", "--yes", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["records_deleted"] == 4 and out["subjects_shredded"] == 4 and out["subjects_kept"] == 0
    assert out["keys_destroyed"] == 4
    listed = json.loads(cli("--workspace", str(ws), "dataset", "list", "--json").stdout)
    assert listed == []
