"""Edits at rest to state the ledger accounts for: a record's ciphertext rolled back after a
rectification, its expiry moved to year 9999, a subject's record rows deleted, the pseudonym key
replaced. Each is refused on read (IntegrityError) or named by RECON-1, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text, update

from complai.app.ops.compliance import compliance_services
from complai.app.workspace import PSEUDONYM_KEY, Workspace
from complai.clock import to_us
from complai.compliance import engine
from complai.crypto.keyfiles import write_secret
from complai.errors import IntegrityError
from complai.store import Store
from complai.store.tables import meta, records, subjects
from complai.vault.records import legacy_record_ad


def _recon(ws: Workspace) -> engine.Finding:
    return engine.CHECKS["reconciliation"](engine.AuditContext(compliance_services(ws.services), ws.clock.now()))


def _problems(ws: Workspace) -> str:
    return "\n".join(i["problem"] for i in _recon(ws).items)


def _record_of(ws: Workspace, external_id: str) -> tuple[int, bytes, str]:
    with ws.store.read() as conn:
        subj = ws.vault.subject(conn, external_id)
        rid = conn.execute(select(records.c.rid).where(records.c.subject_id == subj.id)).scalar_one()
    return subj.id, bytes(rid), subj.pseudonym


def _read(ws: Workspace) -> None:
    ws.session("owner", "customer_support").read("customers")


def test_a_clean_workspace_reconciles(customers: Workspace) -> None:
    assert _recon(customers).status == "pass"


def test_ciphertext_rolled_back_after_rectification_fails_on_read(customers: Workspace) -> None:
    _, rid, pseudonym = _record_of(customers, "C-1002")
    with customers.store.read() as conn:
        before = conn.execute(select(records).where(records.c.rid == rid)).one()
    customers.vault.rectify("C-1002", "customers", "email", "bq@example.net", actor="owner")
    assert _recon(customers).status == "pass"
    with customers.store.write() as conn:  # only the ciphertext goes back
        conn.execute(update(records).where(records.c.rid == rid).values(data=before.data))
    with pytest.raises(IntegrityError, match=f"record {rid.hex()} in customers fails authentication"):
        _read(customers)
    assert f"record {rid.hex()} of {pseudonym} in customers: fails authentication" in _problems(customers)
    with customers.store.write() as conn:  # the whole row goes back: it opens, but the ledger knows better
        conn.execute(
            update(records)
            .where(records.c.rid == rid)
            .values(data=before.data, version=before.version, dek_version=before.dek_version)
        )
    finding = _recon(customers)
    assert finding.status == "fail"
    assert any(
        i["item"] == "record_binding"
        and f"record {rid.hex()} of {pseudonym}" in i["problem"]
        and "rolled back" in i["problem"]
        for i in finding.items
    )


def test_expiry_moved_to_year_9999_fails_on_read_and_audit(customers: Workspace) -> None:
    _, rid, pseudonym = _record_of(customers, "C-1003")
    with customers.store.write() as conn:
        conn.execute(
            update(records).where(records.c.rid == rid).values(expires_us=to_us(datetime(9999, 1, 1, tzinfo=UTC)))
        )
    with pytest.raises(IntegrityError, match="fails authentication"):
        _read(customers)
    customers.clock.advance(timedelta(days=31))  # type: ignore[attr-defined]
    assert customers.vault.retention_sweep("owner")["records_deleted"] == 3  # the edited record escapes it
    problems = _problems(customers)  # but not RECON-1
    assert f"record {rid.hex()} of {pseudonym} in customers: fails authentication" in problems
    assert f"record {rid.hex()} of {pseudonym} in customers: expires 9999-01-01T00:00:00.000000Z" in problems


def test_deleting_a_subjects_rows_is_named(customers: Workspace) -> None:
    sid, _, pseudonym = _record_of(customers, "C-1003")
    with customers.store.write() as conn:
        conn.execute(delete(records).where(records.c.subject_id == sid))
    problems = _problems(customers)
    assert "dataset customers: 3 records stored, the ledger accounts for 4" in problems
    assert f"subject {pseudonym}: holds no records but was neither erased nor shredded" in problems


def test_replacing_the_pseudonym_key_fails_on_open(tmp_path: Path, database_url: str | None) -> None:
    ws = Workspace.init(tmp_path / "ws", database_url=database_url)
    ws.close()
    key = tmp_path / "ws" / "keys" / PSEUDONYM_KEY
    key.unlink()
    write_secret(key, b"\x07" * 32)
    with pytest.raises(IntegrityError, match=r"pseudonym\.key is not the workspace's pseudonym key"):
        Workspace.open(tmp_path / "ws")


def test_a_workspace_from_before_the_bindings_is_upgraded(customers: Workspace) -> None:
    """Records sealed under the older associated data and a ledger without the key's fingerprint (a
    workspace from before): opening it re-seals every record, records the fingerprint, and then both
    checks hold."""
    ws = customers
    digest = ws.catalog.get("customers").schema.digest()
    with ws.store.write() as conn:
        rows = conn.execute(select(records)).all()
        keys = ws.keyring.load(conn, {int(r.subject_id) for r in rows})
        for r in rows:
            key = keys[int(r.subject_id)][int(r.dek_version)]
            plain = key.open(bytes(r.data), _ad(r, digest))
            conn.execute(
                update(records)
                .where(records.c.rid == r.rid)
                .values(data=key.seal(plain, legacy_record_ad("customers", bytes(r.rid), digest)))
            )
    url, path = ws.store.url, ws.path
    ws.close()
    store = Store(url)
    with store.write() as conn:
        from alembic import command

        command.downgrade(store._alembic(conn), "0011")
        assert "version" not in [c["name"] for c in _columns(conn)]
    store.dispose()
    with Workspace.open(path, clock=ws.clock) as reopened:
        with reopened.store.read() as conn:
            assert conn.execute(select(meta.c.value).where(meta.c.key == "records_reseal")).first() is None
            assert set(conn.execute(select(records.c.version)).scalars()) == {0}
        assert len(reopened.session("owner", "customer_support").read("customers")) == 4
        assert _recon(reopened).status == "pass"


def _ad(row: object, digest: str) -> bytes:
    from complai.vault.records import record_ad

    r = row
    return record_ad("customers", bytes(r.rid), digest, int(r.version), int(r.created_us), int(r.expires_us))  # type: ignore[attr-defined]


def _columns(conn: object) -> list[dict]:
    from sqlalchemy import inspect

    return inspect(conn).get_columns("records")  # type: ignore[arg-type]


def test_a_legacy_ledger_records_the_pseudonym_key_once(tmp_path: Path, database_url: str | None) -> None:
    """A workspace whose ledger predates the fingerprint records it on first open; a key replaced after
    that is refused."""
    ws = Workspace.init(tmp_path / "ws", database_url=database_url)
    url = ws.store.url
    ws.close()
    store = Store(url)
    with store.write() as conn:  # back to the first revision: the ledger tables go, with the fingerprint
        from alembic import command

        command.downgrade(store._alembic(conn), "0001")
        assert conn.execute(text("SELECT count(*) FROM meta")).scalar() >= 1
    store.dispose()
    with Workspace.open(tmp_path / "ws") as reopened:
        kinds = reopened.ledger.count_by_kind()
        assert kinds.get("keys.pseudonym_key_recorded") == 1
    with Workspace.open(tmp_path / "ws") as again:
        assert again.ledger.count_by_kind().get("keys.pseudonym_key_recorded") == 1
    key = tmp_path / "ws" / "keys" / PSEUDONYM_KEY
    key.unlink()
    write_secret(key, b"\x09" * 32)
    with pytest.raises(IntegrityError, match=r"pseudonym\.key"):
        Workspace.open(tmp_path / "ws")


def test_subjects_table_is_not_edited_to_hide_rows(customers: Workspace) -> None:
    """A subject marked erased at rest (without an erasure) while its rows are deleted: the dataset's
    count names it even though no live subject is left without records."""
    sid, _, _ = _record_of(customers, "C-1004")
    with customers.store.write() as conn:
        conn.execute(delete(records).where(records.c.subject_id == sid))
        conn.execute(update(subjects).where(subjects.c.id == sid).values(erased_at=customers.clock.now()))
    problems = _problems(customers)
    assert "dataset customers: 3 records stored, the ledger accounts for 4" in problems
    pseudonym = _pseudonym(customers, "C-1004")
    assert f"subject {pseudonym}: marked erased, but the ledger records no erasure or shredding of it" in problems


def test_a_subject_removed_whole_is_named(customers: Workspace) -> None:
    """Records, keys, consents and the subject row itself deleted: the subject count says so."""
    from complai.store.tables import consents, subject_keys

    sid, _, _ = _record_of(customers, "C-1001")
    with customers.store.write() as conn:
        for table in (records, consents, subject_keys):
            conn.execute(delete(table).where(table.c.subject_id == sid))
        conn.execute(delete(subjects).where(subjects.c.id == sid))
    problems = _problems(customers)
    assert "subjects: 3 stored, the ledger's ingests created 4" in problems
    assert "dataset customers: 3 records stored, the ledger accounts for 4" in problems


def _pseudonym(ws: Workspace, external_id: str) -> str:
    return ws.pseudonyms.subject(external_id)


def test_a_restored_workspace_reconciles(customers: Workspace, tmp_path: Path) -> None:
    """Backup, then a rectification and an erasure; the restore re-applies the erasure (not the
    rectification, which the backup's ledger does not hold): the restored store agrees with its ledger."""
    from complai.app.backup import create_backup
    from complai.vault.backup import load_backup_key, new_backup_key

    new_backup_key(tmp_path / "backup.key")
    key = load_backup_key(tmp_path / "backup.key")
    customers.vault.rectify("C-1001", "customers", "income", 5, actor="owner")
    create_backup(customers.services, tmp_path / "b.bak", key, "owner")
    customers.vault.erase("C-1002", actor="owner")
    out = Workspace.restore_backup(tmp_path / "b.bak", tmp_path / "r", key, "owner", clock=customers.clock)
    assert out["erasures_reapplied"] == 1
    with Workspace.open(tmp_path / "r", clock=customers.clock) as restored:
        assert _recon(restored).status == "pass", _recon(restored).items
