"""/api/v1/ledger: status, paged entries, proofs checked with RFC 9162 math, checkpoints, witnesses,
verification as a job and the export an offline verifier accepts."""

from __future__ import annotations

import base64
import hashlib
import io
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from complai.app.workspace import Workspace
from complai.ledger import merkle
from complai.ledger.verify import verify_export
from complai.ledger.witness import Witness
from complai.service.app import create_app
from tests.ledger.helpers import fill
from tests.service.conftest import bearer, settings_for

API = "/api/v1/ledger"


@pytest.fixture
def auditor(token_for: Callable[..., str]) -> dict[str, str]:
    return bearer(token_for("aud", "auditor"))


@pytest.fixture
def filled(ws: Workspace) -> Workspace:
    fill(ws.ledger, 40)
    return ws


Shared = tuple[Workspace, TestClient, dict[str, str], dict[str, str]]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One workspace with 40 probes for the tests that only read (and sign checkpoints): the service
    over it, an auditor's and an analyst's token."""
    ws = Workspace.init(tmp_path_factory.mktemp("ledger-api") / "ws")
    try:
        fill(ws.ledger, 40)
        owner = ws.session("owner", "security")
        tokens = []
        for name, role in (("aud", "auditor"), ("ann", "analyst")):
            owner.add_principal(name, "service")
            owner.grant_role(name, role)
            tokens.append(bearer(owner.create_token(name, "P1D").token))
        with TestClient(create_app(settings_for(ws), workspace=ws), raise_server_exceptions=False) as c:
            yield ws, c, tokens[0], tokens[1]
    finally:
        ws.close()


def test_status_and_pages(shared: Shared) -> None:
    _, client, auditor, _ = shared
    st = client.get(API, headers=auditor).json()
    assert st["size"] >= 40 and st["entries_by_type"]["test.probe"] == 40 and st["log_key"].startswith(st["origin"])
    seen, start = [], 0
    while True:
        page = client.get(f"{API}/entries", params={"start": start, "limit": 7}, headers=auditor).json()
        seen += page["entries"]
        if page["next"] is None:
            break
        assert len(page["entries"]) == 7
        start = page["next"]
    assert [e["seq"] for e in seen] == list(range(len(seen))) and len(seen) >= 40
    probe = next(e for e in seen if e["type"] == "test.probe")
    assert probe["event"]["n"] == probe["seq"] and "actor" in probe["event"]
    only = client.get(f"{API}/entries", params={"type": "test.probe", "limit": 500}, headers=auditor).json()
    first = probe["seq"]
    assert [e["seq"] for e in only["entries"]] == list(range(first, first + 40)) and only["next"] is None
    one = client.get(f"{API}/entries/{probe['seq']}", headers=auditor).json()
    assert one == probe
    assert client.get(f"{API}/entries/999999", headers=auditor).status_code == 404
    assert client.get(f"{API}/entries", params={"limit": 501}, headers=auditor).status_code == 400
    assert client.get(f"{API}/entries", params={"start": "x"}, headers=auditor).status_code == 400


def test_reading_the_ledger_is_the_auditors(shared: Shared) -> None:
    _, client, _, analyst = shared
    assert client.get(API).status_code == 401
    for path in ("", "/entries", "/entries/0", "/entries/0/proof", "/checkpoints", "/witnesses"):
        assert client.get(API + path, headers=analyst).status_code == 403, path
    assert client.post(f"{API}/checkpoints", headers=analyst).status_code == 403


def test_inclusion_proof_verifies(shared: Shared) -> None:
    _, client, auditor, _ = shared
    p = client.get(f"{API}/entries/5/proof", headers=auditor).json()
    assert p["checkpoint"] is not None  # signed on demand when none covers the entry yet
    leaf = hashlib.sha256(b"\x00" + p["entry"].encode()).digest()
    assert leaf.hex() == p["leaf_hash"]
    merkle.verify_inclusion(5, p["tree_size"], leaf, [bytes.fromhex(h) for h in p["proof"]], bytes.fromhex(p["root"]))
    assert base64.b64decode(p["checkpoint"].split("\n")[2]).hex() == p["root"]
    # against an explicit size
    q = client.get(f"{API}/entries/5/proof", params={"size": 20}, headers=auditor).json()
    assert q["tree_size"] == 20
    merkle.verify_inclusion(5, 20, leaf, [bytes.fromhex(h) for h in q["proof"]], bytes.fromhex(q["root"]))
    assert client.get(f"{API}/entries/5/proof", params={"size": 5}, headers=auditor).status_code == 400


def test_consistency_proof_verifies(shared: Shared) -> None:
    filled, client, auditor, _ = shared
    c = client.get(f"{API}/consistency", params={"from": 13, "to": 37}, headers=auditor).json()
    merkle.verify_consistency(
        13, 37, bytes.fromhex(c["root1"]), bytes.fromhex(c["root2"]), [bytes.fromhex(h) for h in c["proof"]]
    )
    assert c["root2"] == filled.ledger.root_at(37).hex()
    now = client.get(f"{API}/consistency", params={"from": 13}, headers=auditor).json()
    assert now["size2"] == filled.ledger.head().size
    assert client.get(f"{API}/consistency", params={"from": 38, "to": 37}, headers=auditor).status_code == 400
    assert client.get(f"{API}/consistency", params={"from": 1, "to": 10**9}, headers=auditor).status_code == 400


def test_checkpoints(filled: Workspace, client: TestClient, auditor: dict[str, str]) -> None:
    assert client.get(f"{API}/checkpoints/latest", headers=auditor).status_code == 404
    first = client.post(f"{API}/checkpoints", headers=auditor).json()
    again = client.post(f"{API}/checkpoints", headers=auditor).json()
    assert first == again  # nothing appended since
    fill(filled.ledger, 3)
    second = client.post(f"{API}/checkpoints", headers=auditor).json()
    assert second["size"] == first["size"] + 1 + 3
    listed = client.get(f"{API}/checkpoints", headers=auditor).json()
    assert [c["size"] for c in listed] == [second["size"], first["size"]]
    assert client.get(f"{API}/checkpoints/latest", headers=auditor).json() == second
    assert second["note"].startswith(filled.ledger.origin + "\n") and second["signers"] == [filled.ledger.origin]


def test_witnesses_and_cosignatures(
    filled: Workspace, client: TestClient, auditor: dict[str, str], owner_token: str, tmp_path: Path
) -> None:
    w = Witness.init(tmp_path / "w", "witness.example/w1")
    assert client.post(f"{API}/witnesses", json={"vkey": w.verifier.encode()}, headers=auditor).status_code == 403
    owner = bearer(owner_token)
    r = client.post(f"{API}/witnesses", json={"vkey": w.verifier.encode()}, headers=owner)
    assert r.status_code == 201 and r.json()["name"] == "witness.example/w1"
    assert client.post(f"{API}/witnesses", json={"vkey": w.verifier.encode()}, headers=owner).status_code == 409
    assert client.post(f"{API}/witnesses", json={"vkey": "nope"}, headers=owner).status_code == 400
    assert client.get(f"{API}/witnesses", headers=auditor).json() == [r.json()]
    cp = client.post(f"{API}/checkpoints", headers=auditor).json()
    sig = w.cosign(cp["note"], filled.ledger.verifier, [], int(time.time()))
    bad = sig.line().replace(sig.line()[-6:-2], "AAAA")
    assert (
        client.post(f"{API}/checkpoints/{cp['size']}/cosignatures", json={"line": bad}, headers=auditor).status_code
        == 422
    )
    ok = client.post(f"{API}/checkpoints/{cp['size']}/cosignatures", json={"line": sig.line()}, headers=auditor)
    assert ok.status_code == 200, ok.text
    latest = client.get(f"{API}/checkpoints/latest", headers=auditor).json()
    assert latest["signers"] == [filled.ledger.origin, "witness.example/w1"]
    assert (
        client.post(f"{API}/checkpoints/1/cosignatures", json={"line": sig.line()}, headers=auditor).status_code == 400
    )


def _wait(client: TestClient, location: str, headers: dict[str, str]) -> dict:
    for _ in range(200):
        job = client.get(location, headers=headers).json()
        if job["state"] in ("done", "failed", "cancelled", "succeeded"):
            return job
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def test_verify_as_a_job(filled: Workspace, client: TestClient, owner_token: str) -> None:
    owner = bearer(owner_token)
    client.post(f"{API}/checkpoints", headers=owner)
    r = client.post(f"{API}/verify", json={}, headers=owner)
    assert r.status_code == 202 and r.headers["location"].startswith("/api/v1/jobs/")
    job = _wait(client, r.headers["location"], owner)
    assert job["result"]["ok"] is True, job
    # tamper at rest: the next verification names it
    with filled.store.write() as conn:
        conn.execute(text("UPDATE ledger_entries SET data = :d WHERE seq = 7"), {"d": b'{"type":"test.probe"}'})
    job = _wait(client, client.post(f"{API}/verify", json={}, headers=owner).headers["location"], owner)
    assert job["result"]["ok"] is False and "7" in job["result"]["problem"]
    assert client.post(f"{API}/verify", json={"witnesses": "1"}, headers=owner).status_code == 400


def test_export_verifies_offline(shared: Shared, tmp_path: Path) -> None:
    _, client, auditor, _ = shared
    r = client.post(f"{API}/export", headers=auditor)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    zipfile.ZipFile(io.BytesIO(r.content)).extractall(tmp_path / "x")
    report = verify_export(tmp_path / "x" / "ledger")
    assert report.ok and report.size >= 40


def test_an_entry_that_is_no_longer_an_event(filled: Workspace, client: TestClient, auditor: dict[str, str]) -> None:
    with filled.store.write() as conn:
        conn.execute(text("UPDATE ledger_entries SET data = :d WHERE seq = 3"), {"d": b"\xffnot json"})
    r = client.get(f"{API}/entries/3", headers=auditor)
    assert r.status_code == 422 and "altered" in r.json()["detail"]
    assert client.get(f"{API}/entries", params={"start": 0, "limit": 10}, headers=auditor).status_code == 422
    assert client.get(f"{API}/entries/4", headers=auditor).status_code == 200
