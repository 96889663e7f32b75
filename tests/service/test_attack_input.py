"""Hostile JSON bodies: NaN and Infinity (Python's JSON reader takes them, the JSON standard does not)
and lone surrogates (text that cannot be stored as UTF-8) are refused as invalid input (400, nothing
written), never stored as a missing value or answered with an internal error."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from tests.service.conftest import bearer
from tests.service.test_api_rights import bad, export, size, with_customers


@pytest.fixture
def customers(ws: Workspace) -> Workspace:
    return with_customers(ws)


def post_raw(client: TestClient, token: str, path: str, body: str):  # type: ignore[no-untyped-def]
    return client.post(path, content=body.encode(), headers={**bearer(token), "Content-Type": "application/json"})


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", '"\\ud800"', '"a\\udfffb"'])
def test_a_rectification_to_nan_or_a_lone_surrogate_is_refused(
    client: TestClient, customers: Workspace, owner_token: str, value: str
) -> None:
    income = export(customers, "C-1001")["records"]["customers"][0]["fields"]["income"]
    before = size(customers)  # (the export above is recorded)
    body = '{"subject": "C-1001", "dataset": "customers", "field": "income", "value": ' + value + "}"
    r = post_raw(client, owner_token, "/api/v1/subjects/rectify", body)
    bad(customers, r, before)
    assert export(customers, "C-1001")["records"]["customers"][0]["fields"]["income"] == income


@pytest.mark.parametrize(
    "path, body",
    [
        (
            "/api/v1/subjects/rectify",
            '{"subject": "C-1001", "dataset": "customers", "field": "full_name", "value": "\\ud800"}',
        ),
        ("/api/v1/incidents", '{"description": "x\\ud800"}'),
        ("/api/v1/audits", '{"epsilon_cap": NaN}'),
        ("/api/v1/models/train", '{"spec": {"dataset": "customers", "target_epsilon": NaN}}'),
        ("/api/v1/models/train", '{"spec": {"dataset": "customers", "label": "\\udc80"}}'),
    ],
)
def test_hostile_json_anywhere_in_a_body_is_invalid_input(
    client: TestClient, customers: Workspace, owner_token: str, path: str, body: str
) -> None:
    before = size(customers)
    r = post_raw(client, owner_token, path, body)
    bad(customers, r, before)
