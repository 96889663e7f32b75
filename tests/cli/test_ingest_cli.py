"""`complai dataset ingest` as a user runs it: the same file twice refused with the count (exit 2, one
line, nothing stored), modes, CSV options, JSON Lines and Parquet, every bad row in one error."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.cli.test_cli import run
from tests.vault.conftest import SCHEMA, people_frame


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("ingest-cli")
    path = base / "ws"
    assert run("init", "--workspace", str(path)).returncode == 0
    schema = {**SCHEMA, "name": "people", "record_key": "customer_id"}
    (base / "schema.yaml").write_text(yaml.safe_dump(schema))
    r = run("--workspace", str(path), "dataset", "create", "people", "--schema", str(base / "schema.yaml"))
    assert r.returncode == 0, r.stderr
    return path, base


def _ingest(ws: Path, *args: str) -> tuple[int, dict[str, object] | str]:
    r = run("--workspace", str(ws), "dataset", "ingest", "people", *args, "--json")
    return r.returncode, (json.loads(r.stdout) if r.returncode == 0 else r.stderr)


def _records(ws: Path) -> int:
    listed = json.loads(run("--workspace", str(ws), "dataset", "list", "--json").stdout)
    return int(next(d for d in listed if d["dataset"] == "people")["records"])


def test_same_file_twice_then_modes(ws: tuple[Path, Path]) -> None:
    path, base = ws
    csv = base / "people.csv"
    people_frame().to_csv(csv, index=False)
    code, out = _ingest(path, str(csv))
    assert code == 0 and isinstance(out, dict) and out["rows"] == 4 and out["mode"] == "insert"
    code, err = _ingest(path, str(csv))
    assert code == 2 and isinstance(err, str)
    assert "4 of 4 rows are records already stored in people" in err and len(err.strip().splitlines()) == 1
    assert _records(path) == 4
    code, out = _ingest(path, str(csv), "--mode", "append")
    assert code == 0 and isinstance(out, dict) and (out["rows"], out["skipped_existing_rows"]) == (0, 4)
    changed = people_frame()
    changed.loc[1, "income"] = 1
    changed.to_csv(csv, index=False)
    code, out = _ingest(path, str(csv), "--mode", "upsert")
    assert code == 0 and isinstance(out, dict) and (out["rows"], out["updated"], out["inserted"]) == (4, 4, 0)
    code, out = _ingest(path, str(csv), "--mode", "replace")
    assert code == 0 and isinstance(out, dict) and (out["updated"], out["deleted"]) == (4, 0)
    assert _records(path) == 4
    code, err = _ingest(path, str(csv), "--mode", "merge")
    assert code == 2 and "--mode must be one of insert, append, upsert, replace" in str(err)


def test_csv_options_jsonl_and_parquet(ws: tuple[Path, Path]) -> None:
    path, base = ws
    semi = base / "semi.csv"
    semi.write_bytes("Kunde;full_name;income\nK-1;Zoë Brandt;10\n".encode("latin-1"))
    code, out = _ingest(
        path, str(semi), "--delimiter", ";", "--encoding", "latin-1", "--map", "Kunde=customer_id", "--mode", "append"
    )
    assert code == 0 and isinstance(out, dict) and out["rows"] == 1
    lines = base / "more.jsonl"
    lines.write_text(json.dumps({"customer_id": "J-1", "income": 5}) + "\n")
    code, out = _ingest(path, str(lines))
    assert code == 0 and isinstance(out, dict) and out["rows"] == 1
    table = base / "more.data"
    pq.write_table(pa.table({"customer_id": ["P-1", "P-2"], "income": [1, 2]}), table)
    code, out = _ingest(path, str(table), "--format", "parquet")
    assert code == 0 and isinstance(out, dict) and out["rows"] == 2


def test_every_bad_row_in_one_error(ws: tuple[Path, Path]) -> None:
    path, base = ws
    bad = base / "bad.csv"
    bad.write_text(
        "customer_id,income,segment\nB-1,1,retail\nB-2,x,retail\nB-3,2,retail\nB-4,3\nB-5,4,gold\nB-6,5,retail\n"
    )
    before = _records(path)
    code, err = _ingest(path, str(bad))
    assert code == 2 and isinstance(err, str)
    for needle in ("line 3: 'x' is not an integer", "line 5: 2 fields", "line 6: 'gold' is not one of"):
        assert needle in err
    assert _records(path) == before
