from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from complai.errors import IntegrityError, InvalidInput
from complai.events import DatasetRegistered, WorkspaceCreated, check_pseudonym, decode_event, event_types

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make() -> WorkspaceCreated:
    return WorkspaceCreated(
        time=T, actor="owner", purpose="administration", workspace_id="w", schema_revision="1", ledger_key_id="00"
    )


def test_canonical_bytes_are_jcs() -> None:
    data = make().canonical()
    obj = json.loads(data)
    # RFC 8785: keys sorted by code point, no whitespace
    assert data == json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert obj["type"] == "workspace.created" and obj["v"] == 1


def test_decode_round_trip_and_rejects_non_canonical() -> None:
    e = make()
    assert decode_event(e.canonical()) == e
    spaced = json.dumps(json.loads(e.canonical()), indent=1).encode()
    with pytest.raises(IntegrityError, match="canonical"):
        decode_event(spaced)
    with pytest.raises(IntegrityError):
        decode_event(b'{"type":"no.such.event","v":1}')


def test_events_refuse_naive_times_and_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        WorkspaceCreated(
            time=datetime(2026, 1, 1), actor="a", purpose="p", workspace_id="w", schema_revision="1", ledger_key_id="0"
        )
    with pytest.raises(ValidationError):
        WorkspaceCreated(
            time=T,
            actor="a",
            purpose="p",
            workspace_id="w",
            schema_revision="1",
            ledger_key_id="0",
            email="someone@example.com",
        )  # type: ignore[call-arg]


def test_values_must_be_digests_and_subjects_pseudonyms() -> None:
    with pytest.raises(ValidationError):
        DatasetRegistered(
            time=T,
            actor="a",
            purpose="p",
            dataset="d",
            schema_digest="plain text",
            fields=1,
            purposes=[],
            retention="P1D",
            jurisdiction="EU",
        )
    with pytest.raises(InvalidInput):
        check_pseudonym("alice@example.com")
    assert check_pseudonym("sp:" + "ab" * 32)


def test_registry_has_unique_kinds() -> None:
    kinds = event_types()
    assert {"workspace.created", "store.migrated", "dataset.registered"} <= set(kinds)


def test_a_dp_query_event_written_before_the_release_discipline_still_decodes_but_none_is_written() -> None:
    import json
    from datetime import UTC, datetime

    import rfc8785

    from complai.events import DPQueryAnswered

    now = datetime(2026, 1, 1, tzinfo=UTC)
    fields = {
        "time": now,
        "actor": "ana",
        "purpose": "analytics",
        "dataset": "adult",
        "query_digest": "sha256:" + "0" * 64,
        "statistics": ["count"],
        "group_by": None,
        "epsilon": 1.0,
        "delta": 0.0,
        "rho": 0.5,
        "mechanism": "laplace",
        "epsilon_remaining": 2.0,
    }
    fresh = DPQueryAnswered(**fields)
    assert b"rows_used" not in fresh.canonical()
    # the stored form of an older event, byte for byte as it was appended then
    old = rfc8785.dumps({**json.loads(fresh.canonical()), "rows_used": 1})
    decoded = decode_event(old)
    assert decoded.canonical() == old
    with pytest.raises(ValueError, match="no longer carry rows_used"):
        DPQueryAnswered(**fields, rows_used=1)


def test_events_written_before_a_field_was_added_still_decode_to_their_own_bytes() -> None:
    """Fields added later (with a default) are absent from older records: decoding such a record must
    give back exactly its stored bytes, or every older ledger stops decoding."""
    import rfc8785

    from complai.events import BackupRestored

    now = datetime(2026, 1, 1, tzinfo=UTC)
    current = BackupRestored(
        time=now,
        actor="owner",
        purpose="security",
        backup_digest="sha256:" + "1" * 64,
        backup_ledger_size=5,
        erasures_reapplied=0,
        later_ledger_checked=True,
    )
    older = json.loads(current.canonical())
    del older["later_ledgers"]  # written by a release that did not have the field
    stored = rfc8785.dumps(older)
    decoded = decode_event(stored)
    assert decoded.canonical() == stored
    assert decoded.later_ledgers == 0  # type: ignore[attr-defined]
    # a value other than the default is never dropped: the field is part of what was signed
    assert b'"later_ledgers":2' in current.model_copy(update={"later_ledgers": 2}).canonical()
