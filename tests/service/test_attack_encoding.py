"""A governed read's page written as JSON and CSV (complai.service.encoding and GET .../records), attacked:
values a spreadsheet would run as formulas in every kind of column (text, categorical with missing
values, generalised by k-anonymity, pseudonymised), the edges of each type (-0.0, 64-bit integers, NUL
and line separators in text, timestamps before 1970 and in year 9999, all-null columns, empty pages),
and the markers of a missing value pandas puts in an object column. JSON must parse strictly (no NaN,
no Infinity) and match the published schema; CSV must parse back to exactly the values, with a
formula's apostrophe the only change."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.service.app import create_app
from complai.service.encoding import csv_text, json_rows
from tests.service.conftest import bearer, settings_for

API = "/api/v1"
# how a text may begin that a spreadsheet would run as a formula: =, +, -, @ (or their fullwidth forms),
# also after leading blanks, line breaks and NULs, which spreadsheets skip; or a tab, line break or NUL
STARTS = "=+-@\uff1d\uff0b\uff0d\uff20"
BLANKS = " \t\r\n\x00"
FORMULA = ("=", "+", "-", "@", "\t", "\r", "\n", "\x00", " =", "\n@", "\uff1d", " \uff0b", "\x00-")


def is_formula(value: str) -> bool:
    return value[:1] in ("\t", "\r", "\n", "\x00") or value.lstrip(BLANKS)[:1] in tuple(STARTS)


READ, KANON = "fraud_detection", "analytics"


def strict_json(data: bytes | str) -> Any:
    """JSON as RFC 8259 has it: NaN and Infinity are not JSON."""

    def refuse(word: str) -> Any:
        raise ValueError(f"{word} is not JSON")

    return json.loads(data, parse_constant=refuse)


def csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def neutralised(value: str) -> str:
    return "'" + value if is_formula(value) else value


# --- the encoder alone -----------------------------------------------------------------------------


def test_missing_markers_in_a_mixed_column_are_missing_not_their_names() -> None:
    # an object column of mixed values (a generalised quasi-identifier) can hold pandas' own markers of a
    # missing value, and numpy's NaN of another width: none of them is the text "<NA>", "NaT" or "nan"
    mixed = np.array([30, "30-39", pd.NA, pd.NaT, np.float32("nan"), None], dtype=object)
    frame = pd.DataFrame({"m": mixed, "d": pd.to_timedelta(["1 day", None, None, None, None, None])})
    assert [r["m"] for r in strict_json(json_rows(frame))] == ["30", "30-39", None, None, None, None]
    assert [r["d"] for r in strict_json(json_rows(frame))][1:] == [None] * 5
    assert [row[0] for row in csv_rows(csv_text(frame))[1:]] == ["30", "30-39", "", "", "", ""]


def test_a_column_of_an_arrow_extension_type_is_written_as_text() -> None:
    # pandas' intervals become an Arrow extension type that polars cannot write as CSV
    ranges = pd.IntervalIndex.from_breaks([-10, 0, 10])
    frame = pd.DataFrame({"r": pd.arrays.IntervalArray(ranges[[0, 1]]), "c": pd.Categorical(ranges[[1, 0]])})
    assert strict_json(json_rows(frame)) == [{"r": "(-10, 0]", "c": "(0, 10]"}, {"r": "(0, 10]", "c": "(-10, 0]"}]
    assert csv_rows(csv_text(frame)) == [["r", "c"], ["(-10, 0]", "(0, 10]"], ["(0, 10]", "(-10, 0]"]]


texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(FORMULA).flatmap(lambda c: st.text(max_size=6).map(lambda t: c + t)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(st.one_of(st.none(), texts), min_size=1, max_size=6))
def test_every_text_reads_back_exact_in_json_and_neutralised_in_csv(values: list[str | None]) -> None:
    """As a text column, a categorical one and a mixed one (a number among them): JSON gives back each
    value; CSV each value with an apostrophe before a formula, a missing value empty, an empty text quoted."""
    present = sorted({v for v in values if v is not None})
    frame = pd.DataFrame(
        {
            "s": pd.array([*values, None], dtype="string"),
            "c": pd.Categorical([*values, None], categories=present),
            "m": np.array([*values, 7], dtype=object),
        }
    )
    rows = strict_json(json_rows(frame))
    assert [r["s"] for r in rows] == [r["c"] for r in rows] == [*values, None]
    mixed = [*values, "7"] if present else [*values, 7]  # without a text, Arrow types the column as numbers
    assert [r["m"] for r in rows] == mixed
    text = csv_text(frame)
    got = csv_rows(text)
    assert got[0] == ["s", "c", "m"]
    expected = ["" if v is None else neutralised(v) for v in [*values, None]]
    assert [r[0] for r in got[1:]] == [r[1] for r in got[1:]] == expected
    assert [r[2] for r in got[1:]] == [*expected[:-1], "7"]
    if not any("\n" in v or "\r" in v for v in present):  # one line a row: a missing cell is bare
        lines = text.decode().split("\n")[1:-1]
        assert [line.startswith('"') for line in lines] == [v is not None for v in [*values, None]]


# --- through the service ---------------------------------------------------------------------------

SCHEMA: dict[str, Any] = {
    "name": "edges",
    "subject_column": "cid",
    "jurisdiction": "EU",
    "retention": "P36500D",
    "purposes": {READ: "gdpr.legitimate_interests", KANON: "gdpr.legitimate_interests"},
    "deidentify": {KANON: {"pseudonymize": ["name"], "k": 2}},
    "fields": [
        {"name": "cid", "type": "string", "category": "user.unique_id", "identifier": "direct"},
        {"name": "name", "type": "string", "category": "user.name", "identifier": "direct"},
        {"name": "zip", "type": "category", "category": "user.contact.address.postal_code", "identifier": "quasi"},
        {"name": "age", "type": "integer", "category": "user.demographic.age", "identifier": "quasi"},
        {"name": "x", "type": "float", "category": "user.financial"},
        {"name": "big", "type": "integer", "category": "user.financial"},
        {"name": "ok", "type": "boolean", "category": "user.behavior"},
        {"name": "at", "type": "datetime", "category": "user.behavior"},
        {"name": "note", "type": "text", "category": "user.behavior"},
        {"name": "nothing", "type": "float", "category": "user.behavior"},
    ],
}

ROWS = pd.DataFrame(
    {
        "cid": ["=1+1", "@SUM(A1)", "c3", "-2", "+7", "c6"],
        "name": ['=HYPERLINK("http://x")', "Bob", "Ç\u2028é", None, "@bob", "-"],
        # pairs of quasi-identifiers, so that k = 2 keeps the formulas as they are
        "zip": ["=cmd|' /C calc'!A0", "-12", None, "=cmd|' /C calc'!A0", "-12", None],
        "age": [30, 40, 50, 30, 40, 50],
        "x": [-0.0, 1e-300, None, 1.5, 2.0, 1 / 3],
        "big": [2**63 - 1, -(2**63), None, 0, 1, 2],
        "ok": [True, None, False, True, False, True],
        "at": [
            "1969-12-31T23:59:59.5Z",
            "1900-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            None,
            "0001-01-01T00:00:00Z",
            "2020-01-01T00:00:00+14:00",
        ],
        "note": ["a\x00b", "plain", "-x", None, "@y", "\r=z"],
        "nothing": [None] * 6,
    },
    dtype=object,
)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[Workspace, TestClient, str]]:
    """One workspace (a copy of the suite's new one) with the edge rows, and the service over it, for the
    module."""
    path = tmp_path_factory.mktemp("attack-encoding") / "ws"
    shutil.copytree(sqlite_template, path)
    ws = Workspace.open(path, clock=ManualClock())
    admin = ws.session("owner", "administration")
    admin.create_dataset(admin.parse_schema(SCHEMA))
    admin.ingest("edges", ROWS)
    token = ws.session("owner", "security").create_token("owner", "P1D").token
    try:
        with TestClient(create_app(settings_for(ws), workspace=ws), raise_server_exceptions=False) as client:
            yield ws, client, token
    finally:
        ws.close()


def ledger_size(ws: Workspace) -> int:
    return ws.session("owner", "audit").ledger_head().size


def page(served: tuple[Workspace, TestClient, str], purpose: str, fmt: str, **params: Any) -> Any:
    _, client, token = served
    return client.get(
        f"{API}/datasets/edges/records", params={"purpose": purpose, "format": fmt, **params}, headers=bearer(token)
    )


def test_edge_values_read_as_strict_json_matching_the_schema_and_as_csv(
    served: tuple[Workspace, TestClient, str],
) -> None:
    _, client, _ = served
    r = page(served, READ, "json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = strict_json(r.content)
    spec = client.get(f"{API}/openapi.json").json()
    schema = spec["paths"][f"{API}/datasets/{{name}}/records"]["get"]["responses"]["200"]["content"]
    jsonschema.validate(doc, {**schema["application/json"]["schema"], "components": spec["components"]})
    by_id = {row["cid"]: row for row in doc["rows"]}
    assert doc["columns"] == [f["name"] for f in SCHEMA["fields"]] and len(by_id) == 6
    assert by_id["=1+1"]["x"] == 0.0 and str(by_id["=1+1"]["x"]) == "-0.0"  # the sign is kept
    assert by_id["=1+1"]["big"] == 2**63 - 1 and by_id["@SUM(A1)"]["big"] == -(2**63)
    assert by_id["c3"]["big"] is None and by_id["c6"]["x"] == 1 / 3
    assert by_id["=1+1"]["note"] == "a\x00b" and by_id["@SUM(A1)"]["ok"] is None
    assert by_id["=1+1"]["name"] == '=HYPERLINK("http://x")'  # JSON stays exact
    assert [by_id[c]["at"] for c in ("=1+1", "@SUM(A1)", "c3", "-2", "+7", "c6")] == [
        "1969-12-31T23:59:59.500000Z",
        "1900-01-01T00:00:00.000000Z",
        "9999-12-31T23:59:59.999999Z",
        None,
        "0001-01-01T00:00:00.000000Z",
        "2019-12-31T10:00:00.000000Z",
    ]
    assert {row["nothing"] for row in doc["rows"]} == {None} and by_id["c3"]["zip"] is None

    r = page(served, READ, "csv")
    assert r.status_code == 200 and r.headers["content-type"] == "text/csv; charset=utf-8"
    rows = csv_rows(r.content)
    assert rows[0] == doc["columns"]
    cells = {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    for json_row in doc["rows"]:
        row = cells[neutralised(json_row["cid"])]
        for col, value in json_row.items():
            if value is None:
                assert row[col] == "", (col, row)
            elif isinstance(value, str):
                assert row[col] == neutralised(value), (col, row)
    assert cells["'=1+1"]["x"] == "-0.0" and cells["c6"]["x"] == "0.3333333333333333"


def test_k_anonymised_and_pseudonymised_pages_neutralise_formulas_in_csv(
    served: tuple[Workspace, TestClient, str],
) -> None:
    r = page(served, KANON, "json", columns="name,zip,age")
    assert r.status_code == 200, r.text
    doc = strict_json(r.content)
    assert doc["deidentification"]["k_anonymity"]["achieved_k"] >= 2
    values = [v for row in doc["rows"] for v in row.values() if v is not None]
    assert any(isinstance(v, str) and is_formula(v) for v in values)  # the attack reached the page
    r = page(served, KANON, "csv", columns="name,zip,age")
    rows = csv_rows(r.content)
    assert rows[0] == ["name", "zip", "age"]
    for cell in (c for row in rows[1:] for c in row):
        assert not is_formula(cell), cell
    # the CSV says what the JSON says, but for the apostrophes (the pseudonyms are the same keys)
    assert sorted(map(tuple, rows[1:])) == sorted(
        tuple("" if v is None else neutralised(str(v)) for v in row.values()) for row in doc["rows"]
    )


def test_an_empty_page_is_an_empty_array_and_a_header(served: tuple[Workspace, TestClient, str]) -> None:
    doc = strict_json(page(served, READ, "json", offset=100).content)
    assert doc["rows"] == [] and doc["returned"] == 0 and doc["columns"][0] == "cid"
    assert csv_rows(page(served, READ, "csv", offset=100, columns="zip,nothing").content) == [["zip", "nothing"]]


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet"])
def test_a_column_asked_twice_is_refused_or_read_once_and_a_failed_read_is_not_recorded(
    served: tuple[Workspace, TestClient, str], fmt: str
) -> None:
    ws = served[0]
    before = ledger_size(ws)
    r = page(served, READ, fmt, columns="zip,zip")
    assert r.status_code in (200, 400), r.text
    assert ledger_size(ws) == before + (r.status_code == 200)


def test_accept_honours_quality_values(served: tuple[Workspace, TestClient, str]) -> None:
    _, client, token = served
    for accept in ("application/json, text/csv;q=0.1", "text/csv;q=0, application/json"):
        r = client.get(
            f"{API}/datasets/edges/records",
            params={"purpose": READ},
            headers={**bearer(token), "Accept": accept},
        )
        assert r.headers["content-type"] == "application/json", accept
