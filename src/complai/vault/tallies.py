"""What a deletion removes, as the ledger records it: counts and multiset hashes of records and consents."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Select, select

from complai.store.tables import consents, records, subjects
from complai.vault.records import RecordSet, add_consent


def consent_sets(conn: Connection, subject_ids: Sequence[int]) -> tuple[RecordSet, RecordSet]:
    """The multiset hashes of these subjects' stored consents and of their withdrawals."""
    given, withdrawn = RecordSet(), RecordSet()
    c = consents.c
    q = (
        select(subjects.c.pseudonym, c.purpose, c.basis, c.granted_at, c.withdrawn_at, c.notice_version, c.source)
        .join_from(consents, subjects, subjects.c.id == c.subject_id)
        .where(c.subject_id.in_(subject_ids))
    )
    for row in conn.execute(q).mappings():
        add_consent(given, withdrawn, str(row["pseudonym"]), row)
    return given, withdrawn


def deleted_sets(conn: Connection, query: Select[Any]) -> dict[str, tuple[int, RecordSet]]:
    """Per dataset: how many records a deletion removes and their record-set hash (for the ledger).
    `query` selects (dataset, pseudonym, record id) from records joined here to subjects."""
    out: dict[str, tuple[int, RecordSet]] = {}
    for ds, pseudonym, rid in conn.execute(query.join_from(records, subjects, subjects.c.id == records.c.subject_id)):
        n, rs = out.get(str(ds), (0, RecordSet()))
        rs.add(str(ds), str(pseudonym), bytes(rid))
        out[str(ds)] = (n + 1, rs)
    return out
