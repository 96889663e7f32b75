"""The console's ledger explorer, server side: pages of entries, one entry, the proof its script checks,
and who may see them (the browser's own check is in test_ledger_explorer_browser.py)."""

from __future__ import annotations

import hashlib
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from complai.app.workspace import Workspace
from complai.ledger import merkle
from tests.ledger.helpers import fill

PASSWORD = "a long enough passphrase 7"


def login(client: TestClient, ws: Workspace, name: str, role: str) -> None:
    owner = ws.session("owner", "security")
    owner.add_principal(name, "human", password=PASSWORD)
    owner.grant_role(name, role)
    form = {"username": name, "password": PASSWORD, "next": "/console/ledger"}
    r = client.post("/console/login", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/ledger"


@pytest.fixture
def filled(ws: Workspace) -> Workspace:
    fill(ws.ledger, 120)
    return ws


def test_pages_of_entries_and_one_entry_with_its_proof(filled: Workspace, client: TestClient) -> None:
    assert client.get("/console/ledger", follow_redirects=False).status_code == 303
    login(client, filled, "alice", "auditor")
    page = client.get("/console/ledger").text
    assert page.count('href="/console/ledger/') == 50 and 'rel="next" href="/console/ledger?start=50"' in page
    assert "none yet" in page and filled.ledger.verifier.encode() in page
    later = client.get("/console/ledger", params={"start": 100}).text
    assert 'href="/console/ledger/100"' in later and 'rel="prev" href="/console/ledger?start=50"' in later
    probes = client.get("/console/ledger", params={"type": "test.probe", "start": 0}).text
    assert set(re.findall(r"<td>([a-z.]+)</td>", probes)) <= {"test.probe", "audit", "tester"}
    # one entry, and the data its script checks
    page = client.get("/console/ledger/42").text
    assert "Entry 42" in page and 'src="/static/ledger.js"' in page and "<script>" not in page
    assert "checking it signs one" in page  # no checkpoint covers it yet
    r = client.get("/console/ledger/42/proof")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    p = r.json()
    assert p["checkpoint"] is not None and set(p) >= {"entry", "proof", "tree_size", "log_key"}
    assert "verified" not in r.text  # data to check, never a verdict
    leaf = hashlib.sha256(b"\x00" + p["entry"].encode()).digest()
    merkle.verify_inclusion(42, p["tree_size"], leaf, [bytes.fromhex(h) for h in p["proof"]], bytes.fromhex(p["root"]))
    assert client.get("/console/ledger/42/proof", params={"size": p["tree_size"]}).json()["proof"] == p["proof"]
    assert client.get("/console/ledger/999999").status_code == 404
    assert (
        client.get("/static/ledger.js")
        .headers["content-type"]
        .startswith(("text/javascript", "application/javascript"))
    )


def test_an_analyst_is_refused(filled: Workspace, client: TestClient) -> None:
    login(client, filled, "ann", "analyst")
    assert client.get("/console/ledger").status_code == 403
    assert client.get("/console/ledger/3/proof").status_code == 403


def test_an_entry_altered_at_rest_is_shown_as_such(filled: Workspace, client: TestClient) -> None:
    with filled.store.write() as conn:
        conn.execute(text("UPDATE ledger_entries SET data = :d WHERE seq = 3"), {"d": b"not json <b>"})
    login(client, filled, "alice", "auditor")
    assert "not an event" in client.get("/console/ledger").text
    page = client.get("/console/ledger/3")
    assert page.status_code == 200 and "not json &lt;b&gt;" in page.text
