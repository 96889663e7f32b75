"""The vault on every backend: encryption at rest, governed reads, consent, rights, retention."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select, text, update

from complai.app.workspace import Workspace
from complai.errors import AuthenticationFailed, IntegrityError, InvalidInput, NotFound
from complai.events import decode_event
from complai.ledger.verify import verify_ledger
from complai.store.tables import records, subject_keys, subjects
from tests.vault.conftest import PEOPLE, SCHEMA, people_frame

SECRETS = [s for p in PEOPLE for s in (p[1], p[2], str(p[3]))] + [p[0] for p in PEOPLE]


def all_stored_bytes(ws: Workspace) -> bytes:
    """Every byte the database holds: the files for SQLite, every row of every table for PostgreSQL."""
    if ws.store.dialect == "sqlite":
        ws.store.dispose()
        return b"".join(p.read_bytes() for p in ws.path.glob("complai.db*"))
    out = []
    with ws.store.read() as conn:
        for (table,) in conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")):
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                for v in row:
                    out.append(bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode())
    return b"\n".join(out)


def test_no_plaintext_at_rest(customers: Workspace) -> None:
    pseudonym = customers.pseudonyms.subject("C-1001").encode()
    stored = all_stored_bytes(customers)
    assert b"customers" in stored and pseudonym in stored  # we are looking at the right data
    for secret in SECRETS:
        assert secret.encode() not in stored, secret


def test_governed_read_by_purpose_and_basis(customers: Workspace) -> None:
    credit = customers.session("owner", "credit_scoring").read("customers")
    assert sorted(credit["customer_id"]) == ["C-1001", "C-1002", "C-1003", "C-1004"]
    row = credit.set_index("customer_id").loc["C-1001"]
    assert row["email"] == PEOPLE[0][2] and row["income"] == PEOPLE[0][3]
    marketing = customers.session("owner", "marketing").read("customers", columns=["customer_id", "segment"])
    assert sorted(marketing["customer_id"]) == ["C-1001", "C-1002"]
    assert list(marketing.columns) == ["customer_id", "segment"]
    # legitimate interests and contract need no consent record
    assert len(customers.session("owner", "fraud_detection").read("customers")) == 4
    assert len(customers.session("owner", "customer_support").read("customers")) == 4


def test_read_is_recorded_without_personal_data(customers: Workspace) -> None:
    s = customers.session("owner", "marketing")
    s.read("customers")
    event = decode_event(customers.ledger.entry(s.last_seq).data)  # type: ignore[arg-type]
    assert event.kind == "vault.read" and event.rows == 2 and event.purpose == "marketing"  # type: ignore[attr-defined]
    ledger_bytes = b"".join(e.data for e in customers.ledger.entries())
    for secret in SECRETS:
        assert secret.encode() not in ledger_bytes


def test_purpose_not_allowed_and_unknown_principal(customers: Workspace) -> None:
    with pytest.raises(InvalidInput, match="not allowed for dataset"):
        customers.session("owner", "research").read("customers")
    with pytest.raises(InvalidInput, match="unknown purpose"):
        customers.session("owner", "mind_reading")
    with pytest.raises(AuthenticationFailed):
        customers.session("mallory", "marketing")
    with pytest.raises(InvalidInput, match="unknown column"):
        customers.session("owner", "marketing").read("customers", columns=["shoe_size"])


def test_withdrawal_affects_only_that_purpose(customers: Workspace) -> None:
    customers.vault.withdraw_consent("C-1001", "marketing", actor="owner")
    assert sorted(customers.session("owner", "marketing").read("customers")["customer_id"]) == ["C-1002"]
    assert len(customers.session("owner", "credit_scoring").read("customers")) == 4
    with pytest.raises(NotFound, match="no live consent"):
        customers.vault.withdraw_consent("C-1001", "marketing", actor="owner")
    customers.vault.grant_consent("C-1001", "marketing", actor="owner")
    assert sorted(customers.session("owner", "marketing").read("customers")["customer_id"]) == ["C-1001", "C-1002"]


def test_objection_and_restriction(customers: Workspace) -> None:
    customers.vault.object("C-1003", "fraud_detection", actor="owner")
    ids = set(customers.session("owner", "fraud_detection").read("customers")["customer_id"])
    assert ids == {"C-1001", "C-1002", "C-1004"}
    customers.vault.restrict("C-1004", actor="owner", reason="accuracy contested")
    assert "C-1004" not in set(customers.session("owner", "credit_scoring").read("customers")["customer_id"])
    with pytest.raises(InvalidInput, match="already restricted"):
        customers.vault.restrict("C-1004", actor="owner")
    customers.vault.restrict("C-1004", actor="owner", lift=True)
    assert "C-1004" in set(customers.session("owner", "credit_scoring").read("customers")["customer_id"])


def test_swapped_ciphertexts_fail_with_integrity_error(customers: Workspace) -> None:
    with customers.store.write() as conn:
        rows = conn.execute(select(records.c.rid, records.c.data, records.c.subject_id).order_by(records.c.rid)).all()
        a, b = rows[0], rows[1]
        assert a.subject_id != b.subject_id
        conn.execute(update(records).where(records.c.rid == a.rid).values(data=b.data))
        conn.execute(update(records).where(records.c.rid == b.rid).values(data=a.data))
    with pytest.raises(IntegrityError):
        customers.session("owner", "credit_scoring").read("customers")


def test_ciphertext_moved_between_records_of_one_subject_fails(customers: Workspace) -> None:
    second = people_frame().iloc[:1].assign(income=1)  # a second record for C-1001 (another record: other values)
    customers.vault.ingest("customers", second, actor="owner")
    with customers.store.write() as conn:
        sid = conn.execute(select(subjects.c.id).limit(1).order_by(subjects.c.id)).scalar()
        rows = conn.execute(select(records.c.rid, records.c.data).where(records.c.subject_id == sid)).all()
        assert len(rows) == 2
        conn.execute(update(records).where(records.c.rid == rows[0].rid).values(data=rows[1].data))
    with pytest.raises(IntegrityError, match="authentication"):
        customers.session("owner", "credit_scoring").read("customers")


def test_rectify(customers: Workspace) -> None:
    customers.vault.rectify("C-1002", "customers", "email", "bq@example.net", actor="owner")
    frame = customers.session("owner", "customer_support").read("customers").set_index("customer_id")
    assert frame.loc["C-1002", "email"] == "bq@example.net"
    with pytest.raises(InvalidInput, match="is not an integer"):
        customers.vault.rectify("C-1002", "customers", "income", "lots", actor="owner")
    with pytest.raises(InvalidInput, match="no field"):
        customers.vault.rectify("C-1002", "customers", "shoe_size", "9", actor="owner")


def test_export(customers: Workspace) -> None:
    customers.session("owner", "marketing").read("customers")
    doc = customers.vault.export("C-1001", actor="owner")
    assert doc["subject"]["id"] == "C-1001"
    fields = doc["records"]["customers"][0]["fields"]
    assert fields["email"] == PEOPLE[0][2] and fields["income"] == PEOPLE[0][3]
    assert {c["purpose"] for c in doc["consents"]} == {"credit_scoring", "marketing"}
    kinds = [h["type"] for h in doc["processing_history"]]
    assert "vault.read" in kinds  # the marketing read it was eligible for
    json.dumps(doc)  # machine-readable
    with pytest.raises(NotFound):
        customers.vault.export("C-9999", actor="owner")


def test_erasure_is_complete(customers: Workspace, tmp_path: Path) -> None:
    with customers.store.read() as conn:
        sid = conn.execute(select(subjects.c.id).order_by(subjects.c.id)).scalars().first()
    seq = customers.vault.erase("C-1001", actor="owner")
    for purpose in ("credit_scoring", "marketing", "customer_support"):
        assert "C-1001" not in set(customers.session("owner", purpose).read("customers")["customer_id"])
    with pytest.raises(NotFound, match="erased"):
        customers.vault.export("C-1001", actor="owner")
    with customers.store.read() as conn:
        assert conn.execute(select(subject_keys).where(subject_keys.c.subject_id == sid)).first() is None
        assert conn.execute(select(records).where(records.c.subject_id == sid)).first() is None
        assert conn.execute(select(subjects.c.external_enc).where(subjects.c.id == sid)).scalar() is None
    tomb = decode_event(customers.ledger.entry(seq).data)
    assert tomb.kind == "subject.erased" and tomb.subject == customers.pseudonyms.subject("C-1001")  # type: ignore[attr-defined]
    assert tomb.keys_destroyed == 1 and tomb.records == 1  # type: ignore[attr-defined]
    # re-ingesting the erased subject's row does not bring them back
    res = customers.vault.ingest("customers", people_frame(), actor="owner", mode="append")
    assert res.skipped_erased_rows == 1 and res.skipped_existing_rows == 3
    assert "C-1001" not in set(customers.session("owner", "customer_support").read("customers")["customer_id"])
    assert verify_ledger(customers.ledger).ok


def test_retention_sweep_is_idempotent_and_shreds(customers: Workspace, clock) -> None:  # type: ignore[no-untyped-def]
    clock.advance(timedelta(days=29))
    assert customers.vault.retention_sweep("owner")["records_deleted"] == 0
    fresh = people_frame().iloc[:1].assign(income=1)
    customers.vault.ingest("customers", fresh, actor="owner")  # C-1001 gets a fresh record
    clock.advance(timedelta(days=2))  # the first ingest is now past P30D
    first = customers.vault.retention_sweep("owner")
    assert first["records_deleted"] == 4 and first["subjects_shredded"] == 3
    assert customers.vault.retention_sweep("owner")["records_deleted"] == 0
    left = customers.session("owner", "customer_support").read("customers")
    assert list(left["customer_id"]) == ["C-1001"]
    assert customers.vault.counts()["data_keys"] == 1


def test_expired_records_are_not_read_before_the_sweep(customers: Workspace, clock) -> None:  # type: ignore[no-untyped-def]
    clock.advance(timedelta(days=31))
    assert len(customers.session("owner", "customer_support").read("customers")) == 0


def test_key_rotation_keeps_everything_readable(customers: Workspace) -> None:
    before = customers.session("owner", "customer_support").read("customers")
    result = customers.keys.rotate("owner", batch_size=2)
    assert result["to_version"] == 2 and result["deks_rewrapped"] == 4 and result["retired"] == [1]
    assert customers.keys.status()["deks_by_kek_version"] == {"2": 4}
    after = customers.session("owner", "customer_support").read("customers")
    pd.testing.assert_frame_equal(
        before.sort_values("customer_id").reset_index(drop=True),
        after.sort_values("customer_id").reset_index(drop=True),
    )
    kek = json.loads((customers.path / "keys" / "kek.json").read_text())
    assert list(kek["versions"]) == ["2"]


BAD_INPUTS = [
    (lambda df: df.assign(shoe_size=42), "unknown column"),
    (lambda df: df.assign(income=["a lot", 1, 2, 3]), "column income: row 1: 'a lot' is not an integer"),
    (lambda df: df.assign(income=[1, -5, 2, 3]), "below the declared min"),
    (lambda df: df.assign(customer_id=["C-1", None, "C-3", "C-4"]), "row 2: missing subject id"),
    (lambda df: df.assign(segment=["retail", "vip", "retail", "retail"]), "is not one of"),
    (lambda df: df.drop(columns=["customer_id"]), "subject column"),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_INPUTS)
def test_bad_input_writes_nothing(customers: Workspace, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    size, counts = customers.ledger.head().size, customers.vault.counts()
    with pytest.raises(InvalidInput, match=message):
        customers.vault.ingest("customers", mutate(people_frame()), actor="owner")
    assert customers.ledger.head().size == size and customers.vault.counts() == counts


def test_bad_consents_write_nothing(customers: Workspace, tmp_path: Path) -> None:
    size, counts = customers.ledger.head().size, customers.vault.counts()
    bad = pd.DataFrame([("C-1001", "telepathy")], columns=["subject", "purpose"])
    with pytest.raises(InvalidInput, match="unknown purpose"):
        customers.vault.ingest("customers", people_frame(), actor="owner", consents_data=bad)
    malformed = tmp_path / "bad.csv"
    malformed.write_text('customer_id,full_name\n"C-9,unterminated\n')
    with pytest.raises(InvalidInput, match="not valid CSV"):
        customers.vault.ingest("customers", malformed, actor="owner")
    with pytest.raises(NotFound):
        customers.vault.ingest("nope", people_frame(), actor="owner")
    assert customers.ledger.head().size == size and customers.vault.counts() == counts


def test_unknown_category_in_schema_is_refused(ws: Workspace) -> None:
    from complai.vault.schema import load_schema

    bad = json.loads(json.dumps(SCHEMA))
    bad["fields"][2]["category"] = "user.contact.pigeon"
    with pytest.raises(InvalidInput, match="unknown data category"):
        load_schema(bad, ws.taxonomy)


def test_a_rectified_value_is_bound_in_the_ledger_by_a_keyed_digest(customers: Workspace) -> None:
    """A plain hash of a low-entropy value (an income, a segment) is reversed by trying candidates: the
    rectification event binds the new value under the workspace key instead."""
    import hashlib

    from complai.vault.records import encode

    customers.vault.rectify("C-1002", "customers", "segment", "premium", actor="owner")
    (entry,) = list(customers.ledger.entries(kind="subject.rectified"))
    event = decode_event(entry.data)
    assert event.value_digest.startswith("hmac-sha256:")  # type: ignore[attr-defined]
    for guess in ("retail", "premium"):
        assert hashlib.sha256(encode([guess])).hexdigest() not in entry.data.decode()
