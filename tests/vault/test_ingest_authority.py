"""What an ingest may change beyond the rows it brings. Consents given with it name only the subjects it
creates, unless the principal may record consents (admin, as `consent grant` needs): a consent covers
all of its subject's records, so naming a stored subject would forge the lawful basis of records the
ingest never brought. Mode replace deletes every record the file does not bring back, so it needs admin
on the dataset besides ingest (as dropping the dataset does); upsert supersedes only the records the
file names, as a rectification does, so ingest is enough. A refusal writes nothing but its
access.denied entry."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func, select

from complai.app.workspace import Workspace
from complai.errors import InvalidInput, PolicyDenied
from complai.store.tables import consents, ledger_entries, records, subjects
from complai.vault.schema import load_schema
from tests.vault.conftest import SCHEMA, consents_frame, people_frame

PURPOSE = "administration"
COLUMNS = ["customer_id", "full_name", "email", "income", "segment"]


def _rows(*ids: str) -> pd.DataFrame:
    return pd.DataFrame([(i, f"Name {i}", f"{i.lower()}@example.com", 1000, "retail") for i in ids], columns=COLUMNS)


def _consents(*ids: str, purpose: str = "marketing") -> pd.DataFrame:
    return pd.DataFrame([(i, purpose) for i in ids], columns=["subject", "purpose"])


def _state(ws: Workspace) -> tuple[int, int, int, int]:
    """(records, subjects, consent rows, ledger entries)."""
    with ws.store.read() as conn:
        return tuple(  # type: ignore[return-value]
            int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (records, subjects, consents, ledger_entries)
        )


def _marketing_subjects(ws: Workspace) -> set[str]:
    """The subjects whose rows a marketing read returns (the owner reads)."""
    return set(ws.session("owner", "marketing").read("customers", ["customer_id"])["customer_id"])


def _last(ws: Workspace) -> dict[str, Any]:
    *_, entry = ws.ledger.entries()
    data: dict[str, Any] = json.loads(entry.data)
    return data


@pytest.fixture
def shop(ws: Workspace) -> Workspace:
    """customers (C-1001..C-1004; marketing consent from C-1001 and C-1002 only), and a principal
    `collector` allowed to ingest it for administration and nothing else."""
    owner = ws.session("owner", PURPOSE)
    owner.create_dataset(owner.parse_schema(SCHEMA))
    owner.ingest("customers", people_frame(), consents_frame())
    security = ws.session("owner", "security")
    security.add_principal("collector", "service")
    security.add_rule("collector", "customers", "ingest", PURPOSE)
    return ws


def _refused(ws: Workspace, before: tuple[int, int, int, int], action: str, dataset: str) -> None:
    """Nothing changed but one access.denied entry, for the collector."""
    assert _state(ws) == (*before[:3], before[3] + 1)
    last = _last(ws)
    assert (last["type"], last["actor"], last["action"], last["dataset"]) == (
        "access.denied",
        "collector",
        action,
        dataset,
    )


def test_consents_for_stored_subjects_are_refused_and_nothing_changes(shop: Workspace) -> None:
    collector = shop.session("collector", PURPOSE)
    assert _marketing_subjects(shop) == {"C-1001", "C-1002"}
    attempts = [
        (_rows("N-1"), _consents("C-1003", "C-1004")),  # subjects not in the file
        (_rows("N-1", "C-1003"), _consents("C-1003")),  # a row carrying a consent for a stored subject
        (_rows("N-1"), _consents("N-1", "C-1004")),  # one stored subject among new ones
        (
            _rows("N-1"),
            _consents("C-1001").assign(granted_at="2020-01-01", withdrawn_at="2021-01-01"),
        ),  # a withdrawal as well
    ]
    for data, given in attempts:
        before = _state(shop)
        with pytest.raises(PolicyDenied) as exc:
            collector.ingest("customers", data, given, mode="append")
        message = str(exc.value)
        assert "\n" not in message and "record consents" in message and "C-10" not in message
        _refused(shop, before, "admin", "*")
    assert _marketing_subjects(shop) == {"C-1001", "C-1002"}
    # a consent for a subject neither in the file nor stored stays a bad input (nothing to authorise)
    before = _state(shop)
    with pytest.raises(InvalidInput, match="neither in the data nor known"):
        collector.ingest("customers", _rows("N-1"), _consents("N-9"))
    assert _state(shop) == before


def test_consents_for_the_subjects_an_ingest_creates_are_recorded(shop: Workspace) -> None:
    result = shop.session("collector", PURPOSE).ingest("customers", _rows("N-1", "N-2"), _consents("N-1", "N-2"))
    assert (result.rows, result.new_subjects, result.consents) == (2, 2, 2)
    assert _marketing_subjects(shop) == {"C-1001", "C-1002", "N-1", "N-2"}


def test_a_principal_who_may_record_consents_names_any_subject(shop: Workspace) -> None:
    security = shop.session("owner", "security")
    security.add_principal("registrar", "service")
    security.grant_role("registrar", "admin")  # admin on every dataset: what consent grant needs
    security.add_rule("registrar", "customers", "ingest", PURPOSE)
    result = shop.session("registrar", PURPOSE).ingest("customers", _rows("N-1"), _consents("N-1", "C-1003"))
    assert result.consents == 2
    assert _marketing_subjects(shop) == {"C-1001", "C-1002", "C-1003", "N-1"}


def test_replace_needs_admin_on_the_dataset(shop: Workspace) -> None:
    collector = shop.session("collector", PURPOSE)
    security = shop.session("owner", "security")
    security.add_rule("collector", "elsewhere", "admin", PURPOSE)  # admin on another dataset is not enough
    before = _state(shop)
    with pytest.raises(PolicyDenied) as exc:
        collector.ingest("customers", _rows("N-1"), mode="replace")
    assert "\n" not in str(exc.value) and "mode replace" in str(exc.value)
    _refused(shop, before, "admin", "customers")
    assert shop.vault.counts("customers")["records"] == 4
    # with admin on the dataset, the same upload replaces its records
    security.add_rule("collector", "customers", "admin", PURPOSE)
    result = shop.session("collector", PURPOSE).ingest("customers", _rows("N-1"), mode="replace")
    assert (result.rows, result.deleted) == (1, 4)
    assert shop.vault.counts("customers")["records"] == 1


def test_upsert_needs_only_ingest(ws: Workspace) -> None:
    """An upsert supersedes only the records its rows name (by record key), one for one, as a
    rectification (which needs ingest) changes them; it deletes nothing else."""
    owner = ws.session("owner", PURPOSE)
    owner.create_dataset(load_schema({**SCHEMA, "name": "accounts", "record_key": "customer_id"}, ws.taxonomy))
    owner.ingest("accounts", people_frame())
    security = ws.session("owner", "security")
    security.add_principal("collector", "service")
    security.add_rule("collector", "accounts", "ingest", PURPOSE)
    changed = people_frame().iloc[:1].assign(income=1)
    result = ws.session("collector", PURPOSE).ingest("accounts", changed, mode="upsert")
    assert (result.rows, result.updated, result.deleted) == (1, 1, 0)
    incomes = ws.session("owner", "fraud_detection").read("accounts", ["customer_id", "income"])
    assert dict(zip(incomes["customer_id"], incomes["income"], strict=True))["C-1001"] == 1
    assert len(incomes) == 4
