"""External datasets through Spark: registration against a real source's physical types, the governed
frame's consent and objection filter against the vault's own eligibility on the same subjects, refusals
before any Spark job, and erasure verified by scanning the source (ERASE-2)."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pytest
from sqlalchemy import select

from complai.access.identity import OWNER
from complai.app.ops.compliance import compliance_services
from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.compliance import engine
from complai.errors import InvalidInput, PolicyDenied
from complai.events import decode_event
from complai.store.tables import datasets, external_erasures
from complai.vault.external import link_of
from complai.vault.lake import link_column
from complai.vault.schema import load_schema
from tests.spark.conftest import write_parquet
from tests.vault.conftest import SCHEMA, consents_frame, people_frame
from tests.vault.test_external_registry import LAKE, owner_source

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

COPIES = 3  # rows per subject in the lake


def lake_rows() -> pd.DataFrame:
    """Each vault subject three times, and one subject the vault never enrolls."""
    stranger = pd.DataFrame([("X-9", "Ann Other", "ann@example.org", 1, "retail")], columns=people_frame().columns)
    return pd.concat([people_frame()] * COPIES + [stranger], ignore_index=True)


def source_of(tmp_path: Path, location: str) -> dict[str, Any]:
    """A source at `location`, owned by a system whose key pair is under tmp_path (made once)."""
    pub = tmp_path / "owner.key.pub"
    key = pub.read_text().strip() if pub.exists() else owner_source(tmp_path).owner_key
    return {"kind": "parquet", "location": location, "owner": "crm", "owner_key": key}


def jobs(spark: SparkSession) -> list[int]:
    return sorted(spark.sparkContext.statusTracker().getJobIdsForGroup(None))


def last_event(ws: Workspace) -> dict[str, Any]:
    return json.loads(ws.ledger.entry(ws.ledger.head().size - 1).data)


@pytest.fixture
def both(spark_ws: Workspace, tmp_path: Path) -> Workspace:
    """The same subjects in a vault dataset (one record each) and in an external one (three rows each)."""
    ws = spark_ws
    ws.catalog.register(load_schema(SCHEMA, ws.taxonomy), actor=OWNER)
    ws.vault.ingest("customers", people_frame(), actor=OWNER, consents_data=consents_frame())
    location = write_parquet(tmp_path, lake_rows(), "lake.parquet")
    s = ws.session(OWNER, "administration")
    s.register_external(load_schema(LAKE, ws.taxonomy), source_of(tmp_path, location))
    s.enrol("lake_customers", [cid for cid, *_ in people_frame().itertuples(index=False)])
    return ws


def test_registration_reads_the_physical_schema_and_refuses_mismatches(
    spark_ws: Workspace, spark: SparkSession, tmp_path: Path
) -> None:
    ws = spark_ws
    s = ws.session(OWNER, "administration")
    frame = people_frame()
    as_decimal = pa.Table.from_pandas(frame.assign(income=[Decimal(v) for v in frame["income"]]), preserve_index=False)
    for data, words in (
        (as_decimal, "decimals are refused"),
        (frame.assign(income=frame["income"].astype(float)), "declared integer, the source has double"),
        (frame.drop(columns=["email"]), "email: not in the source"),
    ):
        size = ws.ledger.head().size
        with pytest.raises(InvalidInput, match=words):
            s.register_external(load_schema(LAKE, ws.taxonomy), source_of(tmp_path, write_parquet(tmp_path, data)))
        assert ws.ledger.head().size == size
    with ws.store.read() as conn:
        assert conn.execute(select(datasets.c.name)).first() is None
    s.register_external(load_schema(LAKE, ws.taxonomy), source_of(tmp_path, write_parquet(tmp_path, frame)))
    assert last_event(ws)["source"]["kind"] == "parquet"
    with pytest.raises(InvalidInput, match="cannot open the source"):
        s.register_external(
            load_schema({**LAKE, "name": "nowhere"}, ws.taxonomy), source_of(tmp_path, str(tmp_path / "missing"))
        )


def test_the_governed_frame_keeps_exactly_the_subjects_a_vault_read_reaches(
    both: Workspace, spark: SparkSession
) -> None:
    ws = both
    clock = ws.clock
    assert isinstance(clock, ManualClock)
    clock.advance(timedelta(minutes=1))
    ws.vault.withdraw_consent("C-1002", "credit_scoring", actor=OWNER)
    ws.vault.object("C-1003", "marketing", actor=OWNER)
    ws.vault.object("C-1004", "*", actor=OWNER)
    clock.advance(timedelta(minutes=1))
    for purpose in ("credit_scoring", "marketing", "fraud_detection", "customer_support"):
        in_vault = ws.vault.fetch("customers", purpose).frame["customer_id"].tolist()
        frame = ws.vault.lake_frame("lake_customers", purpose, ["income"], spark)
        assert frame.columns == ["customer_id", "income"]
        in_lake = [r.customer_id for r in frame.collect()]
        assert sorted(in_lake) == sorted(in_vault * COPIES), purpose  # exact counts, never the stranger
    everything = ws.vault.lake_frame("lake_customers", "credit_scoring", None, spark)
    assert everything.columns == [f.name for f in ws.catalog.get("lake_customers").schema.fields]
    assert sorted(r.customer_id for r in everything.collect()) == ["C-1001"] * COPIES + ["C-1003"] * COPIES


def test_refusals_come_before_any_spark_job(both: Workspace, spark: SparkSession, tmp_path: Path) -> None:
    ws = both
    before = jobs(spark)
    with pytest.raises(InvalidInput):
        ws.vault.lake_frame("lake_customers", "research", ["income"], spark)
    with pytest.raises(InvalidInput, match="unknown column"):
        ws.vault.lake_frame("lake_customers", "marketing", ["salary"], spark)
    ws.identity.add(OWNER, "nobody", "service")
    nobody = ws.session("nobody", "administration")
    other = write_parquet(tmp_path, people_frame())
    with pytest.raises(PolicyDenied):
        nobody.register_external(load_schema({**LAKE, "name": "other"}, ws.taxonomy), source_of(tmp_path, other))
    assert last_event(ws)["type"] == "access.denied"
    with pytest.raises(PolicyDenied):
        nobody.enrol_from_source("lake_customers")
    assert last_event(ws)["type"] == "access.denied"
    with pytest.raises(PolicyDenied):
        ws.session("nobody", "audit").verify_external_erasures()
    assert last_event(ws)["type"] == "access.denied"
    assert jobs(spark) == before


def test_the_link_spark_computes_is_the_drivers(spark: SparkSession) -> None:
    from pyspark.sql import functions as F

    key = bytes(range(32))
    ids = ["C-1001", "Zoë Ünïcode", "客户-7", "12345"]
    frame = spark.createDataFrame(pd.DataFrame({"s": ids, "n": [1, 2, 3, 12345]}))
    rows = frame.select(link_column(F.col("s"), key).alias("a"), link_column(F.col("n"), key).alias("b")).collect()
    assert [bytes(r.a) for r in rows] == [link_of(key, i) for i in ids]
    assert bytes(rows[3].b) == link_of(key, "12345")  # an integral subject column links as its text


def test_enrol_from_source_enrols_every_distinct_id(spark_ws: Workspace, tmp_path: Path) -> None:
    ws = spark_ws
    s = ws.session(OWNER, "administration")
    s.register_external(load_schema(LAKE, ws.taxonomy), source_of(tmp_path, write_parquet(tmp_path, lake_rows())))
    got = s.enrol_from_source("lake_customers", consents=consents_frame())
    assert (got.subjects, got.new_subjects, got.consents) == (5, 5, 6)
    assert last_event(ws)["type"] == "external.enrolled"


def test_erasure_is_verified_by_scanning_the_source(both: Workspace, spark: SparkSession, tmp_path: Path) -> None:
    ws = both
    clock = ws.clock
    assert isinstance(clock, ManualClock)
    seq = ws.session(OWNER, "subject_request").erase_subject("C-1002")
    requests = decode_event(ws.ledger.entry(seq).data).external_requests  # type: ignore[attr-defined]
    assert requests is not None and len(requests) == 1
    audit = ws.session(OWNER, "audit")
    assert [r.state for r in audit.erasure_requests()] == ["pending"]
    # the owner has not deleted the rows yet
    assert audit.verify_external_erasures() == {"lake_customers": {"requests": 1, "gone": 0, "present": 1}}
    assert last_event(ws)["type"] == "external.erasure_checked"
    ctx = engine.AuditContext(compliance_services(ws.services), ws.clock.now())
    assert engine.CHECKS["external_erasure"](ctx).status == engine.WARN
    clock.advance(timedelta(days=31))
    ctx = engine.AuditContext(compliance_services(ws.services), ws.clock.now())
    assert engine.CHECKS["external_erasure"](ctx).status == engine.FAIL
    # the owner deletes them (the source is rewritten without the subject), and the next check sees it
    kept = lake_rows()
    write_parquet(tmp_path, kept[kept["customer_id"] != "C-1002"], "lake.parquet")
    spark.catalog.clearCache()
    assert audit.verify_external_erasures("lake_customers") == {
        "lake_customers": {"requests": 1, "gone": 1, "present": 0}
    }
    ctx = engine.AuditContext(compliance_services(ws.services), ws.clock.now())
    results = {c["id"]: c for c in engine.run_controls(ctx)}
    assert results["ERASE-2"]["status"] == "pass"
    assert results["RECON-1"]["status"] == "pass", results["RECON-1"]["items"]
    with ws.store.read() as conn:
        assert conn.execute(select(external_erasures.c.request_sealed)).scalar_one() is None
    # nothing is open: a further check runs no job and records nothing
    size, before = ws.ledger.head().size, jobs(spark)
    assert audit.verify_external_erasures() == {}
    assert (ws.ledger.head().size, jobs(spark)) == (size, before)


def test_a_governed_spark_read_is_recorded_as_a_vault_read(both: Workspace, spark: SparkSession) -> None:
    ws = both
    ws.vault.object("C-1002", "marketing", actor=OWNER)
    s = ws.session(OWNER, "marketing")
    before = jobs(spark)
    with pytest.raises(InvalidInput, match="does not de-identify"):
        s.read_spark("lake_customers", ["income"], deidentify={"drop_direct_identifiers": True})
    with pytest.raises(InvalidInput, match="is not external"):
        s.read_spark("customers")
    assert jobs(spark) == before
    got = s.read_spark("lake_customers", ["customer_id", "income"])
    assert sorted(r.customer_id for r in got.frame.collect()) == ["C-1001"] * COPIES  # C-1002 objects
    event = json.loads(ws.ledger.entry(got.ledger_seq).data)
    assert event["type"] == "vault.read" and event["dataset"] == "lake_customers"
    assert (event["rows"], event["subjects"], event["records_in_dataset"]) == (COPIES, 1, len(lake_rows()))
    assert event["columns"] == ["customer_id", "income"]
    ctx = engine.AuditContext(compliance_services(ws.services), ws.clock.now())
    results = {c["id"]: c for c in engine.run_controls(ctx)}
    assert results["CONSENT-1"]["status"] == "pass"
    assert results["RECON-1"]["status"] == "pass", results["RECON-1"]["items"]


def test_a_time_column_keeps_rows_within_retention(spark_ws: Workspace, spark: SparkSession, tmp_path: Path) -> None:
    ws = spark_ws
    now = ws.clock.now()
    schema = {
        **LAKE,
        "name": "visits",
        "fields": [*LAKE["fields"], {"name": "at", "type": "datetime", "category": "user.behavior"}],
    }
    ages = [0, 10, 29, 31, 400]  # days; the retention is P30D
    rows = pd.concat([people_frame().iloc[[0]]] * len(ages), ignore_index=True)
    rows["at"] = pd.to_datetime([now - timedelta(days=d) for d in ages], utc=True)
    location = write_parquet(tmp_path, rows)
    s = ws.session(OWNER, "administration")
    s.register_external(load_schema(schema, ws.taxonomy), {**source_of(tmp_path, location), "time_column": "at"})
    s.enrol("visits", ["C-1001"], consents=consents_frame().iloc[[0]])
    kept = ws.vault.lake_frame("visits", "credit_scoring", ["at"], spark).collect()
    assert len(kept) == 3  # 0, 10 and 29 days old
