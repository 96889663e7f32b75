"""Attacks on bearer-token authentication from outside: a flood of forged tokens must not grow the
ledger without bound (each refusal is recorded, up to the limit per address; past it the address's
refused tokens are answered 429, logged and not recorded, while its valid tokens still work), and
tokens are taken only from the Authorization header."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from complai.service.app import create_app
from tests.service.conftest import bearer, settings_for


@pytest.fixture
def client(ws: Workspace) -> Iterator[TestClient]:
    settings = replace(settings_for(ws), login_failures_per_address=5)
    with TestClient(create_app(settings, workspace=ws), raise_server_exceptions=False) as c:
        yield c


def refused(ws: Workspace) -> int:
    return sum(1 for e in ws.session("owner", "audit").ledger_entries() if e.kind == "auth.refused")


def test_a_flood_of_forged_tokens_is_recorded_only_up_to_the_limit(client: TestClient, ws: Workspace) -> None:
    before = refused(ws)
    answers = [client.get("/api/v1/me", headers=bearer(f"cpl_{i:016x}_forged-secret")).status_code for i in range(30)]
    assert answers[:5] == [401] * 5
    assert set(answers[5:]) == {429}
    assert refused(ws) - before == 5
    r = client.get("/api/v1/datasets", headers=bearer("cpl_0000000000000000_another"))
    assert r.status_code == 429 and r.headers["retry-after"]
    assert r.headers["content-type"] == "application/problem+json"
    assert "another" not in r.text
    assert refused(ws) - before == 5


def test_a_valid_token_still_works_from_an_address_past_its_limit(
    client: TestClient, ws: Workspace, owner_token: str
) -> None:
    """Clients behind one proxy share its address: forged tokens from one of them lock no one else out."""
    for i in range(8):
        client.get("/api/v1/me", headers=bearer(f"cpl_{i:016x}_forged-secret"))
    assert client.get("/api/v1/me", headers=bearer("cpl_00000000000000ff_forged")).status_code == 429
    r = client.get("/api/v1/me", headers=bearer(owner_token))
    assert r.status_code == 200 and r.json()["principal"] == "owner"


def test_requests_without_a_token_do_not_count(client: TestClient, ws: Workspace, owner_token: str) -> None:
    for _ in range(10):
        assert client.get("/api/v1/me").status_code == 401
    assert client.get("/api/v1/me", headers=bearer(owner_token)).status_code == 200


@pytest.mark.parametrize(
    "where",
    [
        {"params": {"access_token": "TOKEN"}},
        {"params": {"token": "TOKEN"}},
        {"cookies": {"complai_console": "TOKEN"}},
        {"headers": {"Authorization": "Basic TOKEN"}},
        {"headers": {"Authorization": "TOKEN"}},
        {"headers": {"X-Complai-Token": "TOKEN"}},
    ],
)
def test_a_token_anywhere_but_the_bearer_header_is_not_taken(
    client: TestClient, owner_token: str, where: dict[str, dict[str, str]]
) -> None:
    kwargs = {k: {n: v.replace("TOKEN", owner_token) for n, v in d.items()} for k, d in where.items()}
    client.cookies.clear()
    r = client.get("/api/v1/me", **kwargs)  # type: ignore[arg-type]
    assert r.status_code == 401
    assert owner_token not in r.text


def test_delegation_by_a_non_owner_is_refused_and_recorded(
    client: TestClient, ws: Workspace, token_for: object
) -> None:
    token = token_for("adam", "admin")  # type: ignore[operator]
    r = client.get("/api/v1/me", headers={**bearer(token), "X-Complai-Act-As": "owner"})
    assert r.status_code == 403
    denied = [e for e in ws.session("owner", "audit").ledger_entries() if e.kind == "access.denied"]
    assert denied and b'"adam"' in denied[-1].data


def test_a_flood_of_forged_console_cookies_is_recorded_only_up_to_the_limit(client: TestClient, ws: Workspace) -> None:
    before = refused(ws)
    answers = []
    for i in range(12):
        client.cookies.clear()
        client.cookies.set("complai_console", f"cpl_{i:016x}_forged-secret", path="/console")
        answers.append(client.get("/console/", follow_redirects=False).status_code)
    assert answers[:5] == [303] * 5  # to the login page
    assert set(answers[5:]) == {429}
    assert refused(ws) - before == 5
