"""Ingest is idempotent by record key: the default refuses records already stored (or repeated in the
file) with their count and writes nothing; append skips them, upsert supersedes them, replace swaps the
dataset's records for the file's. After each, RECON-1 accounts for every record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func, select

from complai.app.ops.compliance import compliance_services
from complai.app.workspace import Workspace
from complai.compliance import engine
from complai.errors import InvalidInput
from complai.store.tables import ledger_entries, records, subjects
from complai.vault.schema import load_schema
from complai.vault.sources import SourceOptions
from tests.vault.conftest import SCHEMA, consents_frame, people_frame

ORDERS: dict[str, Any] = {
    "name": "orders",
    "subject_column": "customer_id",
    "jurisdiction": "EU",
    "retention": "P30D",
    "purposes": {"customer_support": "gdpr.contract"},
    "record_key": "order_id",
    "fields": [
        {"name": "customer_id", "type": "string", "category": "user.unique_id", "nullable": False},
        {"name": "order_id", "type": "string", "category": "system.operations", "nullable": False},
        {"name": "amount", "type": "integer", "category": "user.financial"},
    ],
}


def _orders(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "order_id", "amount"])


FIRST = [("C-1", "O-1", 10), ("C-1", "O-2", 20), ("C-2", "O-3", 30)]


@pytest.fixture
def orders(ws: Workspace) -> Workspace:
    ws.catalog.register(load_schema(ORDERS, ws.taxonomy), actor="owner")
    ws.vault.ingest("orders", _orders(FIRST), actor="owner")
    return ws


def _state(ws: Workspace) -> tuple[int, int, int]:
    """(records, subjects, ledger entries)."""
    with ws.store.read() as conn:
        return (
            int(conn.execute(select(func.count()).select_from(records)).scalar_one()),
            int(conn.execute(select(func.count()).select_from(subjects)).scalar_one()),
            int(conn.execute(select(func.count()).select_from(ledger_entries)).scalar_one()),
        )


def _amounts(ws: Workspace) -> dict[str, int]:
    frame = ws.session("owner", "customer_support").read("orders")
    return dict(zip(frame["order_id"], frame["amount"].astype(int), strict=True))


def _recon_clean(ws: Workspace) -> None:
    finding = engine.CHECKS["reconciliation"](engine.AuditContext(compliance_services(ws.services), ws.clock.now()))
    assert finding.status == "pass", finding.items


def _last_event(ws: Workspace) -> dict[str, Any]:
    import json

    return dict(json.loads(list(ws.ledger.entries(kind="vault.ingested"))[-1].data))


def test_same_file_twice_is_refused_with_the_count_and_nothing_written(orders: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    _orders(FIRST).to_csv(path, index=False)
    before = _state(orders)
    with pytest.raises(InvalidInput, match=r"^3 of 3 rows are records already stored in orders \(by record key"):
        orders.vault.ingest("orders", path, actor="owner")
    assert _state(orders) == before
    _recon_clean(orders)


def test_repeats_inside_the_file_are_refused_in_every_mode(orders: Workspace) -> None:
    before = _state(orders)
    rows = [("C-3", "O-9", 1), ("C-3", "O-9", 2), ("C-4", "O-9", 3), ("C-4", "O-10", 4)]
    for mode in ("insert", "append", "upsert", "replace"):
        with pytest.raises(InvalidInput, match="2 rows repeat an earlier row of the file"):
            orders.vault.ingest("orders", _orders(rows), actor="owner", mode=mode)
    assert _state(orders) == before


def test_default_insert_counts_only_stored_keys(orders: Workspace) -> None:
    with pytest.raises(InvalidInput, match=r"^2 of 4 rows are records already stored"):
        orders.vault.ingest("orders", _orders([*FIRST[:2], ("C-9", "O-7", 1), ("C-9", "O-8", 2)]), actor="owner")


def test_append_stores_only_new_keys(orders: Workspace) -> None:
    result = orders.vault.ingest(
        "orders", _orders([("C-1", "O-1", 999), ("C-3", "O-4", 40)]), actor="owner", mode="append"
    )
    assert (result.rows, result.inserted, result.updated, result.deleted, result.skipped_existing_rows) == (
        1,
        1,
        0,
        0,
        1,
    )
    assert _amounts(orders) == {"O-1": 10, "O-2": 20, "O-3": 30, "O-4": 40}  # the stored O-1 is kept
    again = orders.vault.ingest(
        "orders", _orders([("C-1", "O-1", 999), ("C-3", "O-4", 40)]), actor="owner", mode="append"
    )
    assert (again.rows, again.skipped_existing_rows) == (0, 2)  # running it again stores nothing
    ev = _last_event(orders)
    assert (ev["mode"], ev["inserted"], ev["skipped_existing_rows"]) == ("append", 0, 2)
    _recon_clean(orders)


def test_upsert_supersedes_stored_records(orders: Workspace) -> None:
    result = orders.vault.ingest(
        "orders", _orders([("C-1", "O-1", 11), ("C-2", "O-3", 33), ("C-3", "O-5", 50)]), actor="owner", mode="upsert"
    )
    assert (result.rows, result.inserted, result.updated, result.deleted) == (3, 1, 2, 0)
    assert _amounts(orders) == {"O-1": 11, "O-2": 20, "O-3": 33, "O-5": 50}
    assert _state(orders)[0] == 4
    ev = _last_event(orders)
    assert (ev["mode"], ev["rows"], ev["updated"], ev["removed_records"]) == ("upsert", 3, 2, 2)
    _recon_clean(orders)


def test_upsert_moving_a_record_to_another_subject_keeps_the_old_subject(orders: Workspace) -> None:
    orders.vault.ingest("orders", _orders([("C-1", "O-3", 31)]), actor="owner", mode="upsert")  # C-2's only order
    assert _amounts(orders)["O-3"] == 31
    assert _last_event(orders)["subjects_without_records"] == 1  # C-2 is kept, without records
    _recon_clean(orders)


def test_upsert_needs_a_record_key(ws: Workspace) -> None:
    ws.catalog.register(load_schema(SCHEMA, ws.taxonomy), actor="owner")
    with pytest.raises(InvalidInput, match="mode upsert needs a record_key"):
        ws.vault.ingest("customers", people_frame(), actor="owner", mode="upsert")


def test_replace_swaps_the_dataset_records(orders: Workspace) -> None:
    result = orders.vault.ingest(
        "orders", _orders([("C-1", "O-1", 12), ("C-5", "O-6", 60)]), actor="owner", mode="replace"
    )
    assert (result.rows, result.inserted, result.updated, result.deleted) == (2, 1, 1, 2)
    assert _amounts(orders) == {"O-1": 12, "O-6": 60}
    with orders.store.read() as conn:
        assert conn.execute(select(func.count()).select_from(subjects)).scalar_one() == 3  # C-2 kept
    ev = _last_event(orders)
    assert (ev["mode"], ev["removed_records"], ev["subjects_without_records"]) == ("replace", 3, 1)
    _recon_clean(orders)
    orders.vault.ingest("orders", _orders([("C-2", "O-7", 70)]), actor="owner")  # C-2 comes back
    _recon_clean(orders)


def test_without_a_record_key_a_record_is_its_subject_and_values(ws: Workspace) -> None:
    ws.catalog.register(load_schema(SCHEMA, ws.taxonomy), actor="owner")
    ws.vault.ingest("customers", people_frame(), actor="owner", consents_data=consents_frame())
    with pytest.raises(InvalidInput, match=r"^4 of 4 rows are records already stored .*subject and values"):
        ws.vault.ingest("customers", people_frame(), actor="owner")
    changed = people_frame()
    changed.loc[0, "income"] = 1  # a different record of C-1001
    result = ws.vault.ingest("customers", changed, actor="owner", mode="append")
    assert (result.rows, result.skipped_existing_rows) == (1, 3)
    replaced = ws.vault.ingest("customers", people_frame().iloc[:2], actor="owner", mode="replace")
    assert (replaced.rows, replaced.updated, replaced.deleted) == (2, 2, 3)
    _recon_clean(ws)


def test_refused_ingest_leaves_no_temporary_state(orders: Workspace) -> None:
    with pytest.raises(InvalidInput):
        orders.vault.ingest("orders", _orders(FIRST), actor="owner")
    result = orders.vault.ingest("orders", _orders([("C-8", "O-80", 1)]), actor="owner")
    assert result.rows == 1 and result.subjects == 1


def test_ingest_progress_counts_bytes_then_rows(orders: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "more.csv"
    _orders([(f"C-{i}", f"N-{i}", i) for i in range(25)]).to_csv(path, index=False)
    seen: list[tuple[str, int, int]] = []
    options = SourceOptions(chunk_rows=10)
    orders.vault.ingest("orders", path, actor="owner", options=options, progress=lambda *a: seen.append(a))
    size = path.stat().st_size
    assert [s for s in seen if s[0] == "checking"][-1] == ("checking", size, size)
    assert [s for s in seen if s[0] == "storing"] == [("storing", 10, 25), ("storing", 20, 25), ("storing", 25, 25)]


def test_dp_query_progress_is_told_in_percents_not_records(orders: Workspace) -> None:
    seen: list[tuple[int, int]] = []
    orders.session("owner", "administration").set_budget("orders", 5.0, 1e-6)
    session = orders.session("owner", "customer_support")
    session.dp_query("SELECT COUNT(*) FROM orders", epsilon=0.5, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(pct, 100) for pct in range(101)]  # the same calls whatever the number of records
