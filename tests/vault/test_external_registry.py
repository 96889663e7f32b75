"""External datasets, the parts without Spark: registration against physical types, enrolment and links,
eligibility (the same subjects a vault read reaches), refusals of in-process paths, erasure requests, and
migration 0018."""

from __future__ import annotations

import base64
import io
import json
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func, select, text, update

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.crypto.digest import digest_text
from complai.crypto.sealing import generate_keypair, key_id, load_private, load_public, open_sealed
from complai.errors import IntegrityError, InvalidInput
from complai.events import SubjectErased, SubjectsEnrolled, decode_event
from complai.store import Store
from complai.store.tables import datasets, external_erasures, external_sources, external_subjects, records, subjects
from complai.vault.external import ExternalSource, link_of
from complai.vault.schema import load_schema
from tests.vault.conftest import SCHEMA, consents_frame, people_frame

LAKE: dict[str, Any] = {**SCHEMA, "name": "lake_customers"}
PHYSICAL = {"customer_id": "string", "full_name": "string", "email": "string", "income": "bigint", "segment": "string"}
IDS = [cid for cid, *_ in people_frame().itertuples(index=False)]


def owner_source(tmp_path: Path, **kw: Any) -> ExternalSource:
    public = generate_keypair(tmp_path / "owner.key")
    text_key = "complai-x25519-public:" + base64.b64encode(public).decode()
    return ExternalSource(kind="parquet", location=str(tmp_path / "lake"), owner="crm", owner_key=text_key, **kw)


def register(ws: Workspace, tmp_path: Path, **kw: Any) -> ExternalSource:
    source = owner_source(tmp_path, **kw)
    ws.vault.register_external(load_schema(LAKE, ws.taxonomy), source, PHYSICAL, actor="owner")
    return source


def last_event(ws: Workspace) -> Any:
    return decode_event(ws.ledger.entry(ws.ledger.head().size - 1).data)


def count(ws: Workspace, table: Any) -> int:
    with ws.store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"income": "decimal(12,2)"}, "decimals are refused"),
        ({"income": "double"}, "declared integer, the source has double"),
        ({"segment": "int"}, "declared category"),
        ({"customer_id": "double"}, "the subject column is double"),
        ({"email": None}, "email: not in the source"),
    ],
)
def test_registration_refuses_physical_mismatch(
    ws: Workspace, tmp_path: Path, change: dict[str, str | None], words: str
) -> None:
    physical = {k: v for k, v in {**PHYSICAL, **change}.items() if v is not None}
    size = ws.ledger.head().size
    with pytest.raises(InvalidInput, match=words):
        ws.vault.register_external(load_schema(LAKE, ws.taxonomy), owner_source(tmp_path), physical, actor="owner")
    assert ws.ledger.head().size == size
    assert count(ws, datasets) == 0 and count(ws, external_sources) == 0


def test_registration_accepts_integral_widths_and_records_the_source(ws: Workspace, tmp_path: Path) -> None:
    source = owner_source(tmp_path, time_column=None)
    physical = {**PHYSICAL, "income": "int", "customer_id": "bigint", "extra": "decimal(3,1)"}
    ws.vault.register_external(load_schema(LAKE, ws.taxonomy), source, physical, actor="owner")
    event = last_event(ws)
    assert event.kind == "dataset.registered"
    with ws.store.read() as conn:
        stored = conn.execute(select(external_sources.c.physical_json)).scalar_one()
    assert event.source == {
        "kind": "parquet",
        "location": source.location,
        "owner": "crm",
        "owner_key_id": key_id(load_public(source.owner_key)),
        "erasure_days": "30",
        "physical_digest": digest_text(stored),
    }
    info = ws.catalog.get("lake_customers")
    assert info.source == source and type(info.source) is ExternalSource
    assert json.loads(stored) == physical


def test_time_column_must_be_a_date_field(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="time column 'income'"):
        register(ws, tmp_path, time_column="income")
    assert count(ws, datasets) == 0


def test_owner_key_must_be_an_x25519_public_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a complai X25519 public key"):
        ExternalSource(kind="parquet", location="x", owner="crm", owner_key="ssh-ed25519 AAAA")


def test_enrol_creates_subjects_links_and_consents(ws: Workspace, tmp_path: Path) -> None:
    register(ws, tmp_path)
    got = ws.vault.enrol("lake_customers", IDS, actor="owner", consents_data=consents_frame())
    assert (got.subjects, got.new_subjects, got.consents, got.already_enrolled) == (4, 4, 6, 0)
    event = last_event(ws)
    assert isinstance(event, SubjectsEnrolled)
    assert (event.dataset, event.subjects, event.new_subjects, event.consents) == ("lake_customers", 4, 4, 6)
    key = ws.vault.link_key("lake_customers")
    with ws.store.read() as conn:
        links = {bytes(x) for x in conn.execute(select(external_subjects.c.link)).scalars()}
        n_subjects = conn.execute(select(func.count()).select_from(subjects)).scalar_one()
    assert links == {link_of(key, i) for i in IDS}
    assert n_subjects == 4
    # the subject is a subject as any other: its export opens its sealed identity
    assert ws.vault.export("C-1001", actor="owner")["subject"]["id"] == "C-1001"
    # enrolling again links nobody twice
    again = ws.vault.enrol("lake_customers", [*IDS, "C-2000"], actor="owner")
    assert (again.subjects, again.new_subjects, again.already_enrolled) == (1, 1, 4)
    assert count(ws, external_subjects) == 5


def test_link_key_is_per_dataset_and_not_the_pseudonym_key(ws: Workspace) -> None:
    a, b = ws.vault.link_key("a"), ws.vault.link_key("b")
    assert a != b and len(a) == 32
    assert link_of(a, "C-1").hex() not in ws.vault.pseudonyms.subject("C-1")


@pytest.mark.parametrize("bad", [" C-1", "C-1 ", "", "\tC-1"])
def test_enrol_refuses_ids_with_whitespace(ws: Workspace, tmp_path: Path, bad: str) -> None:
    register(ws, tmp_path)
    size = ws.ledger.head().size
    with pytest.raises(InvalidInput, match="surrounding whitespace"):
        ws.vault.enrol("lake_customers", ["C-9", bad], actor="owner")
    assert ws.ledger.head().size == size
    assert count(ws, subjects) == 0 and count(ws, external_subjects) == 0


def test_enrol_only_into_external_datasets(customers: Workspace) -> None:
    with pytest.raises(InvalidInput, match="not external"):
        customers.vault.enrol("customers", ["C-1"], actor="owner")


def test_in_process_paths_refuse_external_datasets(ws: Workspace, tmp_path: Path) -> None:
    register(ws, tmp_path)
    ws.vault.enrol("lake_customers", IDS, actor="owner", consents_data=consents_frame())
    size = ws.ledger.head().size
    with pytest.raises(InvalidInput, match="is external"):
        ws.vault.fetch("lake_customers", "credit_scoring")
    with pytest.raises(InvalidInput, match="is external"):
        ws.vault.ingest("lake_customers", people_frame(), actor="owner")
    with pytest.raises(InvalidInput, match="is external"):
        ws.vault.rectify("C-1001", "lake_customers", "income", 5, actor="owner")
    assert ws.ledger.head().size == size
    assert count(ws, records) == 0


def _eligible_in_vault(ws: Workspace, purpose: str) -> set[str]:
    schema = ws.catalog.get("customers").schema
    at = ws.clock.now()
    q = (
        select(subjects.c.pseudonym)
        .select_from(records.join(subjects, subjects.c.id == records.c.subject_id))
        .where(ws.vault.eligible_condition(schema, purpose, at))
    )
    with ws.store.read() as conn:
        return {str(p) for p in conn.execute(q).scalars()}


def test_eligible_links_reach_the_subjects_a_vault_read_reaches(customers: Workspace, tmp_path: Path) -> None:
    ws = customers
    register(ws, tmp_path)
    ws.vault.enrol("lake_customers", IDS, actor="owner")  # the same subjects, their consents already given
    clock = ws.clock
    assert isinstance(clock, ManualClock)
    clock.advance(timedelta(minutes=1))
    ws.vault.withdraw_consent("C-1002", "credit_scoring", actor="owner")
    ws.vault.object("C-1003", "*", actor="owner")
    ws.vault.restrict("C-1004", actor="owner", reason="dispute")
    clock.advance(timedelta(minutes=1))
    key = ws.vault.link_key("lake_customers")
    by_link = {link_of(key, i): ws.vault.pseudonyms.subject(i) for i in IDS}
    for purpose in ("credit_scoring", "marketing", "fraud_detection", "customer_support"):
        links = ws.vault.eligible_links("lake_customers", purpose, ws.clock.now())
        assert {by_link[x] for x in links} == _eligible_in_vault(ws, purpose), purpose
    assert len(ws.vault.eligible_links("lake_customers", "credit_scoring", ws.clock.now())) == 1
    # before the withdrawal and the objection they were eligible (a restriction has no time: it holds now)
    before = ws.clock.now() - timedelta(minutes=2)
    assert len(ws.vault.eligible_links("lake_customers", "credit_scoring", before)) == 3
    ws.vault.erase("C-1001", actor="owner")
    assert ws.vault.eligible_links("lake_customers", "credit_scoring", ws.clock.now()) == []
    with pytest.raises(InvalidInput):
        ws.vault.eligible_links("lake_customers", "not_declared", ws.clock.now())


def test_erasure_opens_a_sealed_request_to_the_owner(ws: Workspace, tmp_path: Path) -> None:
    register(ws, tmp_path, erasure_days=10)
    ws.vault.enrol("lake_customers", IDS, actor="owner", consents_data=consents_frame())
    seq = ws.vault.erase("C-1002", actor="owner")
    event = decode_event(ws.ledger.entry(seq).data)
    assert isinstance(event, SubjectErased)
    assert event.external_requests is not None and len(event.external_requests) == 1
    [req] = ws.vault.external.pending("lake_customers")
    assert req.id == event.external_requests[0]
    assert req.state == "pending" and req.due_at - req.requested_at == timedelta(days=10)
    assert req.subject == ws.vault.pseudonyms.subject("C-1002")
    with ws.store.read() as conn:
        row = conn.execute(select(external_erasures)).one()
        enrolled = conn.execute(select(func.count()).select_from(external_subjects)).scalar_one()
    assert int(row.erase_seq) == seq
    assert bytes(row.link) == link_of(ws.vault.link_key("lake_customers"), "C-1002")
    assert enrolled == 3
    assert b"C-1002" not in bytes(row.request_sealed)
    # the ledger holds no id: the erasure names a pseudonym and request ids
    assert b"C-1002" not in ws.ledger.entry(seq).data

    out = tmp_path / "requests.jsonl"
    assert ws.vault.external.export_requests("lake_customers", out, actor="owner") == 1
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    line = json.loads(out.read_text())
    meta, reader = open_sealed(io.BytesIO(base64.b64decode(line["sealed"])), load_private(tmp_path / "owner.key"))
    assert json.loads(reader.read()) == {"dataset": "lake_customers", "subject_id": "C-1002", "request": req.id}
    assert meta["content"] == "complai-erasure-request/1"
    with pytest.raises(InvalidInput):  # never overwritten
        ws.vault.external.export_requests("lake_customers", out, actor="owner")

    link = bytes(row.link)
    _, results = ws.vault.external.record_check({"lake_customers": {link: 2}}, actor="auditor")
    assert results == {"lake_customers": {"requests": 1, "gone": 0, "present": 1}}
    assert ws.vault.external.pending("lake_customers")[0].state == "present"
    _, results = ws.vault.external.record_check({"lake_customers": {link: 0}}, actor="auditor")
    assert results == {"lake_customers": {"requests": 1, "gone": 1, "present": 0}}
    with ws.store.read() as conn:
        gone = conn.execute(select(external_erasures.c.state, external_erasures.c.request_sealed)).one()
    assert gone.state == "gone" and gone.request_sealed is None


def test_retention_keeps_enrolled_subjects_without_records(customers: Workspace, tmp_path: Path) -> None:
    ws = customers
    register(ws, tmp_path)
    ws.vault.enrol("lake_customers", ["C-1001"], actor="owner")
    clock = ws.clock
    assert isinstance(clock, ManualClock)
    clock.advance(timedelta(days=40))  # past the vault dataset's retention (P30D)
    swept = ws.vault.retention_sweep(actor="owner")
    assert swept["subjects_shredded"] == 3  # C-1001 stays: it is enrolled in the lake's dataset
    with ws.store.read() as conn:
        live = conn.execute(select(func.count()).where(subjects.c.erased_at.is_(None))).scalar_one()
    assert live == 1
    with ws.store.read() as conn:
        assert not ws.vault.subject(conn, "C-1001").erased


def test_migration_0018_upgrades_from_0017(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "ws", clock=ManualClock())
    url = ws.store.url
    ws.close()
    store = Store(url)
    with store.write() as conn:
        from alembic import command

        command.downgrade(store._alembic(conn), "0017")
        tables = {str(t) for t in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'")).scalars()}
        assert "external_sources" not in tables and "external_subjects" not in tables
        store.migrate(conn)
        assert store.current_revision(conn) == "0018"
        tables = {str(t) for t in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'")).scalars()}
    store.dispose()
    assert {"external_sources", "external_subjects", "external_erasures"} <= tables


def test_frames_given_as_consents_need_the_declared_purpose(ws: Workspace, tmp_path: Path) -> None:
    register(ws, tmp_path)
    bad = pd.DataFrame([("C-1001", "research")], columns=["subject", "purpose"])
    with pytest.raises(InvalidInput):
        ws.vault.enrol("lake_customers", IDS, actor="owner", consents_data=bad)
    assert count(ws, subjects) == 0


def test_dropping_an_external_dataset_unlinks_and_shreds_its_only_subjects(
    customers: Workspace, tmp_path: Path
) -> None:
    from complai.app.ops.compliance import compliance_services
    from complai.compliance import engine

    ws = customers
    register(ws, tmp_path)
    ws.vault.enrol("lake_customers", ["C-1001", "C-5000"], actor="owner")
    dropped = ws.vault.drop_dataset("lake_customers", actor="owner")
    assert (dropped.subjects, dropped.subjects_shredded) == (2, 1)  # C-1001 keeps its vault records
    assert count(ws, external_subjects) == 0
    with ws.store.read() as conn:
        assert not ws.vault.subject(conn, "C-1001").erased
    ctx = engine.AuditContext(compliance_services(ws.services), ws.clock.now())
    assert engine.CHECKS["reconciliation"](ctx).status == engine.PASS


def test_an_external_dataset_keeps_its_source_fields(ws: Workspace, tmp_path: Path) -> None:
    register(ws, tmp_path)
    region = {"name": "region", "type": "string", "category": "user.contact.address"}
    wider = {**LAKE, "fields": [*LAKE["fields"], region]}  # a vault dataset may gain a field; the lake's is fixed
    with pytest.raises(InvalidInput, match="is external"):
        ws.vault.alter_dataset("lake_customers", load_schema(wider, ws.taxonomy), actor="owner")
    fewer = {**LAKE, "purposes": {"credit_scoring": "gdpr.consent"}}
    altered = ws.vault.alter_dataset("lake_customers", load_schema(fewer, ws.taxonomy), actor="owner")
    assert altered.version == 2
    assert ws.catalog.get("lake_customers").source is not None


def test_consent_to_an_enrolled_subject_is_for_its_external_dataset(ws: Workspace, tmp_path: Path) -> None:
    register(ws, tmp_path)
    ws.vault.enrol("lake_customers", ["C-1001"], actor="owner")
    at = ws.clock.now()
    assert ws.vault.eligible_links("lake_customers", "marketing", at) == []
    ws.vault.grant_consent("C-1001", "marketing", actor="owner")
    assert len(ws.vault.eligible_links("lake_customers", "marketing", ws.clock.now())) == 1
    with pytest.raises(InvalidInput, match="not declared"):
        ws.vault.grant_consent("C-1001", "research", actor="owner")


def test_a_restore_reapplies_the_erasure_and_its_request(ws: Workspace, tmp_path: Path) -> None:
    from complai.app.backup import create_backup
    from complai.app.ops.compliance import compliance_services
    from complai.compliance import engine
    from complai.vault.backup import load_backup_key, new_backup_key

    register(ws, tmp_path)
    ws.vault.enrol("lake_customers", IDS, actor="owner")
    new_backup_key(tmp_path / "backup.key")
    key = load_backup_key(tmp_path / "backup.key")
    create_backup(ws.services, tmp_path / "b.bak", key, "owner")
    ws.vault.erase("C-1002", actor="owner")
    out = Workspace.restore_backup(tmp_path / "b.bak", tmp_path / "r", key, "owner", clock=ws.clock)
    assert out["erasures_reapplied"] == 1
    with Workspace.open(tmp_path / "r", clock=ws.clock) as restored:
        [req] = restored.vault.external.pending("lake_customers")
        assert req.subject == ws.vault.pseudonyms.subject("C-1002") and req.state == "pending"
        assert count(restored, external_subjects) == 3
        ctx = engine.AuditContext(compliance_services(restored.services), restored.clock.now())
        assert engine.CHECKS["reconciliation"](ctx).status == engine.PASS


def _source_recon(ws: Workspace) -> list[str]:
    from complai.app.ops.compliance import compliance_services
    from complai.compliance import engine, reconcile

    ctx = engine.AuditContext(compliance_services(ws.services), ws.clock.now())
    return reconcile.reconcile_external(ctx)


def test_an_owner_key_substituted_at_rest_seals_nothing_to_it_and_is_named(ws: Workspace, tmp_path: Path) -> None:
    register(ws, tmp_path)
    ws.vault.enrol("lake_customers", IDS, actor="owner")
    ws.vault.erase("C-1001", actor="owner")
    attacker = generate_keypair(tmp_path / "attacker.key")
    swapped = "complai-x25519-public:" + base64.b64encode(attacker).decode()
    with ws.store.write() as conn:
        conn.execute(update(external_sources).values(owner_key=swapped))
    assert _source_recon(ws) == [
        "external dataset lake_customers: its stored source (owner_key_id) is not the one its registration recorded"
    ]
    size = ws.ledger.head().size
    with pytest.raises(IntegrityError, match=r"stored source \(owner_key_id\)"):
        ws.vault.erase("C-1002", actor="owner")  # no request sealed to the substituted key: no erasure
    out = tmp_path / "requests.jsonl"
    with pytest.raises(IntegrityError, match="owner_key_id"):
        ws.vault.external.export_requests("lake_customers", out, actor="owner")
    assert not out.exists() and ws.ledger.head().size == size
    with ws.store.read() as conn:
        assert not ws.vault.subject(conn, "C-1002").erased
        assert [r.exported_at for r in conn.execute(select(external_erasures))] == [None]


@pytest.mark.parametrize(
    ("column", "value", "part"),
    [
        ("location", "/elsewhere/lake", "location"),
        ("kind", "table", "kind"),
        ("owner", "someone", "owner"),
        ("erasure_days", 3650, "erasure_days"),
        ("time_column", "signup", "time_column"),
    ],
)
def test_a_source_edited_at_rest_is_refused_before_any_read_or_scan(
    ws: Workspace, tmp_path: Path, column: str, value: Any, part: str
) -> None:
    register(ws, tmp_path)
    ws.vault.enrol("lake_customers", IDS, actor="owner")
    with ws.store.write() as conn:
        conn.execute(update(external_sources).values({column: value}))
    assert _source_recon(ws) == [
        f"external dataset lake_customers: its stored source ({part}) is not the one its registration recorded"
    ]
    for call in (
        lambda: ws.vault.external.info("lake_customers"),  # a governed frame and a scan start here
        lambda: ws.vault.eligible_links("lake_customers", "credit_scoring", ws.clock.now()),
        lambda: ws.vault.lake_frame("lake_customers", "credit_scoring", None, None),  # type: ignore[arg-type]
        lambda: ws.session(OWNER, "administration").verify_external_erasures("lake_customers"),
    ):
        with pytest.raises(IntegrityError, match=rf"stored source \({part}\)"):
            call()


def test_physical_types_edited_at_rest_are_named(ws: Workspace, tmp_path: Path) -> None:
    register(ws, tmp_path)
    assert _source_recon(ws) == []
    with ws.store.write() as conn:
        conn.execute(update(external_sources).values(physical_json=json.dumps({**PHYSICAL, "income": "string"})))
    assert _source_recon(ws) == [
        "external dataset lake_customers: its stored source (physical_digest) is not the one its registration recorded"
    ]
