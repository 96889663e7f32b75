"""/api/v1/external attacked from outside: a source location the server would resolve from its own working
folder, control characters where the store keeps text, refusals through delegation, and bad input that
must be refused before a job is queued or anything is written.

No Spark: the external dataset is registered in process with its physical types, and the service's
workspace is handed a stand-in that fails any use, so a request that would reach Spark before it is
validated is seen (and never starts a JVM). One workspace and one service a backend, for the module.
"""

from __future__ import annotations

import base64
import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.crypto.sealing import generate_keypair
from complai.service.app import create_app
from complai.store.engine import normalise_url
from tests.conftest import BACKENDS, PG_URL, _pg_schema_url
from tests.service.conftest import bearer, settings_for
from tests.vault.conftest import SCHEMA

API = "/api/v1"
LAKE = {**SCHEMA, "name": "lake"}
PHYSICAL = {"string": "string", "integer": "bigint", "category": "string", "float": "double", "text": "string"}


class NoSpark:
    """What the workspace reads external sources with: any use fails the test's expectation (a request
    validated first never gets here)."""

    def __getattr__(self, name: str) -> NoReturn:
        raise AssertionError(f"Spark was asked for {name}")


@dataclass
class Env:
    ws: Workspace
    client: TestClient
    tokens: dict[str, str]
    owner_key: str


@pytest.fixture(scope="module", params=BACKENDS)
def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("attack-external")
    schema = None
    if request.param == "postgresql":
        assert PG_URL is not None
        schema = f"t_{uuid.uuid4().hex[:16]}"
        admin = create_engine(normalise_url(PG_URL), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        ws = Workspace.init(root / "ws", database_url=_pg_schema_url(schema), clock=ManualClock())
    else:  # a copy of the suite's new SQLite workspace (init costs a second)
        shutil.copytree(sqlite_template, root / "ws")
        ws = Workspace.open(root / "ws", clock=ManualClock())
    ws.use_spark(NoSpark())  # type: ignore[arg-type]
    key = "complai-x25519-public:" + base64.b64encode(generate_keypair(root / "owner.key")).decode()
    admin_session = ws.session(OWNER, "administration")
    spec = admin_session.parse_schema(LAKE)
    physical = {f.name: PHYSICAL[f.type] for f in spec.fields}
    source = {"kind": "parquet", "location": str(root / "lake.parquet"), "owner": "crm", "owner_key": key}
    admin_session.register_external(spec, source, physical=physical)
    admin_session.create_dataset(admin_session.parse_schema({**SCHEMA, "name": "plain"}))
    owner = ws.session(OWNER, "security")
    tokens = {"owner": owner.create_token(OWNER, "P1D").token}
    for role in ("admin", "auditor", "analyst"):
        owner.add_principal(f"p-{role}", "service")
        owner.grant_role(f"p-{role}", role)
        tokens[role] = owner.create_token(f"p-{role}", "P1D").token
    try:
        with TestClient(create_app(settings_for(ws), workspace=ws), raise_server_exceptions=False) as client:
            yield Env(ws, client, tokens, key)
    finally:
        ws.close()
        if schema is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            admin.dispose()


def size(ws: Workspace) -> int:
    return ws.session(OWNER, "audit").ledger_head().size


def entries(ws: Workspace, start: int) -> list[dict[str, Any]]:
    return [
        {"kind": e.kind, **json.loads(e.data)}
        for e in ws.session(OWNER, "audit").ledger_entries(start=start, limit=100)
    ]


def call(e: Env, method: str, path: str, who: str = "owner", headers: dict[str, str] | None = None, **kw: Any) -> Any:
    return e.client.request(method, API + path, headers={**bearer(e.tokens[who]), **(headers or {})}, **kw)


def problem(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    detail: str = r.json()["detail"]
    assert detail and "\n" not in detail
    return detail


def jobs(e: Env) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = call(e, "GET", "/jobs").json()
    return found


def register(e: Env, name: str, **source: Any) -> httpx.Response:
    body = {
        "definition": {**LAKE, "name": name},
        "source": {"kind": "parquet", "owner": "crm", "owner_key": e.owner_key} | source,
    }
    r: httpx.Response = call(e, "POST", "/external/datasets", json=body)
    return r


# --- registration --------------------------------------------------------------------------------


@pytest.mark.parametrize("location", ["lake.parquet", "./lake.parquet", "../lake/part-0.parquet", "file:lake.parquet"])
def test_a_relative_location_is_refused_before_spark_resolves_it_from_the_servers_folder(
    env: Env, location: str
) -> None:
    before = size(env.ws)
    detail = problem(register(env, "relative", location=location), 400)
    assert "source.location" in detail and "absolute" in detail, detail
    assert size(env.ws) == before
    assert call(env, "GET", "/datasets/relative").status_code == 404


@pytest.mark.parametrize(
    ("field", "value"), [("owner", "c\x00rm"), ("owner", "crm\x1b[2J"), ("location", "/lake\x00.parquet")]
)
def test_control_characters_in_the_source_are_refused_before_spark(env: Env, field: str, value: str) -> None:
    # a NUL in the owner was stored as far as PostgreSQL, which refused it: a 500
    before = size(env.ws)
    source = {"location": "/lake/orders.parquet", field: value}
    detail = problem(register(env, "controls", **source), 400)
    assert f"source.{field}" in detail and "control character" in detail, detail
    assert value not in detail and size(env.ws) == before


# --- jobs: authorised and validated before they are queued ----------------------------------------


def test_refusals_through_delegation_are_403_recorded_with_the_delegating_owner_and_start_no_job(env: Env) -> None:
    for method, path, body in (
        ("POST", "/external/verify", {}),
        ("POST", "/external/datasets/lake/enrolments/from-source", {}),
        ("POST", "/external/datasets/lake/requests/export", None),
        ("GET", "/external/requests", None),
    ):
        before = size(env.ws)
        r = call(env, method, path, headers={"X-Complai-Act-As": "p-analyst"}, json=body)
        problem(r, 403)
        (event,) = entries(env.ws, before)
        assert (event["kind"], event["actor"], event["delegated_by"]) == ("access.denied", "p-analyst", OWNER)
    # a principal who is not the owner may not delegate at all
    before = size(env.ws)
    problem(call(env, "GET", "/external/requests", "admin", headers={"X-Complai-Act-As": "p-auditor"}), 403)
    assert [x["kind"] for x in entries(env.ws, before)] == ["access.denied"]
    assert jobs(env) == []


@pytest.mark.parametrize(
    ("path", "body"),
    [("/external/verify", {"dataset": "plain"}), ("/external/datasets/plain/enrolments/from-source", {})],
)
def test_a_dataset_that_is_not_external_is_a_400_before_any_job(env: Env, path: str, body: dict[str, Any]) -> None:
    before, queued = size(env.ws), len(jobs(env))
    detail = problem(call(env, "POST", path, json=body), 400)
    assert "not external" in detail
    assert size(env.ws) == before and len(jobs(env)) == queued


# --- enrolment ------------------------------------------------------------------------------------


def test_ids_and_consents_that_are_not_unicode_or_too_big_are_refused_and_change_nothing(env: Env) -> None:
    path = "/external/datasets/lake/enrolments"
    before = size(env.ws)
    surrogate = b'{"ids": ["\\ud800"]}'
    detail = problem(call(env, "POST", path, content=surrogate, headers={"content-type": "application/json"}), 400)
    assert "surrogate" in detail
    consent = b'{"ids": ["s1"], "consents": [{"subject": "s1", "purpose": "credit_scoring", "source": "\\udc00"}]}'
    problem(call(env, "POST", path, content=consent, headers={"content-type": "application/json"}), 400)
    problem(call(env, "POST", path, json={"ids": [f"id-{i:08d}" for i in range(10_000)]}), 413)
    problem(call(env, "POST", path, json={"ids": ["s1"], "consents": [{"subject": "s1", "purpose": "x\x00"}]}), 400)
    assert size(env.ws) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [("source", "x\x00y"), ("notice_version", "\x00"), ("source", "s" * 129), ("notice_version", "v" * 65)],
)
def test_a_consent_text_the_store_cannot_keep_is_a_400(env: Env, field: str, value: str) -> None:
    before = size(env.ws)
    subject = f"c-{uuid.uuid4().hex[:8]}"
    body = {"ids": [subject], "consents": [{"subject": subject, "purpose": "credit_scoring", field: value}]}
    detail = problem(call(env, "POST", "/external/datasets/lake/enrolments", json=body), 400)
    assert field in detail and size(env.ws) == before


def test_an_id_with_a_nul_is_enrolled_as_the_same_bytes_on_every_backend(env: Env) -> None:
    # the id is sealed and linked by its HMAC, never stored as text: the store takes any Unicode
    r = call(env, "POST", "/external/datasets/lake/enrolments", json={"ids": ["a\x00b", "é\u2028x"]})
    assert r.status_code == 200, r.text
    assert r.json()["subjects"] == 2
    again = call(env, "POST", "/external/datasets/lake/enrolments", json={"ids": ["a\x00b"]}).json()
    assert (again["subjects"], again["already_enrolled"]) == (0, 1)
