"""Attacks on attribution: an owner acting as another principal over HTTP (`X-Complai-Act-As`) must be
recorded as delegation, as `complai --as` is on the command line. Every event such a request writes as
the delegate, its refusals and the jobs it starts included, names the owner as `delegated_by`; a
request without the header records no `delegated_by` at all."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from complai.events import Event, decode_event
from tests.service.api_helpers import size
from tests.service.conftest import bearer

API = "/api/v1"
ACT_AS = "X-Complai-Act-As"


def events_since(ws: Workspace, start: int) -> list[Event]:
    return [decode_event(e.data) for e in ws.ledger.entries(start=start)]


def record(event: Event) -> dict[str, Any]:
    return dict(event.record())


@pytest.fixture
def team(customers: Workspace, token_for: Callable[..., str]) -> dict[str, str]:
    """`support` may read customers for credit scoring; `adam` is an admin; `boss` is an owner whose
    token makes the act-as requests (so `delegated_by` is not the workspace's default owner)."""
    owner = customers.session("owner", "security")
    tokens = {"support": token_for("support"), "adam": token_for("adam", "admin"), "boss": token_for("boss", "owner")}
    owner.add_rule("support", "customers", "read", "credit_scoring")
    return tokens


def wait(client: TestClient, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for _ in range(1000):
        state = client.get(f"{API}/jobs/{job_id}", headers=headers).json()
        if state["state"] in ("succeeded", "failed", "cancelled"):
            return state
        time.sleep(0.02)
    raise AssertionError(state)


def test_a_read_as_another_principal_names_the_owner_who_delegated(
    client: TestClient, customers: Workspace, team: dict[str, str]
) -> None:
    boss = bearer(team["boss"])
    before = size(customers)
    r = client.get(
        f"{API}/datasets/customers/records?purpose=credit_scoring&limit=2", headers={**boss, ACT_AS: "support"}
    )
    assert r.status_code == 200, r.text
    read = events_since(customers, before)
    assert [e.kind for e in read] == ["vault.read"]
    assert read[0].actor == "support" and read[0].delegated_by == "boss"
    assert record(read[0])["delegated_by"] == "boss"
    assert r.json()["ledger_seq"] == before

    # the same read with support's own token: support alone, and no delegated_by in the record
    before = size(customers)
    r = client.get(f"{API}/datasets/customers/records?purpose=credit_scoring&limit=2", headers=bearer(team["support"]))
    assert r.status_code == 200, r.text
    (own,) = events_since(customers, before)
    assert own.kind == "vault.read" and own.actor == "support" and own.delegated_by is None
    assert "delegated_by" not in record(own)


def test_a_refusal_as_another_principal_names_the_owner_who_delegated(
    client: TestClient, customers: Workspace, team: dict[str, str]
) -> None:
    boss = bearer(team["boss"])
    before = size(customers)
    r = client.get(f"{API}/datasets/customers/records?purpose=marketing", headers={**boss, ACT_AS: "support"})
    assert r.status_code == 403, r.text
    (denied,) = events_since(customers, before)
    assert denied.kind == "access.denied" and denied.actor == "support" and denied.delegated_by == "boss"
    before = size(customers)
    r = client.get(f"{API}/ledger/entries?limit=1", headers={**boss, ACT_AS: "adam"})  # adam may not audit
    assert r.status_code == 403, r.text
    (denied,) = events_since(customers, before)
    assert denied.kind == "access.denied" and denied.actor == "adam" and denied.delegated_by == "boss"
    # without the header the same refusal is adam's alone
    before = size(customers)
    assert client.get(f"{API}/ledger/entries?limit=1", headers=bearer(team["adam"])).status_code == 403
    (denied,) = events_since(customers, before)
    assert denied.actor == "adam" and "delegated_by" not in record(denied)


def test_a_token_minted_as_another_principal_names_the_owner_who_delegated(
    client: TestClient, customers: Workspace, team: dict[str, str]
) -> None:
    boss = bearer(team["boss"])
    before = size(customers)
    r = client.post(f"{API}/tokens", headers={**boss, ACT_AS: "adam"}, json={"expires": "PT5M"})
    assert r.status_code == 201, r.text
    issued = r.json()
    assert issued["principal"] == "adam" and issued["ledger_seq"] == before
    (created,) = events_since(customers, before)
    assert created.kind == "token.created" and created.actor == "adam" and created.delegated_by == "boss"
    assert client.get(f"{API}/me", headers=bearer(issued["token"])).json()["principal"] == "adam"
    # acting as adam gives adam's rights, not the owner's: a token for support is refused, as adam's
    before = size(customers)
    r = client.post(f"{API}/tokens", headers={**boss, ACT_AS: "adam"}, json={"principal": "support", "expires": "PT5M"})
    assert r.status_code == 403, r.text
    (denied,) = events_since(customers, before)
    assert denied.kind == "access.denied" and denied.actor == "adam" and denied.delegated_by == "boss"
    # the owner minting its own token records no delegation
    before = size(customers)
    assert client.post(f"{API}/tokens", headers=boss, json={"expires": "PT5M"}).status_code == 201
    (own,) = events_since(customers, before)
    assert own.actor == "boss" and "delegated_by" not in record(own)


def test_a_job_started_as_another_principal_names_the_owner_who_delegated(
    client: TestClient, customers: Workspace, team: dict[str, str]
) -> None:
    boss = bearer(team["boss"])
    as_adam = {**boss, ACT_AS: "adam"}
    before = size(customers)
    r = client.post(f"{API}/keys/rotate", headers=as_adam, json={})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["principal"] == "adam"
    assert wait(client, as_adam, job["id"])["state"] == "succeeded"
    written = events_since(customers, before)
    assert written and {e.kind for e in written} == {"keys.rotated"}
    assert all(e.actor == "adam" and e.delegated_by == "boss" for e in written)
    # the same job started with adam's own token records no delegation
    adam = bearer(team["adam"])
    before = size(customers)
    r = client.post(f"{API}/keys/rotate", headers=adam, json={})
    assert r.status_code == 202, r.text
    assert wait(client, adam, r.json()["id"])["state"] == "succeeded"
    written = events_since(customers, before)
    assert written and all(e.actor == "adam" and "delegated_by" not in record(e) for e in written)


def test_a_request_after_an_act_as_request_is_not_delegated(
    client: TestClient, customers: Workspace, team: dict[str, str]
) -> None:
    """The delegation ends with its request: a worker's next request on the same thread records none."""
    boss = bearer(team["boss"])
    support = bearer(team["support"])
    url = f"{API}/datasets/customers/records?purpose=credit_scoring&limit=1"
    for _ in range(3):
        assert client.get(url, headers={**boss, ACT_AS: "support"}).status_code == 200
        before = size(customers)
        assert client.get(url, headers=support).status_code == 200
        (own,) = events_since(customers, before)
        assert own.actor == "support" and own.delegated_by is None


def test_an_entry_bundle_refused_as_another_principal_names_the_owner_who_delegated(
    client: TestClient, customers: Workspace, team: dict[str, str]
) -> None:
    """/tlog's entry bundles need a principal who may audit (the service runs without --public-ledger)."""
    boss = bearer(team["boss"])
    before = size(customers)
    r = client.get("/tlog/tile/entries/000", headers={**boss, ACT_AS: "adam"})
    assert r.status_code == 403, r.text
    (denied,) = events_since(customers, before)
    assert denied.kind == "access.denied" and denied.actor == "adam" and denied.delegated_by == "boss"
    before = size(customers)  # the owner may audit: not refused (404 until a checkpoint covers the tile)
    assert client.get("/tlog/tile/entries/000.p/1", headers=boss).status_code in (200, 404)
    assert [e.kind for e in events_since(customers, before)] == []
