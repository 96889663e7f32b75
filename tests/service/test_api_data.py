"""/api/v1 datasets, ingest by upload, governed reads and de-identification, through the ASGI client:
each route's success, its refusals (403 recorded as access.denied, 404, 400 with nothing written),
a cancelled ingest leaving nothing, and a 1,000-row read over HTTP equal to the in-process read."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

import complai.service.api.data as data_api
from complai.app.session import Session
from complai.app.workspace import Workspace
from complai.service.app import create_app
from tests.service.conftest import bearer, settings_for

API = "/api/v1"
READ = "fraud_detection"  # a purpose on legitimate interests: readable without consent records

SCHEMA: dict[str, Any] = {
    "name": "people",
    "subject_column": "customer_id",
    "jurisdiction": "EU",
    "retention": "P365D",
    "record_key": "customer_id",
    "purposes": {"credit_scoring": "gdpr.consent", READ: "gdpr.legitimate_interests"},
    "deidentify": {READ: {"pseudonymize": ["full_name"]}},
    "fields": [
        {"name": "customer_id", "type": "string", "category": "user.unique_id", "identifier": "direct"},
        {"name": "full_name", "type": "string", "category": "user.name", "identifier": "direct"},
        {"name": "income", "type": "integer", "category": "user.financial.income", "min": 0, "max": 1_000_000},
        {"name": "segment", "type": "category", "category": "user.behavior", "values": ["retail", "premium"]},
    ],
}


def schema(name: str = "people", **changes: Any) -> dict[str, Any]:
    return {**SCHEMA, "name": name, **changes}


def people(n: int, start: int = 0) -> pd.DataFrame:
    rows = [
        (f"C-{i:05d}", f"Person Number{i}", (i * 7919) % 1_000_000, "premium" if i % 3 == 0 else "retail")
        for i in range(start, start + n)
    ]
    return pd.DataFrame(rows, columns=["customer_id", "full_name", "income", "segment"])


def csv_bytes(frame: pd.DataFrame, sep: str = ",") -> bytes:
    return frame.to_csv(index=False, sep=sep).encode()


def with_people(ws: Workspace, n: int = 20, name: str = "people") -> Session:
    """The dataset registered and `n` rows stored by the owner, in process."""
    owner = ws.session("owner", "administration")
    owner.create_dataset(owner.parse_schema(schema(name)))
    if n:
        owner.ingest(name, people(n))
    return owner


def token_in(ws: Workspace, name: str, *roles: str) -> str:
    owner = ws.session("owner", "security")
    owner.add_principal(name, "service")
    for role in roles:
        owner.grant_role(name, role)
    return owner.create_token(name, "P1D").token


def denied(ws: Workspace) -> list[dict[str, Any]]:
    """The access.denied events recorded so far."""
    entries = ws.session("owner", "audit").ledger_entries(kind="access.denied", limit=10_000)
    return [json.loads(e.data) for e in entries]


def events(ws: Workspace, kind: str) -> list[dict[str, Any]]:
    return [json.loads(e.data) for e in ws.session("owner", "audit").ledger_entries(kind=kind, limit=10_000)]


def events_seq(ws: Workspace, kind: str) -> list[int]:
    return [e.seq for e in ws.session("owner", "audit").ledger_entries(kind=kind, limit=10_000)]


def ledger_size(ws: Workspace) -> int:
    return ws.session("owner", "audit").ledger_head().size


def wait_job(client: TestClient, token: str, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = client.get(f"{API}/jobs/{job_id}", headers=bearer(token)).json()
        if state["state"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return state
        time.sleep(0.02)


def records(ws: Workspace, name: str = "people") -> int:
    (doc,) = ws.session("owner", "administration").describe_datasets(name)
    return int(doc["records"])


def problem_line(r: Any) -> str:
    assert r.headers["content-type"] == "application/problem+json"
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    return detail


def uploads(ws: Workspace) -> Path:
    return Path(ws.path) / "uploads"


def ingest_dirs(ws: Workspace) -> set[str]:
    """The private folders of uploads not yet ingested (or dropped)."""
    return set(os.listdir(uploads(ws))) if uploads(ws).exists() else set()


# --- datasets ------------------------------------------------------------------------------------


def test_create_from_json_and_yaml_list_and_get(client: TestClient, ws: Workspace, owner_token: str) -> None:
    h = bearer(owner_token)
    r = client.post(f"{API}/datasets", headers=h, json={"definition": schema("people")})
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"{API}/datasets/people"
    doc = r.json()
    assert doc["name"] == "people" and doc["schema_version"] == 1 and doc["records"] == 0
    r = client.post(f"{API}/datasets", headers=h, json={"yaml": yaml.safe_dump(schema("people_two"))})
    assert r.status_code == 201, r.text
    listed = client.get(f"{API}/datasets", headers=h).json()
    assert [d["name"] for d in listed] == ["people", "people_two"]
    assert [d["name"] for d in client.get(f"{API}/datasets?limit=1&offset=1", headers=h).json()] == ["people_two"]
    one = client.get(f"{API}/datasets/people", headers=h).json()
    assert one["purposes"] == SCHEMA["purposes"] and one["retention"] == "P365D"
    assert [f["name"] for f in one["fields"]] == ["customer_id", "full_name", "income", "segment"]
    # a second dataset of the same name is a conflict, and nothing changes
    again = client.post(f"{API}/datasets", headers=h, json={"definition": schema("people")})
    assert again.status_code == 409
    assert client.get(f"{API}/datasets/people", headers=h).json()["schema_version"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {"definition": schema("bad"), "yaml": "name: bad"},  # both forms
        {},  # neither
        {"definition": schema("bad"), "extra": 1},  # an unknown field
        {"definition": schema("bad", retention="forever")},  # not a schema
        {"definition": schema("bad", purposes={"astrology": None})},  # not in the taxonomy
        {"yaml": "name: [unclosed"},  # not YAML
        {"definition": "name: bad"},  # a string where an object belongs (not coerced)
    ],
)
def test_a_bad_schema_is_400_in_one_line_and_nothing_is_written(
    client: TestClient, ws: Workspace, owner_token: str, body: dict[str, Any]
) -> None:
    before = ledger_size(ws)
    r = client.post(f"{API}/datasets", headers=bearer(owner_token), json=body)
    assert r.status_code == 400, r.text
    problem_line(r)
    assert ledger_size(ws) == before
    assert client.get(f"{API}/datasets", headers=bearer(owner_token)).json() == []


def test_refusals_are_403_recorded_and_unknown_datasets_404(
    client: TestClient, ws: Workspace, owner_token: str, token_for: Callable[..., str]
) -> None:
    with_people(ws, 3)
    ana = token_for("ana", "analyst")
    before = len(denied(ws))
    r = client.post(f"{API}/datasets", headers=bearer(ana), json={"definition": schema("other")})
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    r = client.get(f"{API}/datasets/people", headers=bearer(ana))
    assert r.status_code == 403
    # a refusal does not tell whether the dataset exists
    assert client.get(f"{API}/datasets/nowhere", headers=bearer(ana)).status_code == 403
    after = denied(ws)
    assert len(after) == before + 3 and {e["actor"] for e in after[before:]} == {"ana"}
    assert client.get(f"{API}/datasets", headers=bearer(ana)).json() == []
    assert client.get(f"{API}/datasets/nowhere", headers=bearer(owner_token)).status_code == 404
    for method, path in [
        ("PUT", "/datasets/nowhere/schema"),
        ("DELETE", "/datasets/nowhere?confirm=nowhere"),
        ("GET", f"/datasets/nowhere/records?purpose={READ}"),
    ]:
        body = {"definition": schema("nowhere")} if method == "PUT" else None
        r = client.request(method, API + path, headers=bearer(owner_token), json=body)
        assert r.status_code == 404, (method, path, r.text)
    assert client.get(f"{API}/datasets/people", headers={"Authorization": "Bearer cpl_nope"}).status_code == 401


def test_alter_dry_run_shows_the_diff_then_alters_and_refuses_a_narrowing(
    client: TestClient, ws: Workspace, owner_token: str
) -> None:
    with_people(ws, 6)
    h = bearer(owner_token)
    wider = schema(
        fields=[*SCHEMA["fields"], {"name": "note", "type": "string", "category": "user.behavior", "nullable": True}]
    )
    before = ledger_size(ws)
    r = client.put(f"{API}/datasets/people/schema", headers=h, json={"definition": wider, "dry_run": True})
    assert r.status_code == 200, r.text
    diff = r.json()
    assert diff["dry_run"] is True and diff["ledger_seq"] is None
    assert (diff["from_version"], diff["version"]) == (1, 2)
    assert any("note" in item for items in diff["changes"].values() for item in items)
    assert ledger_size(ws) == before and client.get(f"{API}/datasets/people", headers=h).json()["schema_version"] == 1
    r = client.put(f"{API}/datasets/people/schema", headers=h, json={"yaml": yaml.safe_dump(wider)})
    assert r.status_code == 200 and r.json()["ledger_seq"] is not None
    assert client.get(f"{API}/datasets/people", headers=h).json()["schema_version"] == 2
    # income narrowed below what is stored: refused with the count, nothing written
    narrow = json.loads(json.dumps(wider))
    narrow["fields"][2]["max"] = 10
    before = ledger_size(ws)
    r = client.put(f"{API}/datasets/people/schema", headers=h, json={"definition": narrow})
    assert r.status_code == 400, r.text
    assert "5 stored record(s) do not fit" in problem_line(r)
    assert ledger_size(ws) == before
    # a schema naming another dataset is refused too
    r = client.put(f"{API}/datasets/people/schema", headers=h, json={"definition": schema("renamed")})
    assert r.status_code == 400 and ledger_size(ws) == before


def test_drop_needs_the_name_confirmed(client: TestClient, ws: Workspace, owner_token: str) -> None:
    with_people(ws, 5)
    h = bearer(owner_token)
    before = ledger_size(ws)
    r = client.delete(f"{API}/datasets/people?confirm=peopl", headers=h)
    assert r.status_code == 400 and "nothing was dropped" in problem_line(r)
    assert client.delete(f"{API}/datasets/people", headers=h).status_code == 400
    assert ledger_size(ws) == before and records(ws) == 5
    r = client.delete(f"{API}/datasets/people?confirm=people", headers=h)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["records_deleted"] == 5 and out["subjects_shredded"] == 5 and out["ledger_seq"] == before
    assert client.get(f"{API}/datasets", headers=h).json() == []


# --- ingest --------------------------------------------------------------------------------------


def test_ingest_an_upload_as_a_job(client: TestClient, ws: Workspace, owner_token: str) -> None:
    with_people(ws, 0)
    h = bearer(owner_token)
    dirs = ingest_dirs(ws)
    consents = pd.DataFrame({"subject": ["C-00000", "C-00001"], "purpose": ["credit_scoring"] * 2})
    r = client.post(
        f"{API}/datasets/people/ingest",
        headers=h,
        files={
            "file": ("people.csv", csv_bytes(people(40)), "text/csv"),
            "consents": ("consents.csv", csv_bytes(consents), "text/csv"),
        },
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"{API}/jobs/{job['id']}" and job["kind"] == "dataset.ingest"
    done = wait_job(client, owner_token, job["id"])
    assert done["state"] == "succeeded", done
    assert done["result"]["rows"] == 40 and done["result"]["consents"] == 2 and done["result"]["mode"] == "insert"
    assert done["progress"] == {"done": 40, "total": 40, "unit": "rows"}
    assert done["result"]["ledger_seq"] == events_seq(ws, "vault.ingested")[-1]
    assert records(ws) == 40
    # the CLI's options: a semicolon CSV in latin-1 with a renamed column, appended
    semi = "Kunde;full_name;income;segment\nC-09999;Zoë Brandt;10;retail\nC-00001;Again;1;retail\n"
    r = client.post(
        f"{API}/datasets/people/ingest",
        headers=h,
        data={"mode": "append", "delimiter": ";", "encoding": "latin-1", "map": ["Kunde=customer_id"]},
        files={"file": ("more.txt", semi.encode("latin-1"), "text/csv")},
    )
    assert r.status_code == 202, r.text
    done = wait_job(client, owner_token, r.json()["id"])
    assert done["state"] == "succeeded", done
    assert (done["result"]["rows"], done["result"]["skipped_existing_rows"]) == (1, 1)
    # JSON Lines, named by the format field; upsert by the record key
    lines = "".join(json.dumps(row) + "\n" for row in people(2).assign(income=5).to_dict("records"))
    r = client.post(
        f"{API}/datasets/people/ingest",
        headers=h,
        data={"format": "jsonl", "mode": "upsert"},
        files={"file": ("rows", lines.encode(), "application/x-ndjson")},
    )
    done = wait_job(client, owner_token, r.json()["id"])
    assert done["state"] == "succeeded" and done["result"]["updated"] == 2, done
    assert records(ws) == 41
    assert ingest_dirs(ws) == dirs  # every upload's private copy is gone


def test_a_bad_ingest_is_refused_and_stores_nothing(
    client: TestClient, ws: Workspace, owner_token: str, token_for: Callable[..., str]
) -> None:
    with_people(ws, 3)
    h = bearer(owner_token)
    dirs = ingest_dirs(ws)
    upload = {"file": ("people.csv", csv_bytes(people(3, start=10)), "text/csv")}
    before = ledger_size(ws)
    for data in ({"mode": "merge"}, {"format": "xlsx"}, {"delimiter": ";;"}, {"encoding": "klingon"}, {"map": "x"}):
        r = client.post(f"{API}/datasets/people/ingest", headers=h, data=data, files=upload)
        assert r.status_code == 400, (data, r.text)
        problem_line(r)
    assert client.post(f"{API}/datasets/people/ingest", headers=h, data={"mode": "insert"}).status_code == 400
    assert ledger_size(ws) == before
    # a refused principal: 403, recorded, and the file is not kept
    ana = token_for("ana", "analyst")
    r = client.post(f"{API}/datasets/people/ingest", headers=bearer(ana), files=upload)
    assert r.status_code == 403 and denied(ws)[-1]["actor"] == "ana"
    assert client.post(f"{API}/datasets/nowhere/ingest", headers=h, files=upload).status_code == 404
    # rows that break the schema: the job fails with the problem, and nothing is stored
    bad = people(3, start=20).assign(income=-1)
    r = client.post(f"{API}/datasets/people/ingest", headers=h, files={"file": ("bad.csv", csv_bytes(bad), "text/csv")})
    done = wait_job(client, owner_token, r.json()["id"])
    assert done["state"] == "failed" and done["problem"]["status"] == 400, done
    assert records(ws) == 3
    assert ingest_dirs(ws) == dirs


def test_an_upload_is_multipart_bounded_and_leaves_nothing_when_refused(
    client: TestClient, ws: Workspace, owner_token: str
) -> None:
    with_people(ws, 0)
    h = bearer(owner_token)
    url = f"{API}/datasets/people/ingest"
    data = csv_bytes(people(3))
    before = ledger_size(ws)
    refused = [
        client.post(url, headers=h, json={"file": "x"}),  # not multipart
        client.post(url, headers={**h, "Content-Type": "multipart/form-data; boundary=zz"}, content=b"--zz\r\nbroken"),
        client.post(url, headers=h, data={"colour": "red"}, files={"file": ("p.csv", data, "text/csv")}),
        client.post(url, headers=h, data={"mode": ["append", "upsert"]}, files={"file": ("p.csv", data, "text/csv")}),
        client.post(
            url, headers=h, files=[("file", ("a.csv", data, "text/csv")), ("file", ("b.csv", data, "text/csv"))]
        ),
        client.post(url, headers=h, data={"delimiter": "x" * 20_000}, files={"file": ("p.csv", data, "text/csv")}),
    ]
    for r in refused:
        assert r.status_code == 400, r.text
        problem_line(r)
    # over the upload limit (8 MiB in these tests): 413, before or while it is read
    big = client.post(url, headers=h, files={"file": ("big.csv", b"x" * (9 << 20), "text/csv")})
    assert big.status_code == 413

    def chunked() -> Iterator[bytes]:  # no Content-Length: refused once the streamed body passes the limit
        yield b'--zz\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\n'
        for _ in range(10):
            yield b"x" * (1 << 20)
        yield b"\r\n--zz--\r\n"

    multipart = {**h, "Content-Type": "multipart/form-data; boundary=zz"}
    assert client.post(url, headers=multipart, content=chunked()).status_code == 413
    assert ingest_dirs(ws) == set() and ledger_size(ws) == before and records(ws) == 0


def test_an_upload_left_by_a_stopped_server_is_removed_by_the_next(
    client: TestClient, ws: Workspace, owner_token: str
) -> None:
    with_people(ws, 0)
    uploads(ws).mkdir(mode=0o700)
    left, recent = uploads(ws) / "ingest-left", uploads(ws) / "ingest-recent"
    for folder in (left, recent):
        folder.mkdir(mode=0o700)
        (folder / "file").write_bytes(csv_bytes(people(2)))
    os.utime(left, (time.time() - 2 * data_api.UPLOAD_STALE_S,) * 2)
    r = client.post(
        f"{API}/datasets/people/ingest",
        headers=bearer(owner_token),
        files={"file": ("p.csv", csv_bytes(people(3)), "text/csv")},
    )
    assert wait_job(client, owner_token, r.json()["id"])["state"] == "succeeded"
    assert ingest_dirs(ws) == {"ingest-recent"}


def test_a_cancelled_ingest_stores_nothing(
    client: TestClient, ws: Workspace, owner_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled once the job runs, before its transaction: the job ends cancelled, no record, no
    ingest event, and the upload's private copy (0600, in a 0700 folder) is gone."""
    with_people(ws, 0)
    reached, go = threading.Event(), threading.Event()
    seen: dict[str, int] = {}
    original = Session.job_cancel_requested

    def paused(self: Session, job_id: str) -> bool:
        if not reached.is_set():
            for d in ingest_dirs(ws):
                folder = uploads(ws) / d
                seen["root"] = stat.S_IMODE(uploads(ws).stat().st_mode)
                seen["folder"] = stat.S_IMODE(folder.stat().st_mode)
                seen["file"] = stat.S_IMODE((folder / "file").stat().st_mode)
            reached.set()
            go.wait(30)
        return original(self, job_id)

    monkeypatch.setattr(Session, "job_cancel_requested", paused)
    dirs = ingest_dirs(ws)
    before = len(events(ws, "vault.ingested"))
    r = client.post(
        f"{API}/datasets/people/ingest",
        headers=bearer(owner_token),
        files={"file": ("people.csv", csv_bytes(people(30)), "text/csv")},
    )
    assert r.status_code == 202
    job_id = r.json()["id"]
    assert reached.wait(30)
    assert seen == {"root": 0o700, "folder": 0o700, "file": 0o600}
    cancel = client.delete(f"{API}/jobs/{job_id}", headers=bearer(owner_token))
    assert cancel.status_code == 200 and cancel.json()["cancel_requested"] is True
    go.set()
    done = wait_job(client, owner_token, job_id)
    assert done["state"] == "cancelled", done
    assert records(ws) == 0 and len(events(ws, "vault.ingested")) == before
    assert ingest_dirs(ws) == dirs


def test_an_ingest_cancelled_while_queued_leaves_no_file(ws: Workspace, owner_token: str) -> None:
    """One job thread, held by another job: the ingest waits queued, is cancelled, never runs, and the
    upload's private copy goes with it."""
    with_people(ws, 0)
    settings = dataclasses.replace(settings_for(ws), job_threads=1)
    release = threading.Event()
    dirs = ingest_dirs(ws)
    with TestClient(create_app(settings, workspace=ws), raise_server_exceptions=False) as client:
        blocker = client.app.state.jobs.submit(
            ws.session("owner", "administration"), "test.hold", lambda s, p: {"held": release.wait(30)}
        )
        r = client.post(
            f"{API}/datasets/people/ingest",
            headers=bearer(owner_token),
            files={"file": ("people.csv", csv_bytes(people(5)), "text/csv")},
        )
        job_id = r.json()["id"]
        assert len(ingest_dirs(ws) - dirs) == 1
        cancelled = client.delete(f"{API}/jobs/{job_id}", headers=bearer(owner_token)).json()
        assert cancelled["state"] == "cancelled"
        release.set()
        assert wait_job(client, owner_token, blocker.id)["state"] == "succeeded"
        assert wait_job(client, owner_token, job_id)["state"] == "cancelled"
        deadline = time.monotonic() + 10
        while ingest_dirs(ws) != dirs and time.monotonic() < deadline:
            time.sleep(0.02)
    assert ingest_dirs(ws) == dirs and records(ws) == 0


# --- governed reads ------------------------------------------------------------------------------


def test_records_page_as_json_csv_and_parquet(client: TestClient, ws: Workspace, owner_token: str) -> None:
    with_people(ws, 25)
    h = bearer(owner_token)
    r = client.get(f"{API}/datasets/people/records?purpose={READ}&limit=10&offset=20", headers=h)
    assert r.status_code == 200, r.text
    page = r.json()
    assert (page["returned"], page["next_offset"], page["purpose"]) == (5, None, READ)
    assert page["deidentification"] == {"pseudonymized": ["full_name"]}
    assert all(not row["full_name"].startswith("Person") for row in page["rows"])  # pseudonymised as declared
    read = events(ws, "vault.read")[-1]
    assert read["rows"] == 5 and read["subjects"] == 5 and read["records_in_dataset"] == 25
    assert page["ledger_seq"] == ledger_size(ws) - 1
    # columns, repeated or comma-separated
    r = client.get(f"{API}/datasets/people/records?purpose={READ}&columns=customer_id,income&limit=3", headers=h)
    assert r.json()["columns"] == ["customer_id", "income"] and r.json()["next_offset"] == 3
    # CSV by Accept or format; Parquet by format
    r = client.get(f"{API}/datasets/people/records?purpose={READ}&limit=4", headers={**h, "Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["x-complai-next-offset"] == "4" and int(r.headers["x-complai-ledger-seq"]) > 0
    frame = pd.read_csv(io.StringIO(r.text))
    assert list(frame.columns) == ["customer_id", "full_name", "income", "segment"] and len(frame) == 4
    r = client.get(f"{API}/datasets/people/records?purpose={READ}&format=parquet", headers=h)
    assert r.headers["content-type"] == data_api.PARQUET
    table = pd.read_parquet(io.BytesIO(r.content))
    assert len(table) == 25 and "x-complai-next-offset" not in r.headers
    # each page request is one recorded read
    assert len(events(ws, "vault.read")) == 4
    doc = client.get(f"{API}/openapi.json").json()
    content = doc["paths"][f"{API}/datasets/{{name}}/records"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"application/json", "text/csv", data_api.PARQUET}


def test_a_read_refused_or_invalid_writes_only_the_refusal(
    client: TestClient, ws: Workspace, owner_token: str, token_for: Callable[..., str]
) -> None:
    with_people(ws, 4)
    h = bearer(owner_token)
    ana = token_for("ana", "analyst")
    before = ledger_size(ws)
    for query in ("columns=nope", "limit=0", "limit=10001", "offset=-1", "format=xml", "limit=1.5"):
        r = client.get(f"{API}/datasets/people/records?purpose={READ}&{query}", headers=h)
        assert r.status_code == 400, (query, r.text)
        problem_line(r)
    assert client.get(f"{API}/datasets/people/records", headers=h).status_code == 400  # no purpose
    assert ledger_size(ws) == before
    # a purpose the dataset does not declare: refused, nothing read
    r = client.get(f"{API}/datasets/people/records?purpose=marketing", headers=h)
    assert r.status_code == 400 and not events(ws, "vault.read")
    n = len(denied(ws))
    r = client.get(f"{API}/datasets/people/records?purpose={READ}", headers=bearer(ana))
    assert r.status_code == 403 and len(denied(ws)) == n + 1 and denied(ws)[-1]["actor"] == "ana"
    assert not events(ws, "vault.read")


def test_a_thousand_rows_over_http_equal_the_session_read(client: TestClient, ws: Workspace, owner_token: str) -> None:
    with_people(ws, 1000)
    h = bearer(owner_token)
    rows: list[dict[str, Any]] = []
    offset: int | None = 0
    requests = 0
    while offset is not None:
        page = client.get(f"{API}/datasets/people/records?purpose={READ}&limit=300&offset={offset}", headers=h).json()
        rows += page["rows"]
        offset, requests = page["next_offset"], requests + 1
    assert requests == 4 and len(rows) == 1000
    local = ws.session("owner", READ).read("people")
    # the same rows (pages come in their own stable order: by when stored, then record id)
    by_id = {r["customer_id"]: r for r in json.loads(local.to_json(orient="records"))}
    assert len(local) == 1000 and len({r["customer_id"] for r in rows}) == 1000
    assert all(r == by_id[r["customer_id"]] for r in rows)
    assert [e["rows"] for e in events(ws, "vault.read")] == [300, 300, 300, 100, 1000]


# --- de-identification -----------------------------------------------------------------------------


def test_deid_text_and_table(client: TestClient, ws: Workspace, owner_token: str) -> None:
    h = bearer(owner_token)
    texts = ["Write to jane.doe@example.org or call +44 20 7946 0958.", "nothing here"]
    r = client.post(f"{API}/deid/text?purpose=customer_support", headers=h, json={"texts": texts, "regex_only": True})
    assert r.status_code == 200, r.text
    out = r.json()
    assert "jane.doe@example.org" not in out["results"][0]["text"] and out["results"][1]["text"] == "nothing here"
    assert {c["entity"] for c in out["results"][0]["changes"]} >= {"EMAIL_ADDRESS"}
    event = events(ws, "deid.text")[-1]
    assert out["ledger_seq"] == ledger_size(ws) - 1 and event["documents"] == 2
    assert "jane" not in json.dumps(event)
    table = [
        {"name": f"N{i}", "age": 20 + i % 30, "zip": f"{10000 + i % 7}", "dx": "a" if i % 2 else "b"} for i in range(60)
    ]
    r = client.post(
        f"{API}/deid/table?purpose=research",
        headers=h,
        json={"rows": table, "quasi": ["age", "zip"], "k": 5, "numeric": ["age"], "keep": []},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["report"]["achieved"]["k"] >= 5 and all("name" not in row for row in body["rows"])
    before = ledger_size(ws)
    for bad in ({"texts": []}, {"texts": ["x"], "regex_only": "yes"}, {"texts": "x"}):
        r = client.post(f"{API}/deid/text?purpose=customer_support", headers=h, json=bad)
        assert r.status_code == 400, (bad, r.text)
    r = client.post(f"{API}/deid/table?purpose=research", headers=h, json={"rows": table, "quasi": ["nope"], "k": 5})
    assert r.status_code == 400 and ledger_size(ws) == before


def test_a_page_of_a_k_anonymised_read_is_a_slice_of_the_whole(
    client: TestClient, ws: Workspace, owner_token: str
) -> None:
    """k holds over every row the purpose may see; a page is a slice of that, recorded as its own rows."""
    fields = [dict(f) for f in SCHEMA["fields"]]
    fields[2]["identifier"] = fields[3]["identifier"] = "quasi"
    owner = ws.session("owner", "administration")
    owner.create_dataset(owner.parse_schema(schema(fields=fields, deidentify={READ: {"k": 5}})))
    owner.ingest("people", people(40))
    page = client.get(f"{API}/datasets/people/records?purpose={READ}&offset=10&limit=10", headers=bearer(owner_token))
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["columns"] == ["income", "segment"] and body["deidentification"]["k_anonymity"]["achieved_k"] >= 5
    whole = json.loads(ws.session("owner", READ).read("people").to_json(orient="records"))
    for row in body["rows"]:  # every row of the page is a row of the whole k-anonymised read
        assert row in whole
        whole.remove(row)
    assert [(e["rows"], e["subjects"]) for e in events(ws, "vault.read")] == [(10, 10), (40, 40)]
