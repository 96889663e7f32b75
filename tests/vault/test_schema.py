from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from complai.app.workspace import Workspace
from complai.datasets import adult_schema_path
from complai.errors import AlreadyExists, InvalidInput, NotFound
from complai.events import decode_event
from complai.taxonomy import load_taxonomy
from complai.vault.schema import load_schema, parse_retention, retention_deadline


def base() -> dict[str, Any]:
    return {
        "name": "customers",
        "subject_column": "cid",
        "jurisdiction": "EU",
        "retention": "P1Y",
        "purposes": ["analytics"],
        "fields": [
            {"name": "cid", "type": "string", "category": "user.unique_id", "identifier": "direct"},
            {"name": "email", "type": "string", "category": "user.contact.email", "identifier": "direct"},
            {"name": "income", "type": "float", "category": "user.financial.income", "min": 0, "max": 1e6},
        ],
    }


def test_bundled_adult_schema_is_valid() -> None:
    schema = load_schema(adult_schema_path(), load_taxonomy())
    assert schema.name == "adult" and "credit_scoring" in schema.purposes


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["fields"][1].update(category="user.contact.emial"), "field email: unknown data category"),
        (lambda d: d.update(purposes=["telepathy"]), "unknown purpose"),
        (lambda d: d.update(jurisdiction="Atlantis"), "unknown jurisdiction"),
        (lambda d: d.update(retention="1 year"), "ISO 8601 duration"),
        (lambda d: d.update(subject_column="nope"), "subject_column"),
        (lambda d: d["fields"].append(dict(d["fields"][0])), "duplicate field"),
        (lambda d: d["fields"][0].update(type="blob"), "fields.0.type"),
        (lambda d: d["fields"][0].update(colour="red"), "Extra inputs"),
        (lambda d: d["fields"][2].update(min=5, max=1), "min is greater than max"),
        (lambda d: d["fields"][1].update(min=0), "numeric fields only"),
    ],
)
def test_invalid_schemas_are_refused_with_one_clear_line(mutate: Any, message: str) -> None:
    doc = base()
    mutate(doc)
    with pytest.raises(InvalidInput, match=message) as info:
        load_schema(doc, load_taxonomy())
    assert "\n" not in str(info.value)


def test_retention_durations() -> None:
    start = datetime(2024, 1, 31, tzinfo=UTC)
    assert retention_deadline(start, "P1M") == datetime(2024, 2, 29, tzinfo=UTC)  # calendar-aware
    assert retention_deadline(start, "P2W") == datetime(2024, 2, 14, tzinfo=UTC)
    assert retention_deadline(start, "P365D") == datetime(2025, 1, 30, tzinfo=UTC)
    for bad in ("P", "", "P1H", "PT1H", "365D"):
        with pytest.raises(InvalidInput):
            parse_retention(bad)


def test_register_records_one_event_and_refuses_duplicates(ws: Workspace) -> None:
    schema = load_schema(base(), ws.taxonomy)
    size = ws.ledger.head().size
    ws.catalog.register(schema, actor="owner")
    assert ws.ledger.head().size == size + 1
    event = decode_event(ws.ledger.entry(size).data)
    assert event.kind == "dataset.registered" and event.schema_digest == schema.digest()  # type: ignore[attr-defined]
    assert ws.catalog.get("customers").schema == schema
    with pytest.raises(AlreadyExists):
        ws.catalog.register(schema, actor="owner")
    assert ws.ledger.head().size == size + 1
    with pytest.raises(NotFound):
        ws.catalog.get("nope")


def test_schema_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not found"):
        load_schema(tmp_path / "missing.yaml", load_taxonomy())
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        load_schema(bad, load_taxonomy())
