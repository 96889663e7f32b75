"""Data files: CSV with another delimiter or encoding, header mapping, JSON Lines and Parquet, read in
chunks of the configured size; every bad row of a file reported in one error, nothing stored."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from complai.app.workspace import Workspace
from complai.errors import InvalidInput
from complai.store.tables import ledger_entries, records
from complai.vault.schema import load_schema
from complai.vault.sources import Source, SourceOptions, parse_mapping
from tests.vault.conftest import SCHEMA

FIELDS = [f["name"] for f in SCHEMA["fields"]]
HEADER = "customer_id,full_name,email,income,segment\n"


@pytest.fixture
def empty(ws: Workspace) -> Workspace:
    ws.catalog.register(load_schema(SCHEMA, ws.taxonomy), actor="owner")
    return ws


def _stored(ws: Workspace) -> dict[str, tuple[str, int]]:
    frame = ws.session("owner", "customer_support").read("customers")
    return {r.customer_id: (r.full_name, int(r.income)) for r in frame.itertuples()}


def _counts(ws: Workspace) -> tuple[int, int]:
    with ws.store.read() as conn:
        return (
            int(conn.execute(select(func.count()).select_from(records)).scalar_one()),
            int(conn.execute(select(func.count()).select_from(ledger_entries)).scalar_one()),
        )


def test_reader_yields_chunks_of_the_configured_size(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text(HEADER + "".join(f"C-{i},N {i},,{i},retail\n" for i in range(1003)))
    with Source(path, SourceOptions(chunk_rows=100), FIELDS) as source:
        sizes = [len(chunk.frame) for chunk in source.chunks()]
        assert sizes == [100] * 10 + [3]
        lines = [chunk.lines for chunk in source.chunks()]
        assert lines[0][0] == 2 and lines[-1] == [1002, 1003, 1004]  # file lines, header on line 1
        assert source.digest is not None and source.digest.startswith("sha256:")


def test_jsonl_and_parquet_readers_yield_chunks_of_the_configured_size(tmp_path: Path) -> None:
    rows = [{"customer_id": f"C-{i}", "income": i} for i in range(250)]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet, row_group_size=70)
    for path in (jsonl, parquet):
        with Source(path, SourceOptions(chunk_rows=60), FIELDS) as source:
            assert [len(c.frame) for c in source.chunks()] == [60, 60, 60, 60, 10]


def test_semicolon_csv_with_delimiter(empty: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("customer_id;full_name;email;income;segment\nC-1;Ann Lee;;12;retail\nC-2;Bo Ek;;13;\n")
    with pytest.raises(InvalidInput, match=r"';'-delimited"):
        empty.vault.ingest("customers", path, actor="owner")
    result = empty.vault.ingest("customers", path, actor="owner", options=SourceOptions(delimiter=";"))
    assert result.rows == 2
    assert _stored(empty) == {"C-1": ("Ann Lee", 12), "C-2": ("Bo Ek", 13)}


def test_latin1_with_encoding_and_a_bom_in_utf8(empty: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes((HEADER + "C-1,Zoë Müller,,5,retail\n").encode("latin-1"))
    with pytest.raises(InvalidInput, match="is not utf-8 text"):
        empty.vault.ingest("customers", path, actor="owner")
    empty.vault.ingest("customers", path, actor="owner", options=SourceOptions(encoding="latin-1"))
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + (HEADER + "C-2,Zoë Ng,,6,retail\n").encode("utf-8"))
    empty.vault.ingest("customers", bom, actor="owner")
    assert _stored(empty) == {"C-1": ("Zoë Müller", 5), "C-2": ("Zoë Ng", 6)}


def test_header_mapping(empty: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("Customer No,Name,income\nC-1,Ann Lee,7\n")
    mapping = parse_mapping(["Customer No=customer_id", "Name=full_name"])
    empty.vault.ingest("customers", path, actor="owner", options=SourceOptions(mapping=mapping))
    assert _stored(empty) == {"C-1": ("Ann Lee", 7)}
    with pytest.raises(InvalidInput, match=r"has no column\(s\) \['Nope'\] to map"):
        empty.vault.ingest("customers", path, actor="owner", options=SourceOptions(mapping={"Nope": "email"}))
    with pytest.raises(InvalidInput, match="several columns to field"):
        parse_mapping(["a=x", "b=x"])
    with pytest.raises(InvalidInput, match="source=field"):
        parse_mapping(["a"])


def test_jsonl(empty: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "people.jsonl"
    path.write_text(
        json.dumps({"customer_id": "C-1", "full_name": "Ann Lee", "income": 3})
        + "\n\n"
        + json.dumps({"customer_id": "C-2", "full_name": "Bo Ek", "income": "4", "segment": "premium"})
        + "\n"
    )
    assert empty.vault.ingest("customers", path, actor="owner").rows == 2
    assert _stored(empty) == {"C-1": ("Ann Lee", 3), "C-2": ("Bo Ek", 4)}


def test_parquet(empty: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "people.parquet"
    table = pa.table(
        {
            "cust": ["C-1", "C-2", "C-3"],
            "full_name": ["Ann Lee", "Bo Ek", None],
            "income": pa.array([1, 2, None], type=pa.int64()),
        }
    )
    pq.write_table(table, path)
    result = empty.vault.ingest(
        "customers", path, actor="owner", options=SourceOptions(mapping={"cust": "customer_id"})
    )
    assert result.rows == 3
    frame = empty.session("owner", "customer_support").read("customers").set_index("customer_id")
    assert frame.loc["C-2", "full_name"] == "Bo Ek" and int(frame.loc["C-2", "income"]) == 2
    assert frame["income"].isna().sum() == 1


def test_not_a_parquet_file(empty: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "fake.parquet"
    path.write_text(HEADER)
    with pytest.raises(InvalidInput, match="is not a Parquet file"):
        empty.vault.ingest("customers", path, actor="owner")


def test_every_bad_row_of_a_csv_is_reported_and_nothing_stored(empty: Workspace, tmp_path: Path) -> None:
    good = "".join(f"C-{i},N,,{i},retail\n" for i in range(40))
    # bad rows on lines 5 (a ragged row), 12 (not an integer) and 40 (not a category): in different chunks
    lines = (HEADER + good).splitlines(keepends=True)
    lines[4] = "C-x,N,,1\n"
    lines[11] = "C-y,N,,lots,retail\n"
    lines[39] = "C-z,N,,3,gold\n"
    path = tmp_path / "bad.csv"
    path.write_text("".join(lines))
    before = _counts(empty)
    with pytest.raises(InvalidInput) as info:
        empty.vault.ingest("customers", path, actor="owner", options=SourceOptions(chunk_rows=8))
    text = info.value.message
    assert "1 unreadable row(s) and 2 invalid values" in text
    for needle in ("line 5: 4 fields", "line 12: 'lots' is not an integer", "line 40: 'gold' is not one of"):
        assert needle in text
    assert text.index("line 5") < text.index("line 12") < text.index("line 40")
    assert _counts(empty) == before


def test_every_bad_line_of_jsonl_is_reported(empty: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"customer_id": "C-1", "income": 1}\n'
        "{not json\n"
        '{"customer_id": "C-2", "income": 2, "shoe": 9}\n'
        '["C-3"]\n'
        '{"customer_id": "C-4", "income": "x"}\n'
    )
    with pytest.raises(InvalidInput) as info:
        empty.vault.ingest("customers", path, actor="owner")
    text = info.value.message
    assert "3 unreadable row(s) and 1 invalid values" in text
    for needle in (
        "line 2: is not valid JSON",
        "line 3: has unknown field(s) ['shoe']",
        "line 4: is not a JSON object",
    ):
        assert needle in text
    assert "line 5: 'x' is not an integer" in text


def test_bad_rows_are_capped_and_counted(empty: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    path.write_text(HEADER + "".join(f"C-{i},N,,x{i},retail\n" for i in range(60)))
    with pytest.raises(InvalidInput, match=r"^60 invalid values: .*; and 40 more$"):
        empty.vault.ingest("customers", path, actor="owner", options=SourceOptions(chunk_rows=7))


def test_bad_options(empty: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text(HEADER)
    with pytest.raises(InvalidInput, match="unknown text encoding"):
        empty.vault.ingest("customers", path, actor="owner", options=SourceOptions(encoding="klingon"))
    with pytest.raises(InvalidInput, match="delimiter must be one character"):
        empty.vault.ingest("customers", path, actor="owner", options=SourceOptions(delimiter=";;"))
