"""/api/v1/deid/table with generalisation hierarchies: a class of several values is labelled by an
ancestor its hierarchy gives each of them (as the library does for the CLI's --hierarchy files), and a
hierarchy that is malformed, incomplete or for a column it cannot apply to is refused with nothing
recorded."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd
from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from tests.service.conftest import bearer
from tests.service.test_api_data import API, events, ledger_size, problem_line

TABLE_URL = f"{API}/deid/table?purpose=research"
EDUCATION = {
    "Bachelors": ["Undergraduate", "Higher education", "*"],
    "Masters": ["Graduate", "Higher education", "*"],
    "Doctorate": ["Graduate", "Higher education", "*"],
    "HS-grad": ["High school", "School", "*"],
    "11th": ["Secondary", "School", "*"],
    "9th": ["Secondary", "School", "*"],
}
COUNTS = {"Bachelors": 3, "Masters": 2, "Doctorate": 2, "HS-grad": 3, "11th": 2, "9th": 2}
K = 4


def table() -> list[dict[str, Any]]:
    values = [v for v, n in COUNTS.items() for _ in range(n)]
    return [{"education": v, "outcome": "yes" if i % 2 else "no"} for i, v in enumerate(values)]


def test_a_hierarchy_generalises_values_to_their_ancestors(client: TestClient, ws: Workspace, owner_token: str) -> None:
    rows = table()
    before = ledger_size(ws)
    body = {"rows": rows, "quasi": ["education"], "k": K, "hierarchies": {"education": EDUCATION}}
    r = client.post(TABLE_URL, headers=bearer(owner_token), json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    labels = [row["education"] for row in out["rows"]]
    assert len(labels) == len(rows) and [row["outcome"] for row in out["rows"]] == [row["outcome"] for row in rows]
    # each row's value is itself or one of its ancestors; no row is shown as a set of values
    for row, label in zip(rows, labels, strict=True):
        assert label == row["education"] or label in EDUCATION[row["education"]], (row, label)
    assert not any(label.startswith("{") for label in labels)
    # k-anonymous, and generalised: no single value has k rows, so some rows show an ancestor
    assert min(Counter(labels).values()) >= K and out["report"]["achieved"]["k"] >= K
    assert any(label not in EDUCATION for label in labels)
    # one recorded run, through the session as in process
    assert ledger_size(ws) == before + 1 and out["ledger_seq"] == before
    (event,) = events(ws, "deid.table")
    assert (event["k"], event["rows"], event["quasi_identifiers"]) == (K, len(rows), ["education"])
    local, _ = ws.session("owner", "research").deidentify_table(
        pd.DataFrame(rows), quasi=["education"], k=K, hierarchies={"education": EDUCATION}
    )
    assert local["education"].tolist() == labels


def test_a_numeric_coded_column_takes_a_hierarchy_when_not_numeric(
    client: TestClient, ws: Workspace, owner_token: str
) -> None:
    """Codes stored as numbers are categorical once `numeric` leaves them out: values match the
    hierarchy's keys as text."""
    codes = {10115: ["101**", "1****"], 10117: ["101**", "1****"], 12043: ["120**", "1****"], 12045: ["120**", "1****"]}
    rows = [{"zip": z, "outcome": i % 2} for i, z in enumerate(sorted([*codes, *codes]))]
    hierarchy = {"zip": {str(z): path for z, path in codes.items()}}
    h = bearer(owner_token)
    before = ledger_size(ws)
    refused = client.post(TABLE_URL, headers=h, json={"rows": rows, "quasi": ["zip"], "k": 4, "hierarchies": hierarchy})
    assert refused.status_code == 400, refused.text
    assert "numeric" in problem_line(refused) and ledger_size(ws) == before
    r = client.post(
        TABLE_URL, headers=h, json={"rows": rows, "quasi": ["zip"], "k": 4, "numeric": [], "hierarchies": hierarchy}
    )
    assert r.status_code == 200, r.text
    labels = [row["zip"] for row in r.json()["rows"]]
    for row, label in zip(rows, labels, strict=True):
        assert label in codes[row["zip"]], (row, label)
    assert ledger_size(ws) == before + 1


def test_bad_hierarchies_are_refused_with_nothing_recorded(client: TestClient, ws: Workspace, owner_token: str) -> None:
    h = bearer(owner_token)
    rows = [{**row, "age": 20 + i} for i, row in enumerate(table())]
    incomplete = {v: path for v, path in EDUCATION.items() if v != "9th"}
    before = ledger_size(ws)
    for hierarchies, extra in (
        ({"education": incomplete}, {}),  # a value of the column is not in it
        ({"outcome": {"yes": ["*"], "no": ["*"]}}, {}),  # not a quasi-identifier
        ({"age": {str(a): ["*"] for a in range(20, 40)}}, {"quasi": ["education", "age"], "numeric": ["age"]}),
        ({"age": {str(a): ["*"] for a in range(20, 40)}}, {"quasi": ["education", "age"]}),  # numeric: ranges
        ({"education": {**EDUCATION, "Bachelors": "Higher education"}}, {}),  # ancestors not a list
        ({"education": {**EDUCATION, "Bachelors": ["Undergraduate", 1, "*"]}}, {}),  # not text
        ({"education": {}}, {}),
        ({"education": [["Bachelors", "*"]]}, {}),
        ([{"education": EDUCATION}], {}),
        ({"education": {**EDUCATION, "Masters": None}}, {}),
    ):
        body = {"rows": rows, "quasi": ["education"], "k": K, "hierarchies": hierarchies, **extra}
        r = client.post(TABLE_URL, headers=h, json=body)
        assert r.status_code == 400, (hierarchies, r.text)
        problem_line(r)
    assert ledger_size(ws) == before and not events(ws, "deid.table")
