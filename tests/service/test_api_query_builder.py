"""/api/v1/dp/query with the query in parts (`query`: dataset, statistics, row predicates, a grouping
column) instead of SQL text: answered and recorded as the same SQL is, refused with nothing written when
malformed, refused (recorded) for a principal who may not query, and described by the OpenAPI schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from tests.service.conftest import bearer
from tests.service.test_api_data import API, READ, denied, events, ledger_size, problem_line, with_people

QUERY = f"{API}/dp/query?purpose={READ}"
PUBLIC = ("dataset", "statistics", "group_by", "epsilon", "delta", "rho", "mechanism", "schema_digest")


def entry(ws: Workspace, seq: int) -> dict[str, Any]:
    (e,) = ws.session("owner", "audit").ledger_entries(start=seq, limit=1)
    assert e.seq == seq
    return dict(json.loads(e.data))


def built(**query: Any) -> dict[str, Any]:
    return {"dataset": "people", "statistics": [{"statistic": "count"}], **query}


@pytest.mark.parametrize(
    ("parts", "sql", "delta"),
    [
        (
            built(
                statistics=[{"statistic": "count"}, {"statistic": "mean", "column": "income"}],
                where=["income >= 1000", "segment IN ('retail', 'premium')"],
                group_by="segment",
            ),
            "SELECT segment, COUNT(*), AVG(income) FROM people "
            "WHERE income >= 1000 AND segment IN ('retail', 'premium') GROUP BY segment",
            None,
        ),
        (
            built(
                statistics=[
                    {"statistic": "sum", "column": "income"},
                    {"statistic": "variance", "column": "income"},
                    {"statistic": "median", "column": "income"},
                    {"statistic": "quantile", "column": "income", "q": 0.25},
                    {"statistic": "count", "column": "income"},
                ]
            ),
            "SELECT SUM(income), VARIANCE(income), MEDIAN(income), QUANTILE(income, 0.25), COUNT(income) FROM people",
            1e-7,
        ),
    ],
)
def test_a_query_in_parts_is_answered_and_recorded_as_its_sql(
    client: TestClient, ws: Workspace, owner_token: str, parts: dict[str, Any], sql: str, delta: float | None
) -> None:
    owner = with_people(ws, 40)
    owner.set_budget("people", 20.0, 1e-6)
    h = bearer(owner_token)
    answers, recorded = [], []
    for form in ({"query": parts}, {"sql": sql}):
        before = ledger_size(ws)
        r = client.post(QUERY, headers=h, json={**form, "epsilon": 0.5, "delta": delta})
        assert r.status_code == 200, (form, r.text)
        a = r.json()
        assert ledger_size(ws) == before + 1 and a["ledger_seq"] == before  # one event: this answer's
        event = entry(ws, a["ledger_seq"])
        assert event["type"] == "dp.query" and event["actor"] == "owner" and event["purpose"] == READ
        assert "values" not in event and "rows_used" not in event
        assert a["budget_remaining"]["epsilon_remaining_at_delta"] == pytest.approx(event["epsilon_remaining"])
        answers.append(a)
        recorded.append(event)
    by_parts, by_sql = answers
    # the same statistics (and groups) released with the same public parameters, recorded alike
    assert set(by_parts["values"]) == set(by_sql["values"]) and set(by_parts["accuracy"]) == set(by_sql["accuracy"])
    assert {k: by_parts[k] for k in ("epsilon", "delta", "rho", "mechanism")} == {
        k: by_sql[k] for k in ("epsilon", "delta", "rho", "mechanism")
    }
    assert {k: recorded[0].get(k) for k in PUBLIC} == {k: recorded[1].get(k) for k in PUBLIC}
    assert recorded[0]["dataset"] == "people" and len(recorded[0]["statistics"]) == len(parts["statistics"])
    assert recorded[0]["group_by"] == parts.get("group_by")
    # both spent the budget: the second answer leaves less than the first
    assert (
        by_sql["budget_remaining"]["epsilon_remaining_at_delta"]
        < (by_parts["budget_remaining"]["epsilon_remaining_at_delta"])
    )
    assert len(events(ws, "dp.query")) == 2


def test_malformed_queries_in_parts_are_refused_with_nothing_written(
    client: TestClient, ws: Workspace, owner_token: str
) -> None:
    owner = with_people(ws, 20)
    owner.set_budget("people", 1.0, 1e-6)
    h = bearer(owner_token)
    sql = "SELECT COUNT(*) FROM people"
    before = ledger_size(ws)
    for bad in (
        {"sql": sql, "query": built()},  # both forms
        {},  # neither
        {"query": None},
        {"sql": sql, "query": None},
        {"query": built(statistics=[])},
        {"query": built(statistics=[{"statistic": "max", "column": "income"}])},
        {"query": built(statistics=[{"statistic": "mean"}])},
        {"query": built(statistics=[{"statistic": "quantile", "column": "income"}])},
        {"query": built(statistics=[{"statistic": "quantile", "column": "income", "q": 1}])},
        {"query": built(statistics=[{"statistic": "sum", "column": "income", "q": 0.5}])},
        {"query": built(statistics=[{"statistic": "sum", "column": "income) FROM people --"}])},
        {"query": built(statistics=["COUNT(*)"])},
        {"query": built(dataset="People")},
        {"query": built(dataset="people; DROP TABLE people")},
        {"query": built(where="income > 10")},
        {"query": built(where=[""])},
        {"query": built(where=["income > 10) OR (income < 0"])},  # would escape its parentheses
        {"query": built(where=["income > 10 GROUP BY segment"])},
        {"query": built(where=["income > 10 --"])},
        {"query": built(where=["income"])},
        {"query": built(where=["income > 'ten'"])},  # a string for a number (checked against the schema)
        {"query": built(statistics=[{"statistic": "mean", "column": "nope"}])},  # no such column
        {"query": built(group_by=["segment"])},
        {"query": built(order_by="income")},
        {"query": {**built(), "dataset": None}},
        {"query": "SELECT COUNT(*) FROM people"},
    ):
        r = client.post(QUERY, headers=h, json={**bad, "epsilon": 0.1})
        assert r.status_code == 400, (bad, r.text)
        problem_line(r)
    assert client.post(QUERY, headers=h, json={"query": built(dataset="nowhere"), "epsilon": 0.1}).status_code == 404
    r = client.post(QUERY, headers=h, json={"query": built(), "epsilon": 5.0})  # over the budget
    assert r.status_code == 409, r.text
    assert ledger_size(ws) == before and not events(ws, "dp.query")


def test_a_query_in_parts_needs_query_dp(
    client: TestClient, ws: Workspace, owner_token: str, token_for: Callable[..., str]
) -> None:
    owner = with_people(ws, 20)
    owner.set_budget("people", 5.0, 1e-6)
    ana = token_for("ana", "analyst")
    body = {"query": built(statistics=[{"statistic": "mean", "column": "income"}], group_by="segment"), "epsilon": 0.1}
    before = ledger_size(ws)
    r = client.post(QUERY, headers=bearer(ana), json=body)
    assert r.status_code == 403, r.text
    problem_line(r)
    refusal = denied(ws)[-1]
    assert (refusal["actor"], refusal["action"]) == ("ana", "query_dp")
    assert ledger_size(ws) == before + 1 and not events(ws, "dp.query")  # the refusal, and nothing else
    assert client.post(QUERY, headers=bearer(owner_token), json=body).status_code == 200
    assert [e["actor"] for e in events(ws, "dp.query")] == ["owner"]


def test_the_openapi_schema_describes_both_forms(client: TestClient, owner_token: str) -> None:
    doc = client.get(f"{API}/openapi.json", headers=bearer(owner_token)).json()
    body = doc["paths"]["/api/v1/dp/query"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schemas = doc["components"]["schemas"]
    query_in = schemas[body["$ref"].rsplit("/", 1)[1]]
    assert query_in["oneOf"] == [{"required": ["sql"]}, {"required": ["query"]}]
    assert query_in["additionalProperties"] is False and query_in["required"] == ["epsilon"]
    assert query_in["properties"]["sql"]["type"] == "string"  # neither form is nullable
    parts = schemas[query_in["properties"]["query"]["$ref"].rsplit("/", 1)[1]]
    assert set(parts["properties"]) == {"dataset", "statistics", "where", "group_by"}
    assert parts["required"] == ["dataset", "statistics"]
    tags = parts["properties"]["statistics"]["items"]["discriminator"]["mapping"]
    assert set(tags) == {"count", "sum", "mean", "variance", "median", "quantile"}
    quantile = schemas[tags["quantile"].rsplit("/", 1)[1]]
    assert set(quantile["required"]) == {"statistic", "column", "q"}
