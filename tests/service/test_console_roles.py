"""Every console page, for a principal of each built-in role and for one who may only run DP queries
and train (no exact data): each page renders (200) or is refused (403), never an error (500). The
workspace has something on every page: datasets, budgets, a trained and audited model, an agreement
with a share, an audit whose report the service keeps, a request, an incident and a checkpoint."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from complai.access.identity import OWNER, ROLES
from complai.service.console import auth, ledger, registry
from complai.service.console import pages as pages_
from complai.service.console.web import COOKIE
from tests.service.test_console_pages import audit_on_server, subject_ids
from tests.service.test_console_registry import ERASED, ROWS, Setup, build

DP_ONLY = "hana"
PEOPLE = {f"as-{role}": role for role in ROLES if role != "owner"}


@dataclass
class Pages:
    setup: Setup
    tokens: dict[str, str]  # principal -> console login token
    paths: dict[str, str]  # route template -> a path to it with ids that exist


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pages]:
    setup = build(tmp_path_factory.mktemp("console-roles"))
    ws = setup.ws
    try:
        sec = ws.session(OWNER, "security")
        for name, role in PEOPLE.items():
            sec.add_principal(name, "human")
            sec.grant_role(name, role)
        sec.add_principal(DP_ONLY, "human")
        admin = ws.session(OWNER, "administration")
        admin.add_rule(DP_ONLY, "adult", "query_dp", "analytics")
        admin.add_rule(DP_ONLY, "adult", "train", "train_ai_system")
        tokens = {n: sec.create_token(n, "P1D").token for n in [OWNER, *PEOPLE, DP_ONLY]}

        incident = sec.incident_open("a laptop with exports was lost").value["id"]
        request = ws.session(OWNER, "subject_request").request_open("access", subject_ids(ws, 1)[0]).value["id"]
        ws.session(OWNER, "audit").ledger_checkpoint()
        audit = audit_on_server(ws)
        report = Path(ws.path) / "audits" / str(audit["ledger_seq"])
        control = json.loads((report / "report.json").read_text())["controls"][0]["id"]
        (report / "report.html").write_text("<p>report</p>")  # the console frames it as it is
        ids = {
            "cid": control,
            "rid": request,
            "dataset": "adult",
            "iid": incident,
            "name": "adult",
            "model_id": setup.model_id,
            "seq": str(audit["ledger_seq"]),
        }
        paths = {}
        for module in (auth, pages_, registry, ledger):  # the console's routers, as the app includes them
            for route in module.router.routes:
                if isinstance(route, APIRoute) and "GET" in (route.methods or ()):
                    full = "/console" + route.path
                    paths[full] = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], full)
        yield Pages(setup, tokens, paths)
    finally:
        ws.close()


@pytest.fixture(scope="module")
def client(pages: Pages) -> Iterator[TestClient]:
    app = pages.setup.app
    assert isinstance(app, FastAPI)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def visit(client: TestClient, pages: Pages, who: str) -> dict[str, int]:
    client.cookies.clear()
    client.cookies.set(COOKIE, pages.tokens[who], path="/console")
    out = {}
    for route, path in pages.paths.items():
        r = client.get(path, follow_redirects=False)
        out[route] = r.status_code
        assert r.status_code != 500, f"{who}: {path} answered 500"
    return out


def test_every_console_page_is_covered(pages: Pages) -> None:
    # a page added later is visited too: each GET route under /console has a path with ids that exist
    for route in ("/console/datasets", "/console/datasets/{name}", "/console/models/{model_id}", "/console/"):
        assert route in pages.paths
    assert len(pages.paths) >= 20


def test_the_owner_sees_every_page(client: TestClient, pages: Pages) -> None:
    statuses = visit(client, pages, OWNER)
    assert {route: s for route, s in statuses.items() if s != 200} == {}


@pytest.mark.parametrize("who", sorted(PEOPLE))
def test_each_built_in_role_gets_a_page_or_a_refusal(client: TestClient, pages: Pages, who: str) -> None:
    statuses = visit(client, pages, who)
    assert set(statuses.values()) <= {200, 403}, statuses
    if PEOPLE[who] == "auditor":  # the ledger and the audits are the auditor's to read
        assert statuses["/console/ledger"] == 200 and statuses["/console/audits/{seq}"] == 200
    if PEOPLE[who] in ("analyst", "steward"):  # no rights of their own
        assert statuses["/console/datasets/{name}"] == 403 and statuses["/console/principals"] == 403


def test_a_dp_only_principal_sees_the_datasets_without_counts(client: TestClient, pages: Pages) -> None:
    statuses = visit(client, pages, DP_ONLY)
    assert set(statuses.values()) <= {200, 403}, statuses
    r = client.get("/console/datasets")
    assert r.status_code == 200
    row = re.search(r'<tr class="reg-dataset">(.*?)</tr>', r.text, re.S)
    assert row is not None and 'href="/console/datasets/adult"' in row.group(1)
    cells = [re.sub(r"<[^>]+>|\s+", " ", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)]
    assert cells[1:3] == ["\u2014", "\u2014"]
    assert "counts are shown only to those who may see exact data" in r.text
    assert f"{ROWS - ERASED:,}" not in r.text


def test_the_owner_sees_the_counts(client: TestClient, pages: Pages) -> None:
    client.cookies.clear()
    client.cookies.set(COOKIE, pages.tokens[OWNER], path="/console")
    r = client.get("/console/datasets")
    assert r.status_code == 200
    assert f"{ROWS - ERASED:,}" in r.text
    assert "counts are shown only to those who may see exact data" not in r.text
