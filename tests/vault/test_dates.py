"""Dates and instants are ISO 8601 or refused: never a word read as the clock (`today`), never a locale's
day/month order guessed, never a calendar date moved by a time zone; every year (1-9999) round-trips."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from complai.app.workspace import Workspace
from complai.errors import InvalidInput
from complai.vault.schema import load_schema
from tests.vault.conftest import SCHEMA

EVENTS: dict[str, Any] = {
    **SCHEMA,
    "name": "events",
    "fields": [
        SCHEMA["fields"][0],
        {"name": "born", "type": "date", "category": "user.demographic.date_of_birth"},
        {"name": "at", "type": "datetime", "category": "user.behavior"},
    ],
}


@pytest.fixture
def events(ws: Workspace) -> Workspace:
    ws.catalog.register(load_schema(EVENTS, ws.taxonomy), actor="owner")
    return ws


def _stored(ws: Workspace, subject: str) -> dict[str, Any]:
    recs = ws.vault.export(subject, actor="owner")["records"]["events"]
    return dict(recs[0]["fields"])


@pytest.mark.parametrize(
    ("born", "at"),
    [
        ("today", "2020-01-01"),
        ("1990-05-06", "now"),
        ("06/05/1990", "2020-01-01"),
        ("1990-05-06T01:00:00+05:00", "2020-01-01"),
        ("19900506", "2020-01-01"),
        ("1990-05-06", "1577836800"),
        ("1990-02-30", "2020-01-01"),
    ],
)
def test_words_locale_orders_and_times_in_dates_are_refused(
    events: Workspace, tmp_path: Path, born: str, at: str
) -> None:
    path = tmp_path / "events.csv"
    path.write_text(f"customer_id,born,at\nE-1,{born},{at}\n")
    before = (events.ledger.head().size, events.vault.counts())
    with pytest.raises(InvalidInput, match=r"line 2: .* is not an ISO 8601"):
        events.vault.ingest("events", path, actor="owner")
    assert (events.ledger.head().size, events.vault.counts()) == before


def test_dates_keep_their_calendar_day_and_every_year_round_trips(events: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "customer_id,born,at\nE-1,0001-01-01,2020-01-01T03:00:00+05:00\nE-2,0999-12-31,0001-01-01T00:00:00Z\n"
    )
    events.vault.ingest("events", path, actor="owner")
    frame = pd.DataFrame(
        [{"customer_id": "E-3", "born": pd.Timestamp("1990-05-06 01:00", tz="Asia/Tokyo"), "at": dt.date(2020, 1, 1)}]
    )
    events.vault.ingest("events", frame, actor="owner")
    assert _stored(events, "E-1") == {"born": "0001-01-01", "at": "2019-12-31T22:00:00.000000Z"}
    assert _stored(events, "E-2") == {"born": "0999-12-31", "at": "0001-01-01T00:00:00.000000Z"}
    assert _stored(events, "E-3") == {"born": "1990-05-06", "at": "2020-01-01T00:00:00.000000Z"}
    read = events.session("owner", "fraud_detection").read("events", columns=["customer_id", "born"])
    years = sorted(read["born"].dt.year.tolist())
    assert years == [1, 999, 1990]


@pytest.mark.parametrize("granted", ["today", "06/05/2020", "1577836800", "May 6 2020"])
def test_consent_times_are_iso_8601_or_refused(events: Workspace, tmp_path: Path, granted: str) -> None:
    data = tmp_path / "events.csv"
    data.write_text("customer_id,born,at\nE-1,1990-05-06,2020-01-01\n")
    consents = tmp_path / "consents.csv"
    consents.write_text(f"subject,purpose,granted_at\nE-1,credit_scoring,{granted}\n")
    before = (events.ledger.head().size, events.vault.counts())
    with pytest.raises(InvalidInput, match="granted_at"):
        events.vault.ingest("events", data, actor="owner", consents_data=consents)
    assert (events.ledger.head().size, events.vault.counts()) == before
    consents.write_text("subject,purpose,granted_at\nE-1,credit_scoring,2020-05-06T01:00:00+05:00\n")
    events.vault.ingest("events", data, actor="owner", consents_data=consents)
