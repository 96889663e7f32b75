"""Paged governed reads: rows come in one stable order (when stored, then record id), pages cut from it
neither overlap nor skip, and a page whose de-identification works row by row decrypts only its own
records; a k-anonymised page still decrypts every row (k holds over the whole read)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

import complai.vault.reads as reads
from complai.app.workspace import Workspace
from complai.clock import ManualClock
from tests.service.test_api_data import READ, SCHEMA, people, schema, with_people


def counting_opens(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    opened = {"n": 0}
    real = reads.open_record

    def counted(*args: Any, **kwargs: Any) -> Any:
        opened["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(reads, "open_record", counted)
    return opened


def test_pages_partition_the_read_in_its_order(any_ws: Workspace, clock: ManualClock) -> None:
    owner = with_people(any_ws, 0)
    owner.ingest("people", people(25))
    clock.advance(timedelta(seconds=1))
    owner.ingest("people", people(20, start=25))  # a second batch, stored later
    session = any_ws.session("owner", READ)
    pages = [list(session.read_page("people", offset=o, limit=10).frame["customer_id"]) for o in range(0, 45, 10)]
    whole = [c for p in pages for c in p]
    assert sorted(whole) == sorted(session.read("people")["customer_id"]) == sorted(people(45)["customer_id"])
    assert set(whole[:25]) == {f"C-{i:05d}" for i in range(25)}  # the earlier batch first
    # the same page twice: the same rows
    again = list(session.read_page("people", offset=10, limit=10).frame["customer_id"])
    assert again == pages[1]


def test_a_row_by_row_page_decrypts_only_its_records(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    with_people(ws, 60)
    opened = counting_opens(monkeypatch)
    page = ws.session("owner", READ).read_page("people", offset=20, limit=7)
    assert len(page.frame) == 7 and opened["n"] == 7


def test_a_k_anonymised_page_still_decrypts_every_row(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    fields = [dict(f) for f in SCHEMA["fields"]]
    fields[2]["identifier"] = fields[3]["identifier"] = "quasi"
    owner = ws.session("owner", "administration")
    owner.create_dataset(owner.parse_schema(schema(fields=fields, deidentify={READ: {"k": 5}})))
    owner.ingest("people", people(40))
    opened = counting_opens(monkeypatch)
    page = ws.session("owner", READ).read_page("people", offset=10, limit=10)
    assert len(page.frame) == 10 and opened["n"] == 40
    assert page.achieved_k is not None and page.achieved_k >= 5
