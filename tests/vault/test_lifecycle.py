"""Datasets over time, on every backend: schema versions (alter) checked against every stored record, reads
presenting old records in the current schema, drops that crypto-shred as an erasure does, and RECON-1
accounting for both; edits of the stored versions at rest are caught."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func, select, update

from complai.access.identity import OWNER
from complai.app.backup import create_backup
from complai.app.ops.compliance import compliance_services
from complai.app.workspace import Workspace
from complai.compliance import engine
from complai.errors import AlreadyExists, IntegrityError, InvalidInput, NotFound, PolicyDenied
from complai.events import decode_event
from complai.store.tables import dataset_versions, datasets, records, subject_keys, subjects
from complai.vault.schema import load_schema
from tests.vault.conftest import SCHEMA

ORDERS: dict[str, Any] = {
    "name": "orders",
    "subject_column": "customer_id",
    "jurisdiction": "EU",
    "retention": "P30D",
    "purposes": {"customer_support": "gdpr.contract"},
    "fields": [
        {"name": "customer_id", "type": "string", "category": "user.unique_id", "identifier": "direct"},
        {"name": "amount", "type": "integer", "category": "user.financial", "min": 0, "max": 100_000},
    ],
}


def _schema(**changes: Any) -> dict[str, Any]:
    """SCHEMA with top-level keys replaced and `fields` edited by name (None removes a field)."""
    out = copy.deepcopy(SCHEMA)
    fields = changes.pop("field_changes", {})
    extra = changes.pop("extra_fields", [])
    out.update(changes)
    new_fields = []
    for f in out["fields"]:
        if f["name"] in fields:
            if fields[f["name"]] is None:
                continue
            f = {**f, **fields[f["name"]]}
        new_fields.append(f)
    out["fields"] = new_fields + extra
    return out


def _recon(ws: Workspace) -> engine.Finding:
    return engine.CHECKS["reconciliation"](engine.AuditContext(compliance_services(ws.services), ws.clock.now()))


def _events(ws: Workspace, kind: str) -> list[Any]:
    return [decode_event(e.data) for e in ws.ledger.entries() if e.kind == kind]


def _version(ws: Workspace, name: str = "customers") -> int:
    with ws.store.read() as conn:
        return int(conn.execute(select(datasets.c.version).where(datasets.c.name == name)).scalar_one())


LOYALTY = {"name": "loyalty", "type": "integer", "category": "user.behavior", "min": 0, "max": 10}


def test_adding_a_field_and_widening_a_bound_makes_version_2_and_old_records_read_with_null(
    customers: Workspace,
) -> None:
    owner = customers.session(OWNER, "administration")
    new = _schema(field_changes={"income": {"max": 20_000_000}}, extra_fields=[LOYALTY])
    result = owner.alter_dataset("customers", new)
    assert (result.from_version, result.version) == (1, 2)
    assert result.changes["added"] == ["loyalty (integer)"]
    assert result.changes["widened"] == ["income: max 10000000.0 -> 20000000.0"]
    assert "narrowed" not in result.changes and result.records_checked == 0  # nothing narrowed: nothing to check
    (ev,) = _events(customers, "dataset.altered")
    assert ev.version == 2 and ev.schema_digest == result.schema_digest != ev.from_schema_digest
    customers.vault.ingest(
        "customers",
        pd.DataFrame([("C-2001", "Ada", None, 15_000_000, "retail", 7)], columns=[*[f["name"] for f in new["fields"]]]),
        actor="owner",
    )
    frame = customers.session(OWNER, "customer_support").read("customers").set_index("customer_id")
    assert frame.loc["C-2001", "loyalty"] == 7 and frame.loc["C-2001", "income"] == 15_000_000
    for old in ("C-1001", "C-1002", "C-1003", "C-1004"):
        assert pd.isna(frame.loc[old, "loyalty"])
    assert frame.loc["C-1001", "income"] == 731_337 and frame.loc["C-1002", "segment"] == "retail"
    with customers.store.read() as conn:
        stamped = dict(
            conn.execute(select(records.c.schema_version, func.count()).group_by(records.c.schema_version)).all()
        )
        assert conn.execute(select(func.count()).select_from(dataset_versions)).scalar_one() == 2
    assert stamped == {1: 4, 2: 1}
    export = customers.vault.export("C-1003", actor="owner")
    assert export["records"]["customers"][0]["fields"]["loyalty"] is None
    assert export["records"]["customers"][0]["fields"]["income"] == 612_987
    assert _recon(customers).status == "pass", _recon(customers).items


def test_narrowing_is_refused_with_the_count_of_records_that_do_not_fit_and_changes_nothing(
    customers: Workspace,
) -> None:
    owner = customers.session(OWNER, "administration")
    size = customers.ledger.head().size
    # incomes 731337, 48250, 612987, 95111; segments premium, retail, retail, premium
    with pytest.raises(InvalidInput, match=r"2 stored record\(s\) do not fit the new schema \(income: 2\)"):
        owner.alter_dataset("customers", _schema(field_changes={"income": {"max": 100_000}}))
    with pytest.raises(InvalidInput, match=r"3 stored record\(s\) do not fit .*income: 2, segment: 2"):
        owner.alter_dataset(
            "customers", _schema(field_changes={"income": {"max": 100_000}, "segment": {"values": ["retail"]}})
        )
    with pytest.raises(InvalidInput, match=r"1 stored record\(s\) .*income: 1"):
        owner.alter_dataset("customers", _schema(field_changes={"income": {"min": 50_000}}))
    with pytest.raises(InvalidInput) as refused:
        owner.alter_dataset("customers", _schema(field_changes={"income": {"max": 100_000}}))
    assert "731337" not in str(refused.value) and "612987" not in str(refused.value)  # counts, never values
    assert customers.ledger.head().size == size and _version(customers) == 1
    fits = owner.alter_dataset("customers", _schema(field_changes={"income": {"max": 1_000_000}}))
    assert fits.records_checked == 4 and fits.changes["narrowed"] == ["income: max 10000000.0 -> 1000000.0"]
    assert _version(customers) == 2


def test_a_narrowed_value_list_and_a_field_made_required_are_checked_across_versions(customers: Workspace) -> None:
    owner = customers.session(OWNER, "administration")
    owner.alter_dataset("customers", _schema(extra_fields=[LOYALTY]))
    customers.vault.ingest(
        "customers",
        pd.DataFrame(
            [("C-3001", "Bo", None, 1, "retail", 4)],
            columns=["customer_id", "full_name", "email", "income", "segment", "loyalty"],
        ),
        actor="owner",
    )
    # the four version-1 records have no loyalty: making it required is refused for exactly those
    with pytest.raises(InvalidInput, match=r"4 stored record\(s\) .*loyalty: 4"):
        owner.alter_dataset("customers", _schema(extra_fields=[{**LOYALTY, "nullable": False}]))
    # emails: three set in version 1, none in the version-2 record
    with pytest.raises(InvalidInput, match=r"1 stored record\(s\) .*email: 1"):
        owner.alter_dataset("customers", _schema(field_changes={"email": {"nullable": False}}, extra_fields=[LOYALTY]))


def test_a_dry_run_checks_and_writes_nothing(customers: Workspace) -> None:
    owner = customers.session(OWNER, "administration")
    size = customers.ledger.head().size
    result = owner.alter_dataset("customers", _schema(field_changes={"income": {"max": 1_000_000}}), dry_run=True)
    assert result.dry_run and result.seq is None and result.version == 2 and result.records_checked == 4
    assert customers.ledger.head().size == size and _version(customers) == 1
    with customers.store.read() as conn:
        assert conn.execute(select(func.count()).select_from(dataset_versions)).scalar_one() == 1
    with pytest.raises(InvalidInput, match="2 stored record"):
        owner.alter_dataset("customers", _schema(field_changes={"income": {"max": 100_000}}), dry_run=True)
    assert customers.ledger.head().size == size


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"field_changes": {"email": None}}, "removing field"),
        ({"field_changes": {"income": {"type": "float"}}}, "cannot change type"),
        ({"extra_fields": [{**LOYALTY, "nullable": False}]}, "must be nullable"),
        ({"jurisdiction": "US-CA"}, "jurisdiction cannot change"),
        ({"name": "clients"}, "names dataset 'clients'"),
        ({}, "the same as its current version 1"),
    ],
)
def test_changes_no_migration_makes_safe_are_refused(customers: Workspace, change: dict[str, Any], why: str) -> None:
    size = customers.ledger.head().size
    with pytest.raises(InvalidInput, match=why):
        customers.session(OWNER, "administration").alter_dataset("customers", _schema(**change))
    assert customers.ledger.head().size == size and _version(customers) == 1


def test_a_new_retention_applies_to_records_ingested_after_the_change(customers: Workspace) -> None:
    owner = customers.session(OWNER, "administration")
    result = owner.alter_dataset("customers", _schema(retention="P90D"))
    assert result.changes["retention"] == ["P30D -> P90D (for records ingested from now on)"]
    assert any("stored records keep their expiry" in n for n in result.notes)
    customers.vault.ingest(
        "customers",
        pd.DataFrame([("C-4001", "Cy", None, 3, "retail")], columns=[f["name"] for f in SCHEMA["fields"]]),
        actor="owner",
    )
    with customers.store.read() as conn:
        spans = {
            v: (e - c) // 86_400_000_000
            for v, c, e in conn.execute(select(records.c.schema_version, records.c.created_us, records.c.expires_us))
        }
    assert spans == {1: 30, 2: 90}
    assert _recon(customers).status == "pass", _recon(customers).items
    customers.clock.advance(timedelta(days=31))  # type: ignore[attr-defined]
    assert customers.vault.retention_sweep("owner")["records_deleted"] == 4  # the old records, by their own expiry
    assert _recon(customers).status == "pass", _recon(customers).items


def test_a_removed_purpose_stops_its_reads_and_keeps_its_consents(customers: Workspace) -> None:
    purposes = {k: v for k, v in SCHEMA["purposes"].items() if k != "marketing"}
    result = customers.session(OWNER, "administration").alter_dataset("customers", _schema(purposes=purposes))
    assert result.changes["purposes"] == ["removed marketing (reads for it stop; consents given for it stay)"]
    with pytest.raises(InvalidInput, match="not allowed"):
        customers.session(OWNER, "marketing").read("customers")
    export = customers.vault.export("C-1001", actor="owner")
    assert "marketing" in {c["purpose"] for c in export["consents"]}
    assert _recon(customers).status == "pass", _recon(customers).items


def test_rectifying_an_old_record_seals_it_under_the_current_version(customers: Workspace) -> None:
    customers.session(OWNER, "administration").alter_dataset("customers", _schema(extra_fields=[LOYALTY]))
    customers.vault.rectify("C-1002", "customers", "loyalty", 9, actor="owner")
    frame = customers.session(OWNER, "customer_support").read("customers").set_index("customer_id")
    assert frame.loc["C-1002", "loyalty"] == 9 and frame.loc["C-1002", "income"] == 48_250
    with customers.store.read() as conn:
        versions = sorted(conn.execute(select(records.c.schema_version)).scalars())
    assert versions == [1, 1, 1, 2]
    assert _recon(customers).status == "pass", _recon(customers).items


def _with_orders(ws: Workspace) -> Workspace:
    ws.catalog.register(load_schema(ORDERS, ws.taxonomy), actor="owner")
    ws.vault.ingest(
        "orders",
        pd.DataFrame(
            [("C-1001", 20), ("C-9001", 30), ("C-9001", 31), ("C-9002", 40)], columns=["customer_id", "amount"]
        ),
        actor="owner",
    )
    return ws


def _key_count(ws: Workspace, external: str) -> int:
    p = ws.pseudonyms.subject(external)
    with ws.store.read() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(subject_keys.join(subjects, subjects.c.id == subject_keys.c.subject_id))
                .where(subjects.c.pseudonym == p)
            ).scalar_one()
        )


def test_a_drop_deletes_every_record_shreds_subjects_left_without_any_and_audits_clean(customers: Workspace) -> None:
    ws = _with_orders(customers)
    ws.session(OWNER, "administration").alter_dataset(
        "orders", {**ORDERS, "fields": [*ORDERS["fields"], {**LOYALTY, "name": "channel"}]}
    )
    size = ws.ledger.head().size
    result = ws.session(OWNER, "administration").drop_dataset("orders")
    assert (result.records, result.subjects, result.subjects_shredded, result.subjects_kept) == (4, 3, 2, 1)
    assert result.keys_destroyed == 2 and result.seq == size  # one event
    assert ws.ledger.head().size == size + 1
    (ev,) = _events(ws, "dataset.dropped")
    assert ev.records == 4 and ev.subjects_shredded == 2 and ev.version == 2
    with ws.store.read() as conn:
        assert conn.execute(select(func.count()).where(records.c.dataset == "orders")).scalar_one() == 0
        assert conn.execute(select(datasets.c.dropped_at).where(datasets.c.name == "orders")).scalar() is not None
    for shredded in ("C-9001", "C-9002"):
        assert _key_count(ws, shredded) == 0
        with pytest.raises(NotFound):
            ws.vault.export(shredded, actor="owner")
    assert _key_count(ws, "C-1001") == 1  # keeps its key for its customers record
    assert "C-1001" in set(ws.session(OWNER, "customer_support").read("customers")["customer_id"])
    assert "orders" not in ws.catalog.names()
    with pytest.raises(NotFound):
        ws.session(OWNER, "customer_support").read("orders")
    with pytest.raises(AlreadyExists, match="was dropped"):
        ws.catalog.register(load_schema(ORDERS, ws.taxonomy), actor="owner")
    with pytest.raises(NotFound):
        ws.session(OWNER, "administration").drop_dataset("orders")
    finding = _recon(ws)
    assert finding.status == "pass", finding.items
    ctx = engine.AuditContext(compliance_services(ws.services), ws.clock.now())
    named = [i for c in engine.run_controls(ctx) for i in c.get("items") or [] if "orders" in json.dumps(i)]
    assert named == []  # a dropped dataset is processed no more: no record of processing, no declaration checks


def test_a_drop_by_a_principal_without_the_permission_is_refused_and_nothing_changes(customers: Workspace) -> None:
    ws = _with_orders(customers)
    ws.identity.add(OWNER, "ana", "service")
    ws.identity.grant_role(OWNER, "ana", "analyst")
    with ws.store.read() as conn:
        before = conn.execute(select(func.count()).select_from(records)).scalar_one()
    size = ws.ledger.head().size
    with pytest.raises(PolicyDenied):
        ws.session("ana", "administration").drop_dataset("orders")
    with pytest.raises(PolicyDenied):
        ws.session("ana", "administration").alter_dataset("orders", Path("/nonexistent/schema.yaml"))
    kinds = [e.kind for e in ws.ledger.entries(start=size)]
    assert kinds == ["access.denied", "access.denied"]  # the refusals, and nothing else
    with ws.store.read() as conn:
        assert conn.execute(select(func.count()).select_from(records)).scalar_one() == before
    assert _key_count(ws, "C-9001") == 1


def test_an_edited_schema_version_is_caught_on_read_and_by_recon_1(customers: Workspace) -> None:
    ws = customers
    ws.session(OWNER, "administration").alter_dataset("customers", _schema(extra_fields=[LOYALTY]))
    with ws.store.write() as conn:
        text = conn.execute(select(dataset_versions.c.schema_json).where(dataset_versions.c.version == 1)).scalar_one()
        raw = json.loads(text)
        raw["fields"][1], raw["fields"][2] = raw["fields"][2], raw["fields"][1]  # swap name and email
        conn.execute(
            update(dataset_versions).where(dataset_versions.c.version == 1).values(schema_json=json.dumps(raw))
        )
    with pytest.raises(IntegrityError, match="version 1 does not match its digest"):
        ws.session(OWNER, "customer_support").read("customers")
    assert any("stored schema version 1 is not the one" in i["problem"] for i in _recon(ws).items)


def test_an_edited_version_digest_fails_record_authentication(customers: Workspace) -> None:
    ws = customers
    from complai.crypto.digest import digest_text

    with ws.store.write() as conn:
        fake = json.dumps({"forged": True})
        conn.execute(update(dataset_versions).values(schema_json=fake, schema_digest=digest_text(fake)))
    with pytest.raises(IntegrityError):
        ws.session(OWNER, "customer_support").read("customers")
    problems = [i["problem"] for i in _recon(ws).items]
    assert any("stored schema version 1 is not the one" in p for p in problems)


def test_a_dataset_marked_dropped_or_revived_at_rest_is_named(customers: Workspace) -> None:
    ws = _with_orders(customers)
    ws.session(OWNER, "administration").drop_dataset("orders")
    with ws.store.write() as conn:
        conn.execute(update(datasets).where(datasets.c.name == "orders").values(dropped_at=None))
        conn.execute(update(datasets).where(datasets.c.name == "customers").values(dropped_at=ws.clock.now()))
    problems = [i["problem"] for i in _recon(ws).items]
    assert any("orders: dropped at ledger entry" in p and "live in the store" in p for p in problems)
    assert any("customers: marked dropped, but the ledger records no drop" in p for p in problems)


def test_a_restore_of_a_backup_from_before_a_drop_drops_it_again(
    customers: Workspace, key: bytes, tmp_path: Path
) -> None:
    ws = _with_orders(customers)
    create_backup(ws.services, tmp_path / "b.bak", key, "owner")
    ws.session(OWNER, "administration").drop_dataset("orders")
    out = Workspace.restore_backup(tmp_path / "b.bak", tmp_path / "r", key, "owner", clock=ws.clock)
    assert out["later_ledger_checked"] and out["drops_reapplied"] == 1
    with Workspace.open(tmp_path / "r", clock=ws.clock) as r:
        assert "orders" not in r.catalog.names()
        for shredded in ("C-9001", "C-9002"):
            with pytest.raises(NotFound):
                r.vault.export(shredded, actor="owner")
        assert "C-1001" in set(r.session(OWNER, "customer_support").read("customers")["customer_id"])
        (ev,) = [decode_event(e.data) for e in r.ledger.entries() if e.kind == "dataset.dropped"]
        assert ev.reapplied_from is not None  # type: ignore[attr-defined]
        finding = _recon(r)
        assert finding.status == "pass", finding.items


def test_an_ingest_that_read_the_schema_before_a_change_is_refused_and_stores_nothing(
    customers: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_get = customers.catalog.get

    def get_then_alter(name: str) -> Any:
        info = real_get(name)
        monkeypatch.setattr(customers.catalog, "get", real_get)
        customers.session(OWNER, "administration").alter_dataset("customers", _schema(extra_fields=[LOYALTY]))
        return info

    monkeypatch.setattr(customers.catalog, "get", get_then_alter)
    row = pd.DataFrame([("C-5001", "Di", None, 3, "retail")], columns=[f["name"] for f in SCHEMA["fields"]])
    with pytest.raises(InvalidInput, match="changed to schema version 2 meanwhile"):
        customers.vault.ingest("customers", row, actor="owner")
    with customers.store.read() as conn:
        assert conn.execute(select(func.count()).select_from(records)).scalar_one() == 4
    customers.vault.ingest("customers", row, actor="owner")  # run again: under version 2
    with customers.store.read() as conn:
        assert conn.execute(select(func.max(records.c.schema_version))).scalar_one() == 2


def test_dp_answers_record_the_schema_version_they_were_planned_against(customers: Workspace) -> None:
    owner = customers.session(OWNER, "administration")
    owner.set_budget("customers", 2.0, 1e-6)
    analyst = customers.session(OWNER, "fraud_detection")
    analyst.dp_query("SELECT COUNT(*) FROM customers", 0.5)
    v1 = owner.alter_dataset("customers", _schema(field_changes={"income": {"max": 20_000_000}}))
    analyst.dp_query("SELECT COUNT(*) FROM customers", 0.5)
    first, second = _events(customers, "dp.query")
    assert (first.schema_digest, second.schema_digest) == (v1.from_schema_digest, v1.schema_digest)
    assert second.epsilon_remaining == pytest.approx(1.0)  # one budget for the dataset, across its versions


def test_a_drop_flags_the_models_its_records_trained(customers: Workspace) -> None:
    from complai.store.tables import model_subjects, models

    ws = _with_orders(customers)
    with ws.store.write() as conn:
        ids = dict(conn.execute(select(subjects.c.pseudonym, subjects.c.id)).all())
        for model_id, dataset in (("m-orders", "orders"), ("m-customers", "customers")):
            conn.execute(
                models.insert().values(
                    id=model_id,
                    dataset=dataset,
                    task="classification",
                    architecture="logreg",
                    purpose="customer_support",
                    created_by="owner",
                    created_at=ws.clock.now(),
                    private=False,
                    subjects=1,
                    model_digest="sha256:" + "0" * 64,
                    card_digest="sha256:" + "0" * 64,
                    card="{}",
                )
            )
        conn.execute(
            model_subjects.insert().values(model_id="m-orders", subject_id=ids[ws.pseudonyms.subject("C-1001")])
        )
        conn.execute(
            model_subjects.insert().values(model_id="m-customers", subject_id=ids[ws.pseudonyms.subject("C-1001")])
        )
    ws.session(OWNER, "administration").drop_dataset("orders")
    with ws.store.read() as conn:
        flags = dict(conn.execute(select(models.c.id, models.c.flag_reason)).all())
    # C-1001 keeps its key (a customers record): the orders model is flagged, the customers model is not
    assert flags == {"m-orders": "a training record was deleted with its dataset", "m-customers": None}


def test_the_subject_column_made_nullable_and_required_again_checks_nothing_it_does_not_hold(
    customers: Workspace,
) -> None:
    owner = customers.session(OWNER, "administration")
    widened = owner.alter_dataset("customers", _schema(field_changes={"customer_id": {"nullable": True}}))
    assert widened.changes["widened"] == ["customer_id: now nullable"]
    narrowed = owner.alter_dataset("customers", _schema())
    assert narrowed.changes["narrowed"] == ["customer_id: no longer nullable"] and narrowed.version == 3
