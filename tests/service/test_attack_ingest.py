"""An ingest-only principal reaches no further through an upload than through the routes it is refused:
consents sent with an ingest may name only the subjects that ingest creates (POST /consents needs
admin), and mode replace, which deletes the dataset's other records, needs admin on the dataset (as
DELETE /datasets/{name} does). Each attack's job fails with a 403 problem, and the ledger gains only
the access.denied entry: no record, subject or consent changes. The legitimate flows still work."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from complai.app.workspace import Workspace
from complai.store.tables import consents, records, subjects
from tests.service.api_helpers import kinds_since, size
from tests.service.conftest import bearer
from tests.service.test_api_data import csv_bytes, wait_job

API = "/api/v1"
PURPOSE = "administration"
COLUMNS = ["customer_id", "full_name", "email", "income", "segment"]


def _rows(*ids: str) -> bytes:
    frame = pd.DataFrame([(i, f"Name {i}", f"{i.lower()}@example.com", 10, "retail") for i in ids], columns=COLUMNS)
    return csv_bytes(frame)


def _consents(*ids: str) -> bytes:
    return csv_bytes(pd.DataFrame([(i, "marketing") for i in ids], columns=["subject", "purpose"]))


def _tables(ws: Workspace) -> tuple[int, int, int]:
    """(records, subjects, consent rows)."""
    with ws.store.read() as conn:
        return tuple(  # type: ignore[return-value]
            int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in (records, subjects, consents)
        )


def _marketing(ws: Workspace) -> set[str]:
    return set(ws.session("owner", "marketing").read("customers", ["customer_id"])["customer_id"])


def _ingest(client: TestClient, token: str, data: bytes, given: bytes | None = None, **form: str) -> dict[str, Any]:
    files = {"file": ("rows.csv", data, "text/csv")}
    if given is not None:
        files["consents"] = ("consents.csv", given, "text/csv")
    r = client.post(
        f"{API}/datasets/customers/ingest", params={"purpose": PURPOSE}, headers=bearer(token), data=form, files=files
    )
    assert r.status_code == 202, r.text
    return wait_job(client, token, r.json()["id"])


def _collector(ws: Workspace, token_for: Callable[..., str]) -> str:
    token = token_for("collector")
    ws.session("owner", "security").add_rule("collector", "customers", "ingest", PURPOSE)
    return token


def _refused(ws: Workspace, done: dict[str, Any], before: int, action: str, dataset: str) -> None:
    assert done["state"] == "failed" and done["problem"]["status"] == 403, done
    assert "\n" not in done["problem"]["detail"]
    assert kinds_since(ws, before) == ["access.denied"]
    (entry,) = ws.session("owner", "audit").ledger_entries(start=before, limit=10)
    denied = json.loads(entry.data)
    assert (denied["actor"], denied["action"], denied["dataset"]) == ("collector", action, dataset)


def test_consents_for_stored_subjects_sent_with_an_ingest_are_refused(
    client: TestClient, customers: Workspace, token_for: Callable[..., str]
) -> None:
    ws = customers
    token = _collector(ws, token_for)
    # the direct route is refused to the collector
    r = client.post(f"{API}/consents", headers=bearer(token), json={"subject": "C-1003", "purpose": "marketing"})
    assert r.status_code == 403, r.text
    tables, readable = _tables(ws), _marketing(ws)
    assert readable == {"C-1001", "C-1002"}
    for data, given in (
        (_rows("N-1"), _consents("C-1003", "C-1004")),  # others' consents beside a one-row file
        (_rows("N-1", "C-1003"), _consents("C-1003")),  # a row brought along for the stored subject
    ):
        before = size(ws)
        _refused(ws, _ingest(client, token, data, given, mode="append"), before, "admin", "*")
        assert _tables(ws) == tables
    assert _marketing(ws) == readable


def test_consents_for_the_subjects_an_upload_creates_are_recorded(
    client: TestClient, customers: Workspace, token_for: Callable[..., str]
) -> None:
    token = _collector(customers, token_for)
    done = _ingest(client, token, _rows("N-1", "N-2"), _consents("N-1", "N-2"))
    assert done["state"] == "succeeded", done
    assert (done["result"]["rows"], done["result"]["consents"]) == (2, 2)
    assert _marketing(customers) == {"C-1001", "C-1002", "N-1", "N-2"}


def test_replace_by_an_ingest_only_principal_is_refused_and_deletes_nothing(
    client: TestClient, customers: Workspace, token_for: Callable[..., str]
) -> None:
    ws = customers
    token = _collector(ws, token_for)
    r = client.delete(f"{API}/datasets/customers", params={"confirm": "customers"}, headers=bearer(token))
    assert r.status_code == 403, r.text
    tables, before = _tables(ws), size(ws)
    # refused by the route itself, once it has read the mode and before any job: a 403 at once
    r = client.post(
        f"{API}/datasets/customers/ingest",
        params={"purpose": PURPOSE},
        headers=bearer(token),
        data={"mode": "replace"},
        files={"file": ("rows.csv", _rows("N-1"), "text/csv")},
    )
    assert r.status_code == 403 and "\n" not in r.json()["detail"], r.text
    assert kinds_since(ws, before) == ["access.denied"]
    (entry,) = ws.session("owner", "audit").ledger_entries(start=before, limit=10)
    denied = json.loads(entry.data)
    assert (denied["actor"], denied["action"], denied["dataset"]) == ("collector", "admin", "customers")
    assert _tables(ws) == tables and tables[0] == 4
    assert not any((Path(ws.path) / "uploads").glob("*/*"))  # nothing of the upload left behind
    # with admin on the dataset (what dropping it needs), the same upload replaces its records
    ws.session("owner", "security").add_rule("collector", "customers", "admin", PURPOSE)
    done = _ingest(client, token, _rows("N-1"), mode="replace")
    assert done["state"] == "succeeded", done
    assert (done["result"]["rows"], done["result"]["deleted"]) == (1, 4)
    assert _tables(ws)[0] == 1
