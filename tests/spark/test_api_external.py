"""External datasets over HTTP (/api/v1/external/...) and `complai --server URL external ...`, on a real
local Spark: registration against a Parquet file's physical types, enrolment by ids and from the source
(a job), the erasure requests an erasure opens (listed, and exported sealed to the owner's key), and the
scan that verifies them (a job). Refusals are 403 problems recorded once; bad input is a 400 problem that
changes nothing; every answer conforms to the published OpenAPI schema.

The Spark session of tests/spark (a JVM start costs seconds), one workspace and one service for the
module: the fixtures build on each other (registered -> enrolled -> erased), and each test asks only for
the state it needs. Few Spark jobs, on a ten-row file.
"""

from __future__ import annotations

import base64
import io
import json
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jsonschema
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.crypto.sealing import generate_keypair, load_private, open_sealed
from complai.service.app import create_app
from tests.cli.test_requests_portal import Ran  # a command run in this process: it reaches the tests' service
from tests.service.conftest import bearer, settings_for
from tests.spark.conftest import write_parquet
from tests.vault.conftest import SCHEMA, people_frame

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

API = "/api/v1"
LAKE = {**SCHEMA, "name": "lake_customers"}
IDS = [cid for cid, *_ in people_frame().itertuples(index=False)]  # C-1001 .. C-1004
STRANGER = "X-9"  # in the lake, never enrolled by id
ERASED = "C-1002"


@dataclass
class Env:
    ws: Workspace
    client: TestClient
    tokens: dict[str, str]
    location: str
    owner_key: str  # the owner system's public key text
    key_file: Path  # its private key


@pytest.fixture(scope="module")
def env(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("external-api")
    ws = Workspace.init(root / "ws", clock=ManualClock())
    ws.use_spark(spark)
    stranger = pd.DataFrame([(STRANGER, "Ann Other", "ann@example.org", 1, "retail")], columns=people_frame().columns)
    lake = pd.concat([people_frame(), people_frame(), stranger], ignore_index=True)
    location = write_parquet(root, lake, "lake.parquet")
    public = generate_keypair(root / "owner.key")
    key_text = "complai-x25519-public:" + base64.b64encode(public).decode()
    owner = ws.session(OWNER, "security")
    tokens = {"owner": owner.create_token(OWNER, "P1D").token}
    for role in ("admin", "auditor", "analyst"):
        owner.add_principal(f"p-{role}", "service")
        owner.grant_role(f"p-{role}", role)
        tokens[role] = owner.create_token(f"p-{role}", "P1D").token
    try:
        with TestClient(create_app(settings_for(ws), workspace=ws), raise_server_exceptions=False) as client:
            yield Env(ws, client, tokens, location, key_text, root / "owner.key")
    finally:
        ws.close()


# --- what the tests share ------------------------------------------------------------------------


def size(ws: Workspace) -> int:
    return ws.session(OWNER, "audit").ledger_head().size


def entries(ws: Workspace, start: int) -> list[dict[str, Any]]:
    return [
        {"kind": e.kind, **json.loads(e.data)}
        for e in ws.session(OWNER, "audit").ledger_entries(start=start, limit=1000)
    ]


def openapi(e: Env) -> dict[str, Any]:
    doc: dict[str, Any] = e.client.get(f"{API}/openapi.json").json()
    return doc


def conforms(e: Env, method: str, path: str, r: httpx.Response) -> None:
    """The answer is one the published schema declares for the operation: its status, its content type
    and, for JSON, its body."""
    doc = openapi(e)
    op = doc["paths"][API + path][method]
    declared = op["responses"].get(str(r.status_code))
    assert declared is not None, (method, path, r.status_code, r.text)
    ctype = r.headers["content-type"].split(";")[0]
    assert ctype in declared.get("content", {}), (method, path, ctype)
    schema = declared["content"][ctype].get("schema")
    if schema is not None and ctype in ("application/json", "application/problem+json"):
        jsonschema.validate(r.json(), {**schema, "components": doc["components"]})


def call(e: Env, method: str, path: str, who: str = "owner", **kw: Any) -> httpx.Response:
    """A request as `who`, checked against the schema; `path` as the schema names it, filled by `fill`."""
    fill = kw.pop("fill", {})
    r = e.client.request(method, API + path.format(**fill), headers=bearer(e.tokens[who]), **kw)
    conforms(e, method.lower(), path, r)
    return r


def problem(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    detail: str = r.json()["detail"]
    assert detail and "\n" not in detail
    return detail


def wait_job(e: Env, r: httpx.Response, who: str = "owner") -> dict[str, Any]:
    """The job `who` started, once finished (its result is shown to its own principal only)."""
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"{API}/jobs/{job['id']}"
    deadline = time.monotonic() + 120
    while job["state"] not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.05)
        job = call(e, "GET", "/jobs/{job_id}", who, fill={"job_id": job["id"]}).json()
    return job


def source(e: Env, **changes: Any) -> dict[str, Any]:
    return {"kind": "parquet", "location": e.location, "owner": "crm", "owner_key": e.owner_key} | changes


def refused(e: Env, r: httpx.Response, before: int, who: str) -> None:
    """A 403 problem, and one access.denied naming the caller is all the ledger gained."""
    problem(r, 403)
    assert [(x["kind"], x["actor"]) for x in entries(e.ws, before)] == [("access.denied", f"p-{who}")]


# --- the state the tests build on ----------------------------------------------------------------


@pytest.fixture(scope="module")
def registered(env: Env) -> dict[str, Any]:
    before = size(env.ws)
    r = call(env, "POST", "/external/datasets", json={"yaml": yaml.safe_dump(LAKE), "source": source(env)})
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"{API}/datasets/lake_customers"
    assert [x["kind"] for x in entries(env.ws, before)] == ["dataset.registered"]
    doc: dict[str, Any] = r.json()
    return doc


@pytest.fixture(scope="module")
def enrolled(env: Env, registered: dict[str, Any]) -> dict[str, Any]:
    """Two subjects enrolled by id (with a consent each), then the rest from the source (a job)."""
    consents = [{"subject": cid, "purpose": "credit_scoring"} for cid in IDS[:2]]
    by_ids = call(env, "POST", "/external/datasets/{name}/enrolments", fill={"name": "lake_customers"},
                  json={"ids": IDS[:2], "consents": consents})  # fmt: skip
    assert by_ids.status_code == 200, by_ids.text
    job = wait_job(env, call(env, "POST", "/external/datasets/{name}/enrolments/from-source",
                             fill={"name": "lake_customers"}))  # fmt: skip
    return {"by_ids": by_ids.json(), "job": job}


@pytest.fixture(scope="module")
def erased(env: Env, enrolled: dict[str, Any]) -> int:
    """ERASED erased through the API: its request to the owner system is open. The ledger's size after."""
    r = env.client.post(f"{API}/subjects/erase", headers=bearer(env.tokens["owner"]), json={"subject": ERASED})
    assert r.status_code == 200, r.text
    return size(env.ws)


# --- registration --------------------------------------------------------------------------------


def test_registering_answers_the_declaration_and_the_source_without_its_location(
    env: Env, registered: dict[str, Any]
) -> None:
    assert registered["name"] == "lake_customers" and registered["schema_version"] == 1
    assert [f["name"] for f in registered["fields"]] == [f["name"] for f in LAKE["fields"]]
    assert registered["purposes"] == LAKE["purposes"]
    assert registered["source"] == {"kind": "parquet", "owner": "crm", "erasure_days": 30, "time_column": None}
    assert env.location not in json.dumps(registered)  # a server path is never answered
    shown = call(env, "GET", "/datasets/{name}", fill={"name": "lake_customers"}).json()
    assert {k: v for k, v in registered.items() if k != "source"} == shown
    event = [x for x in entries(env.ws, 0) if x["kind"] == "dataset.registered"][-1]
    assert event["dataset"] == "lake_customers" and event["source"]["location"] == env.location


def test_bad_registrations_are_400_problems_and_change_nothing(env: Env) -> None:
    bad = {**LAKE, "name": "bad_lake"}
    text = yaml.safe_dump(bad)
    cases = [
        ({"yaml": "name: [unclosed", "source": source(env)}, "not valid YAML"),
        ({"definition": {**bad, "retention": "forever"}, "source": source(env)}, "retention"),
        ({"yaml": text, "definition": bad, "source": source(env)}, "either"),
        ({"yaml": text, "source": source(env, kind="csv")}, "source.kind"),
        ({"yaml": text, "source": source(env, owner_key="complai-x25519-public:AAAA")}, "owner_key"),
        ({"yaml": text, "source": source(env, erasure_days="30")}, "erasure_days"),
        ({"yaml": text, "source": {**source(env), "extra": 1}}, "extra"),
        ({"yaml": text, "source": source(env, location=env.location + ".missing")}, "cannot open the source"),
    ]
    before = size(env.ws)
    for body, words in cases:
        detail = problem(call(env, "POST", "/external/datasets", json=body), 400)
        assert words in detail, (words, detail)
    assert size(env.ws) == before
    assert call(env, "GET", "/datasets/{name}", fill={"name": "bad_lake"}).status_code == 404


def test_registering_needs_admin_on_the_dataset(env: Env) -> None:
    before = size(env.ws)
    body = {"yaml": yaml.safe_dump({**LAKE, "name": "analysts_lake"}), "source": source(env)}
    refused(env, call(env, "POST", "/external/datasets", "analyst", json=body), before, "analyst")
    assert call(env, "GET", "/datasets/{name}", fill={"name": "analysts_lake"}).status_code == 404


# --- enrolment -----------------------------------------------------------------------------------


def test_enrolment_by_ids_then_from_the_source(env: Env, enrolled: dict[str, Any]) -> None:
    by_ids = enrolled["by_ids"]
    assert {k: v for k, v in by_ids.items() if k != "ledger_seq"} == {
        "dataset": "lake_customers",
        "subjects": 2,
        "new_subjects": 2,
        "already_enrolled": 0,
        "skipped_erased": 0,
        "consents": 2,
    }
    job = enrolled["job"]
    assert job["state"] == "succeeded", job
    assert job["kind"] == "external.enrol" and job["purpose"] == "administration"
    result = job["result"]
    # every distinct id of the lake: the four people (two already enrolled) and the stranger
    assert (result["subjects"], result["new_subjects"], result["already_enrolled"]) == (3, 3, 2)
    kinds = {e.seq: e.kind for e in env.ws.session(OWNER, "audit").ledger_entries(limit=1000)}
    assert kinds[by_ids["ledger_seq"]] == kinds[result["ledger_seq"]] == "external.enrolled"


def test_bad_enrolments_are_400_problems_and_change_nothing(env: Env, enrolled: dict[str, Any]) -> None:
    path = "/external/datasets/{name}/enrolments"
    before = size(env.ws)
    for body, words in (
        ({"ids": [" C-2001"]}, "surrounding whitespace"),
        ({"ids": []}, "no subject ids"),
        ({"ids": "C-2001"}, "ids"),
        ({"ids": ["C-2001"], "consents": [{"subject": "C-2001", "purpose": "astrology"}]}, "astrology"),
        ({"ids": ["C-2001"], "consents": [{"subject": "C-2001"}]}, "purpose"),
    ):
        detail = problem(call(env, "POST", path, fill={"name": "lake_customers"}, json=body), 400)
        assert words in detail, (words, detail)
    problem(call(env, "POST", path, fill={"name": "nowhere"}, json={"ids": ["C-2001"]}), 404)
    assert size(env.ws) == before


def test_enrolling_needs_ingest_and_a_refusal_starts_no_job(env: Env, enrolled: dict[str, Any]) -> None:
    # the admin role's rules are `admin`, not `ingest`
    for route, body in (("/enrolments", {"ids": ["C-2002"]}), ("/enrolments/from-source", None)):
        before = size(env.ws)
        r = call(env, "POST", "/external/datasets/{name}" + route, "admin", fill={"name": "lake_customers"}, json=body)
        refused(env, r, before, "admin")
    assert [j for j in call(env, "GET", "/jobs", "admin").json() if j["principal"] == "p-admin"] == []


# --- erasure requests and the scan ---------------------------------------------------------------


def test_an_erasure_opens_a_request_listed_to_overseers(env: Env, erased: int) -> None:
    rows = call(env, "GET", "/external/requests", "auditor").json()
    assert [(r["dataset"], r["state"], r["exported"]) for r in rows] == [("lake_customers", "pending", False)]
    assert ERASED not in json.dumps(rows)  # named by pseudonym
    assert call(env, "GET", "/external/requests", params={"dataset": "lake_customers"}).json() == rows
    assert call(env, "GET", "/external/requests", params={"dataset": "other"}).json() == []
    before = size(env.ws)
    refused(env, call(env, "GET", "/external/requests", "analyst"), before, "analyst")


def test_the_sealed_export_opens_with_the_owners_key_only(env: Env, erased: int) -> None:
    path = "/external/datasets/{name}/requests/export"
    before = size(env.ws)
    refused(env, call(env, "POST", path, "auditor", fill={"name": "lake_customers"}), before, "auditor")
    before = size(env.ws)
    r = call(env, "POST", path, fill={"name": "lake_customers"})
    assert r.status_code == 200, r.text
    assert r.headers["x-complai-requests"] == "1"
    assert ERASED.encode() not in r.content
    (line,) = r.text.splitlines()
    sealed = base64.b64decode(json.loads(line)["sealed"])
    _, reader = open_sealed(io.BytesIO(sealed), load_private(env.key_file))
    assert json.loads(reader.read())["subject_id"] == ERASED
    assert [x["kind"] for x in entries(env.ws, before)] == ["external.requests_exported"]
    assert call(env, "GET", "/external/requests").json()[0]["exported"] is True
    problem(call(env, "POST", path, fill={"name": "nowhere"}), 404)


def test_verify_scans_the_source_as_a_job_and_records_it(env: Env, erased: int) -> None:
    before = size(env.ws)
    refused(env, call(env, "POST", "/external/verify", "analyst"), before, "analyst")
    problem(call(env, "POST", "/external/verify", json={"dataset": 7}), 400)
    problem(call(env, "POST", "/external/verify", json={"dataset": "nowhere"}), 404)
    before = size(env.ws)
    r = call(env, "POST", "/external/verify", "auditor", json={"dataset": "lake_customers"})
    job = wait_job(env, r, "auditor")
    assert job["state"] == "succeeded", job
    # the owner has not deleted the rows yet: still present
    assert job["result"]["datasets"] == {"lake_customers": {"requests": 1, "gone": 0, "present": 1}}
    assert [x["kind"] for x in entries(env.ws, before)] == ["external.erasure_checked"]
    assert job["result"]["ledger_seq"] == before
    assert call(env, "GET", "/external/requests").json()[0]["state"] == "present"


# --- the published schema ------------------------------------------------------------------------

OPERATIONS = {
    ("post", "/external/datasets"): "201",
    ("post", "/external/datasets/{name}/enrolments"): "200",
    ("post", "/external/datasets/{name}/enrolments/from-source"): "202",
    ("get", "/external/requests"): "200",
    ("post", "/external/datasets/{name}/requests/export"): "200",
    ("post", "/external/verify"): "202",
}


def test_every_route_is_documented_with_its_answer_and_its_problems(env: Env) -> None:
    doc = openapi(env)
    found = {
        (method, path.removeprefix(API)): op
        for path, item in doc["paths"].items()
        if path.startswith(f"{API}/external")
        for method, op in item.items()
    }
    assert set(found) == set(OPERATIONS)
    for key, op in found.items():
        assert op["summary"] and op["tags"] == ["external"], key
        ok = op["responses"][OPERATIONS[key]]
        assert ok["content"], key
        if OPERATIONS[key] == "202":
            assert "Location" in ok["headers"], key
        for status in ("400", "401", "403", "413", "429", "503"):
            assert "application/problem+json" in op["responses"][status]["content"], (key, status)
        assert {k for s in op["security"] for k in s} == {"HTTPBearer"}, key


# --- the command line against the server ---------------------------------------------------------


class ToService(httpx.BaseTransport):
    """httpx's requests handed to the module's service through its test client (the ASGI app in this
    process; starlette's test client is built on another HTTP library, whose transport httpx cannot use)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        r = self.client.request(
            request.method, request.url.raw_path.decode(), headers=request.headers.multi_items(), content=request.read()
        )
        return httpx.Response(r.status_code, headers=r.headers.multi_items(), content=r.content)


@pytest.fixture
def routed(env: Env, monkeypatch: pytest.MonkeyPatch) -> str:
    """`complai --server URL` reaches the module's service, in this process; the URL."""
    original = httpx.Client

    class Routed(original):  # type: ignore[misc, valid-type]
        def __init__(self, *, verify: Any = True, **kw: Any) -> None:
            super().__init__(transport=ToService(env.client), **kw)

    monkeypatch.setattr(httpx, "Client", Routed)
    return "http://127.0.0.1:8000"


def remote(env: Env, url: str, *args: str, who: str = "owner") -> Ran:
    return Ran("--workspace", "/nonexistent/complai-remote", "--server", url, "--token", env.tokens[who], *args)


def test_the_remote_commands_answer_as_the_local_ones(
    env: Env, erased: int, routed: str, tmp_path: Path, spark: SparkSession
) -> None:
    schema_file = tmp_path / "copy.yaml"
    schema_file.write_text(yaml.safe_dump({**LAKE, "name": "lake_copy"}))
    (tmp_path / "owner.key.pub").write_text(env.owner_key + "\n")
    (tmp_path / "ids.txt").write_text("C-1003\nC-1004\n")
    (tmp_path / "consents.csv").write_text("subject,purpose,basis\nC-1003,marketing,\n")
    register = ("external", "register", "lake_copy", "--schema", str(schema_file), "--location", env.location,
                "--owner", "crm", "--owner-key", str(tmp_path / "owner.key.pub"), "--erasure-days", "10")  # fmt: skip
    relative = remote(env, routed, *register[:5], "--location", "lake.parquet", *register[7:])
    assert relative.returncode == 2 and "absolute" in relative.stderr
    done = remote(env, routed, *register, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "dataset": "lake_copy", "fields": 5, "purposes": LAKE["purposes"], "kind": "parquet",
    }  # fmt: skip
    done = remote(env, routed, "external", "enrol", "lake_copy", "--ids", str(tmp_path / "ids.txt"),
                  "--consents", str(tmp_path / "consents.csv"), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["subjects"], out["new_subjects"], out["already_enrolled"], out["consents"]) == (2, 0, 0, 1)
    again = remote(env, routed, "external", "enrol", "lake_copy", "--ids", str(tmp_path / "ids.txt"))
    assert again.returncode == 0, again.stderr
    assert "0 subject(s) enrolled in lake_copy (0 new, 2 already, 0 erased skipped), 0 consent(s)" in again.stdout
    # the requests, listed as the local form lists them (a local command on the same workspace)
    there = remote(env, routed, "external", "requests", "--json")
    here = Ran("--workspace", str(env.ws.path), "external", "requests", "--json")
    assert there.returncode == here.returncode == 0, (there.stderr, here.stderr)
    assert json.loads(there.stdout) == json.loads(here.stdout) and len(json.loads(here.stdout)) == 1
    # the sealed export: a new 0600 file, never over an existing one
    out_file = tmp_path / "requests.jsonl"
    done = remote(env, routed, "external", "requests", "lake_customers", "--out", str(out_file))
    assert done.returncode == 0, done.stderr
    assert f"1 sealed erasure request(s) for lake_customers written to {out_file}" in " ".join(done.stdout.split())
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600 and len(out_file.read_text().splitlines()) == 1
    before = size(env.ws)
    kept = remote(env, routed, "external", "requests", "lake_customers", "--out", str(out_file))
    assert kept.returncode == 2 and size(env.ws) == before  # refused before the server was asked
    # the scan: a job followed to its end (no request is open on lake_copy: nothing scanned)
    done = remote(env, routed, "external", "verify", "lake_copy", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {}
    # a refusal by the server: one line, exit 2
    denied = remote(env, routed, "external", "verify", who="analyst")
    assert denied.returncode == 2 and "\n" not in denied.stderr.strip()
