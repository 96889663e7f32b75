"""The service keeps opened records between reads (vault/readcache.py) as its settings say, serves the
same answers from them as the store would give, and empties them after an erasure made elsewhere even
when no request comes."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

import complai.service.app as service_app
from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.config import ServiceSettings
from complai.service.app import create_app
from tests.service.test_api_data import READ, token_in, with_people

PAGE = {"purpose": READ, "limit": 50}


@pytest.fixture
def other(ws: Workspace, clock: ManualClock) -> Iterator[Workspace]:
    """Another process's handle on the same workspace (it keeps no records)."""
    w = Workspace.open(ws.path, clock=clock)
    try:
        yield w
    finally:
        w.close()


def test_reads_are_served_from_kept_records_and_an_erasure_elsewhere_empties_them(
    ws: Workspace, other: Workspace, service_settings: ServiceSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_app, "LOOK_EVERY_S", 0.05)
    with_people(ws, 20)
    token = token_in(ws, "reader", "analyst")
    ws.session("owner", "security").add_rule("reader", "people", "read", READ)
    settings = dataclasses.replace(service_settings, read_cache_records=1000)
    with TestClient(create_app(settings, workspace=ws)) as c:
        auth = {"Authorization": f"Bearer {token}"}
        first = c.get("/api/v1/datasets/people/records", params=PAGE, headers=auth).json()["rows"]
        cache = ws.vault.read_cache
        assert cache is not None and cache.held == 20
        assert c.get("/api/v1/datasets/people/records", params=PAGE, headers=auth).json()["rows"] == first
        assert cache.fills == 1 and cache.hits == 1
        other.session("owner", "subject_request").erase_subject("C-00002")
        deadline = time.monotonic() + 30
        while cache.held and time.monotonic() < deadline:  # no request: the worker's own look
            time.sleep(0.05)
        assert cache.held == 0
        after = c.get("/api/v1/datasets/people/records", params=PAGE, headers=auth).json()["rows"]
        assert len(after) == 19 and "C-00002" not in str(after) and len(first) == 20
    assert ws.vault.read_cache is None  # nothing kept once the service stopped


def test_a_service_set_to_keep_none_keeps_none(ws: Workspace, service_settings: ServiceSettings) -> None:
    with TestClient(create_app(dataclasses.replace(service_settings, read_cache_records=0), workspace=ws)):
        assert ws.vault.read_cache is None
