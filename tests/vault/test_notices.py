"""The vault's notices (erasure, expiry) reach the handlers the composition root registered, inside the
vault's transaction; the model registry's handlers flag the models those subjects trained. Also the
typed result of a governed fetch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pandas as pd
import pytest
from sqlalchemy import Connection, func, insert, select

from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.errors import NotFound
from complai.store.tables import model_subjects, models, records, subjects
from complai.vault.notices import Notice, Notices, RecordsExpired, SubjectsErased
from complai.vault.service import Fetched

VAULT_SOURCES = sorted((Path(__file__).parents[2] / "src" / "complai" / "vault").glob("*.py"))


def _add_model(ws: Workspace, model_id: str, dataset: str, external_ids: list[str]) -> None:
    """A registry row trained on these subjects (as Models._store writes it, without training)."""
    with ws.store.write() as conn:
        conn.execute(
            insert(models).values(
                id=model_id,
                dataset=dataset,
                task="classification",
                architecture="logreg",
                purpose="credit_scoring",
                created_by="owner",
                created_at=ws.clock.now(),
                private=False,
                subjects=len(external_ids),
                model_digest="sha256:" + "0" * 64,
                card_digest="sha256:" + "0" * 64,
                card="{}",
            )
        )
        for e in external_ids:
            sid = ws.vault.subject(conn, e).id
            conn.execute(insert(model_subjects).values(model_id=model_id, subject_id=sid))


def _flag(ws: Workspace, model_id: str) -> tuple[object, object, int]:
    with ws.store.read() as conn:
        row = conn.execute(select(models.c.flagged_at, models.c.flag_reason).where(models.c.id == model_id)).one()
        links = conn.execute(
            select(func.count()).select_from(model_subjects).where(model_subjects.c.model_id == model_id)
        ).scalar_one()
    return row.flagged_at, row.flag_reason, int(links)


def test_notices_go_to_the_handlers_of_their_class_in_order() -> None:
    notices = Notices()
    got: list[tuple[str, Notice]] = []
    notices.subscribe(SubjectsErased, lambda n: got.append(("a", n)))
    notices.subscribe(RecordsExpired, lambda n: got.append(("expired", n)))
    notices.subscribe(SubjectsErased, lambda n: got.append(("b", n)))
    erased = SubjectsErased(cast(Connection, None), datetime.now(UTC), (1, 2), 7)
    notices.publish(erased)
    assert got == [("a", erased), ("b", erased)]


def test_fetch_returns_a_typed_result(customers: Workspace) -> None:
    got = customers.vault.fetch("customers", "credit_scoring", ["customer_id", "income"])
    assert isinstance(got, Fetched)
    assert got.columns == ["customer_id", "income"] and got.total == 4
    assert sorted(got.frame["customer_id"]) == ["C-1001", "C-1002", "C-1003", "C-1004"]
    with customers.store.read() as conn:
        ids = dict(conn.execute(select(subjects.c.pseudonym, subjects.c.id)).all())
    assert got.subjects == {p: ids[p] for p in got.subjects} and len(got.subjects) == 4
    frame, pseudos, total, cols = got  # callers still unpack it
    assert frame is got.frame and pseudos is got.subjects and total == 4 and cols == got.columns


def test_an_erasure_flags_the_models_its_subject_trained(customers: Workspace) -> None:
    _add_model(customers, "m-both", "customers", ["C-1001", "C-1002"])
    _add_model(customers, "m-other", "customers", ["C-1003"])
    seq = customers.vault.erase("C-1001", actor="owner")
    flagged_at, reason, links = _flag(customers, "m-both")
    assert flagged_at is not None and reason == f"a training subject was erased (ledger entry {seq})"
    assert links == 1  # the erased subject's link is forgotten, C-1002's stays
    assert _flag(customers, "m-other") == (None, None, 1)


def test_a_failing_handler_rolls_the_erasure_back(customers: Workspace) -> None:
    def refuse(notice: SubjectsErased) -> None:
        raise RuntimeError("handler failed")

    customers.vault.notices.subscribe(SubjectsErased, refuse)
    size = customers.ledger.head().size
    with pytest.raises(RuntimeError, match="handler failed"):
        customers.vault.erase("C-1002", actor="owner")
    assert customers.ledger.head().size == size
    with customers.store.read() as conn:
        assert customers.vault.subject(conn, "C-1002").erased is False
        n = conn.execute(select(func.count()).select_from(records)).scalar_one()
    assert n == 4


def test_an_erasure_notice_names_the_subject_and_its_ledger_entry(customers: Workspace) -> None:
    seen: list[SubjectsErased] = []
    customers.vault.notices.subscribe(SubjectsErased, seen.append)
    with customers.store.read() as conn:
        sid = customers.vault.subject(conn, "C-1003").id
    seq = customers.vault.erase("C-1003", actor="owner")
    assert [(n.subject_ids, n.seq) for n in seen] == [((sid,), seq)]
    with pytest.raises(NotFound):
        customers.vault.erase("C-1003", actor="owner")
    assert len(seen) == 1


def test_expired_records_flag_the_models_of_their_dataset(customers: Workspace, clock: ManualClock) -> None:
    _add_model(customers, "m-1", "customers", ["C-1004"])
    seen: list[RecordsExpired] = []
    customers.vault.notices.subscribe(RecordsExpired, seen.append)
    assert customers.vault.retention_sweep("owner")["records_deleted"] == 0
    assert seen == [] and _flag(customers, "m-1")[0] is None
    clock.advance(timedelta(days=31))
    late = pd.DataFrame(
        [("C-1005", "Nadia Late", "n@example.org", 1, "retail")],
        columns=["customer_id", "full_name", "email", "income", "segment"],
    )
    customers.vault.ingest("customers", late, actor="owner")
    swept = customers.vault.retention_sweep("owner")
    assert swept["records_deleted"] == 4
    assert [(n.dataset, len(n.subject_ids)) for n in seen] == [("customers", 4)]
    flagged_at, reason, links = _flag(customers, "m-1")
    assert flagged_at is not None and reason == "a training record passed its retention period" and links == 0


def test_the_vault_writes_no_model_tables() -> None:
    for path in VAULT_SOURCES:
        text = path.read_text()
        assert "model_subjects" not in text and "complai.dp" not in text, path.name
