"""Hostile multipart uploads to the ingest route: a boundary the multipart parser will not take (over
RFC 2046's 70 characters) is invalid input (400), not an internal error, and leaves no upload behind."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from tests.service.conftest import bearer
from tests.service.test_api_data import with_people

CSV = b"customer_id,full_name,income,segment\nM-1,a,1,retail\n"


def test_an_overlong_boundary_is_invalid_input(client: TestClient, ws: Workspace, owner_token: str) -> None:
    with_people(ws, 0)
    boundary = b"b" * 5000
    body = (
        b"--"
        + boundary
        + b'\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
        + CSV
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )
    headers = {**bearer(owner_token), "Content-Type": "multipart/form-data; boundary=" + boundary.decode()}
    r = client.post("/api/v1/datasets/people/ingest", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    uploads = Path(ws.path) / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())
