"""Opened records kept between reads (vault/readcache.py): a read served from them is the read the store
would give at that moment, whatever happened in between (an ingest, an erasure, a rectification, a
restriction, an objection, a consent withdrawn, records expiring, a key rotation, a schema change), from
this workspace or another process on the same store; and an erasure empties them without a read."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import delete, func, select, update

import complai.vault.reads as reads
from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.errors import IntegrityError
from complai.events import _REGISTRY
from complai.store.tables import ledger_entries, records
from complai.vault.readcache import UNCHANGING
from tests.service.test_api_data import READ, SCHEMA, people, schema, with_people

OWNER = "owner"
CONSENTED = "credit_scoring"  # a purpose on consent: a subject is seen only while their consent lasts


@pytest.fixture
def cached(ws: Workspace, clock: ManualClock) -> Iterator[tuple[Workspace, Workspace]]:
    """The workspace keeping opened records, and a second handle on the same store and keys keeping none
    (another process: the reference for every read, and a writer the first hears of only through the
    ledger)."""
    other = Workspace.open(ws.path, clock=clock)
    ws.keep_opened_records(10_000)
    try:
        yield ws, other
    finally:
        other.close()


def counting_opens(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    opened = {"n": 0}
    real = reads.open_record

    def counted(*args: Any, **kwargs: Any) -> Any:
        opened["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(reads, "open_record", counted)
    return opened


def rows(ws: Workspace, purpose: str = READ, **page: int) -> list[tuple[Any, ...]]:
    session = ws.session(OWNER, purpose)
    frame = session.read_page("people", **page).frame if page else session.read("people")
    return [tuple(r) for r in frame.astype(object).where(frame.notna(), None).itertuples(index=False)]


def same(ws: Workspace, other: Workspace, purpose: str = READ) -> list[tuple[Any, ...]]:
    """The cached workspace's read, asserted equal (rows and their order) to the uncached one's."""
    got = rows(ws, purpose)
    assert got == rows(other, purpose)
    for offset in (0, 7):
        assert rows(ws, purpose, offset=offset, limit=9) == rows(other, purpose, offset=offset, limit=9)
    return got


def ids(got: list[tuple[Any, ...]]) -> set[str]:
    return {r[0] for r in got}


def test_a_second_read_opens_no_record(cached: tuple[Workspace, Workspace], monkeypatch: pytest.MonkeyPatch) -> None:
    ws, other = cached
    with_people(ws, 30).set_budget("people", 10.0, 1e-6)
    page = rows(other, offset=5, limit=10)
    opened = counting_opens(monkeypatch)
    first = rows(ws)
    assert opened["n"] == 30
    assert rows(ws) == first and rows(ws, offset=5, limit=10) == page
    assert opened["n"] == 30
    # a DP count too (its own columns, the same opened records)
    ws.session(OWNER, READ).dp_query("SELECT COUNT(*) FROM people", 0.5)
    assert opened["n"] == 30


def test_every_change_is_seen_at_the_next_read(
    cached: tuple[Workspace, Workspace], clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, other = cached
    with_people(ws, 24)
    assert len(same(ws, other)) == 24
    admin = other.session(OWNER, "administration")
    rights = other.session(OWNER, "subject_request")

    admin.ingest("people", people(6, start=24), mode="append")
    assert ids(same(ws, other)) == {f"C-{i:05d}" for i in range(30)}

    rights.erase_subject("C-00003")
    assert "C-00003" not in ids(same(ws, other))

    rights.rectify("C-00004", "people", "income", 123)
    got = same(ws, other)
    income = next(r for r in got if r[0] == "C-00004")[2]
    assert income == 123

    rights.restrict("C-00005", reason="accuracy disputed")
    assert "C-00005" not in ids(same(ws, other))
    rights.restrict("C-00005", lift=True)
    assert "C-00005" in ids(same(ws, other))

    rights.object("C-00006", READ)
    assert "C-00006" not in ids(same(ws, other))

    other.session(OWNER, "security").rotate_keys()
    same(ws, other)

    note = {"name": "note", "type": "string", "category": "user.content"}
    admin.alter_dataset("people", schema(fields=[*SCHEMA["fields"], note]))
    got = same(ws, other)
    assert len(got[0]) == 5

    # the records expire (retention P365D): no event, only time
    clock.advance(timedelta(days=366))
    assert same(ws, other) == []


def test_consent_that_ends_later_is_followed(cached: tuple[Workspace, Workspace], clock: ManualClock) -> None:
    ws, other = cached
    owner = with_people(ws, 0)
    frame = people(10)
    now = clock.now()
    consents = pd.DataFrame(
        {
            "subject": frame["customer_id"],
            "purpose": CONSENTED,
            "granted_at": [now] * 10,
            # subject i's consent ends i+1 hours from now
            "withdrawn_at": [now + timedelta(hours=i + 1) for i in range(10)],
        }
    )
    owner.ingest("people", frame, consents)
    assert len(same(ws, other, CONSENTED)) == 10
    for hour in range(1, 11):
        clock.advance(timedelta(hours=1))
        assert len(same(ws, other, CONSENTED)) == 10 - hour


def test_an_erasure_elsewhere_empties_the_cache_without_a_read(cached: tuple[Workspace, Workspace]) -> None:
    ws, other = cached
    with_people(ws, 12)
    rows(ws)
    cache = ws.vault.read_cache
    assert cache is not None and cache.held == 12
    ws.look_for_changes()
    assert cache.held == 12  # nothing changed
    other.session(OWNER, "subject_request").erase_subject("C-00001")
    ws.look_for_changes()
    assert cache.held == 0


def test_reads_and_answers_leave_the_cache_in_place(
    cached: tuple[Workspace, Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, other = cached
    with_people(ws, 12).set_budget("people", 10.0, 1e-6)
    rows(ws)
    opened = counting_opens(monkeypatch)
    other.session(OWNER, READ).read("people")
    other.session(OWNER, READ).dp_query("SELECT COUNT(*) FROM people", 0.5)
    other.session(OWNER, "security").create_token(OWNER, "PT1H")
    rows(ws)
    assert opened["n"] == 24  # the other handle's read and DP count opened 12 each; this one opened none


def test_a_rewound_ledger_empties_the_cache(cached: tuple[Workspace, Workspace]) -> None:
    """A ledger that no longer holds the entry last looked at (a restore to an earlier state) leaves
    nothing kept from after it."""
    ws, _ = cached
    with_people(ws, 8)
    rows(ws)
    cache = ws.vault.read_cache
    assert cache is not None and cache.held == 8
    ws.look_for_changes()  # the last entry (the read's own) is looked at
    with ws.store.write() as conn:
        last = conn.execute(select(func.max(ledger_entries.c.seq))).scalar_one()
        conn.execute(delete(ledger_entries).where(ledger_entries.c.seq == last))
    ws.look_for_changes()
    assert cache.held == 0


def test_the_kinds_that_keep_it_are_real_and_leave_records_alone() -> None:
    assert UNCHANGING <= set(_REGISTRY)
    changing = {
        "vault.ingested",
        "subject.erased",
        "subject.rectified",
        "subject.restricted",
        "subject.objected",
        "consent.granted",
        "consent.withdrawn",
        "retention.swept",
        "keys.rotated",
        "dataset.registered",
        "dataset.altered",
        "dataset.dropped",
        "backup.restored",
        "request.updated",
        "store.migrated",
    }
    assert changing <= set(_REGISTRY) and not changing & UNCHANGING


def test_the_cache_holds_no_more_than_its_size(ws: Workspace, tmp_path: Path) -> None:
    ws.keep_opened_records(10)
    with_people(ws, 8, name="people")
    with_people(ws, 0, name="others").ingest("others", people(6))
    rows(ws)
    cache = ws.vault.read_cache
    assert cache is not None and cache.held == 8
    ws.session(OWNER, READ).read("others")
    assert cache.held == 6  # the first went to make room
    with_people(ws, 0, name="large").ingest("large", people(11))
    ws.session(OWNER, READ).read("large")
    assert cache.held == 0  # emptied by the ingest; too large to keep


def test_a_record_edited_at_rest_is_found_once_the_kept_copy_is_old(ws: Workspace) -> None:
    ws.vault.keep_opened(100, max_age_s=0.3)
    with_people(ws, 5)
    rows(ws)
    with ws.store.write() as conn:
        rid = conn.execute(select(records.c.rid).limit(1)).scalar_one()
        data = bytearray(conn.execute(select(records.c.data).where(records.c.rid == rid)).scalar_one())
        data[-1] ^= 1
        conn.execute(update(records).where(records.c.rid == rid).values(data=bytes(data)))
    assert len(rows(ws)) == 5  # the copy opened before the edit
    time.sleep(0.4)
    with pytest.raises(IntegrityError, match="fails authentication"):
        rows(ws)


def test_a_frame_changed_by_its_reader_leaves_the_kept_records_alone(cached: tuple[Workspace, Workspace]) -> None:
    ws, other = cached
    with_people(ws, 6)
    session = ws.session(OWNER, READ)
    frame = session.read("people")
    frame.loc[:, "income"] = -1
    frame.loc[:, "customer_id"] = "changed"
    page = session.read_page("people", offset=0, limit=3).frame
    page.loc[:, "segment"] = None
    assert same(ws, other) == rows(other) and -1 not in {r[2] for r in rows(ws)}


def test_concurrent_reads_after_a_change_open_the_records_once(
    cached: tuple[Workspace, Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, _ = cached
    with_people(ws, 40)
    lock, opened = threading.Lock(), {"n": 0}
    real = reads.open_record

    def counted(*args: Any, **kwargs: Any) -> Any:
        with lock:
            opened["n"] += 1
        time.sleep(0.001)  # slow enough that the reads overlap
        return real(*args, **kwargs)

    monkeypatch.setattr(reads, "open_record", counted)
    start = threading.Barrier(8)

    def one() -> int:
        start.wait()
        return len(ws.session(OWNER, READ).read("people"))

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda _: one(), range(8))) == [40] * 8
    assert opened["n"] == 40  # one read opened them; the other seven waited for it


def test_a_schema_changed_between_reading_it_and_the_read_is_read_again(
    cached: tuple[Workspace, Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process changes the purpose's lawful basis (to consent, which nobody gave) after the read
    took the schema and before its snapshot: the read, and every later one, sees the new schema's rows
    (none), never the old schema's kept or filled under it."""
    ws, other = cached
    with_people(ws, 6)
    assert len(rows(ws)) == 6
    catalog = ws.vault._reads.catalog
    real_get = catalog.get
    fired: list[bool] = []

    def get(name: str) -> Any:
        info = real_get(name)
        if not fired:
            fired.append(True)
            admin = other.session(OWNER, "administration")
            admin.alter_dataset("people", schema(purposes={**SCHEMA["purposes"], READ: "gdpr.consent"}))
        return info

    monkeypatch.setattr(catalog, "get", get)
    assert rows(ws) == [] and fired
    monkeypatch.setattr(catalog, "get", real_get)
    assert rows(ws) == rows(other) == []


def test_kept_records_past_their_expiry_leave_memory_at_the_next_look(
    cached: tuple[Workspace, Workspace], clock: ManualClock
) -> None:
    ws, _ = cached
    with_people(ws, 5)
    rows(ws)
    cache = ws.vault.read_cache
    assert cache is not None and cache.held == 5
    clock.advance(timedelta(days=366))  # past the records' retention: no event, only time
    ws.look_for_changes()
    assert cache.held == 0
