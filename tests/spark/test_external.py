"""External datasets through Spark: registration against a real source's physical types, the governed
frame's consent and objection filter against the vault's own eligibility on the same subjects, refusals
before any Spark job, and erasure verified by scanning the source (ERASE-2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pytest
import yaml
from sqlalchemy import select

from complai.access.identity import OWNER
from complai.app.ops.compliance import compliance_services
from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.compliance import engine
from complai.errors import IntegrityError, InvalidInput, PolicyDenied
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


def stage_names(spark: SparkSession, job: int) -> list[str]:
    """The job's stages by the operation that started them ("parquet": reading a Parquet file's schema)."""
    tracker = spark.sparkContext.statusTracker()
    info = tracker.getJobInfo(job)
    assert info is not None
    names = [tracker.getStageInfo(s) for s in info.stageIds]
    return [n.name.split(" at ")[0] for n in names if n is not None]


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
    with pytest.raises(InvalidInput, match="in process only"):
        s.read_spark("lake_customers", ["income"], deidentify={"k": 2})
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


def _drifted(change: str) -> pa.Table:
    """The lake's rows (the file registered) rewritten with one change, as an owner system might."""
    rows = lake_rows()
    if change == "subject_int":  # the same subjects under integer ids: no link would match
        rows = rows.assign(customer_id=range(len(rows)))
    elif change == "income_string":  # a value no cast can take
        rows = rows.assign(income=["ZZZ-SECRET-LEAK"] + [str(v) for v in rows["income"][1:]])
    elif change == "income_int32":  # an integral type still, but not the one registered
        return pa.Table.from_pandas(rows.assign(income=rows["income"].astype("int32")), preserve_index=False)
    else:
        rows = rows.drop(columns=["segment"])
    return pa.Table.from_pandas(rows, preserve_index=False)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("subject_int", "column customer_id is bigint, registered as string"),
        ("income_string", "column income is string, registered as bigint"),
        ("income_int32", "column income is int, registered as bigint"),
        ("segment_removed", "column segment is no longer in it"),
    ],
)
def test_a_source_changed_after_registration_is_refused_before_any_job(
    both: Workspace, spark: SparkSession, tmp_path: Path, change: str, words: str
) -> None:
    ws = both
    ws.session(OWNER, "subject_request").erase_subject("C-1002")
    ws.session(OWNER, "administration").set_budget("lake_customers", 10.0, 1e-3)
    write_parquet(tmp_path, _drifted(change), "lake.parquet")  # the registered file, swapped
    spark.catalog.clearCache()
    with ws.store.read() as conn:
        states = conn.execute(select(external_erasures)).all()
    size, before = ws.ledger.head().size, jobs(spark)
    expected = f"the source of dataset lake_customers has changed since it was registered: {words}"
    with pytest.raises(IntegrityError, match=expected) as scan:
        ws.session(OWNER, "audit").verify_external_erasures()
    with pytest.raises(IntegrityError, match=expected) as query:
        ws.session(OWNER, "credit_scoring").dp_query("SELECT SUM(income), COUNT(*) FROM lake_customers", epsilon=1.0)
    with pytest.raises(IntegrityError, match=expected) as read:
        ws.session(OWNER, "credit_scoring").read_spark("lake_customers")
    with pytest.raises(IntegrityError, match=expected):
        ws.session(OWNER, "administration").enrol_from_source("lake_customers")
    with pytest.raises(IntegrityError, match=expected):  # the governed frame itself compares with registration
        ws.vault.lake_frame("lake_customers", "credit_scoring", None, spark)
    for err in (scan, query, read):
        assert "\n" not in str(err.value) and "SECRET" not in str(err.value)
    # nothing ran but the reads of the source's schema (Spark reads a Parquet footer with a job: no row),
    # nothing was spent or recorded: the erasure request is still pending
    assert ws.ledger.head().size == size
    ran = [j for j in jobs(spark) if j not in before]
    assert len(ran) >= 4 and all(stage_names(spark, j) == ["parquet"] for j in ran)
    assert ws.budgets.get("lake_customers").epsilon_spent == 0
    with ws.store.read() as conn:
        assert conn.execute(select(external_erasures)).all() == states
    assert [r.state for r in ws.session(OWNER, "audit").erasure_requests()] == ["pending"]
    # the registered file back: everything works again
    write_parquet(tmp_path, lake_rows(), "lake.parquet")
    spark.catalog.clearCache()
    assert ws.session(OWNER, "audit").verify_external_erasures() == {
        "lake_customers": {"requests": 1, "gone": 0, "present": 1}
    }


LEAK_SCRIPT = """
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import functions as F

from complai.config import SparkSettings
from complai.spark import SparkRuntime

pq.write_table(pa.table({"amount": ["1.5", "ZZZ-SECRET-LEAK"]}), sys.argv[1])
runtime = SparkRuntime(SparkSettings(master="local[1]", conf={"spark.sql.shuffle.partitions": "1"}))
spark = runtime.session()
try:
    spark.createDataFrame(pd.DataFrame({"x": [1.0]})).count()
    spark.read.parquet(sys.argv[1]).select(F.sum(F.col("amount").cast("double"))).collect()
except Exception as exc:
    print("failed:", type(exc).__name__, "ZZZ-SECRET-LEAK" in str(exc))
finally:
    runtime.stop()
"""


def test_a_query_failing_on_a_value_prints_no_value(tmp_path: Path) -> None:
    """A Spark session complai starts (its log4j configuration, pyspark's Python loggers) prints nothing
    of a job that fails on a lake value: the executor's and scheduler's exception logs are off, and so
    are pyspark's query-context loggers; pyspark's pandas-version notice is not shown either."""
    script = tmp_path / "leak.py"
    script.write_text(LEAK_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_"))}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "leak.parquet")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    # the job did fail on the value (its exception, which complai never shows, holds it)
    assert done.stdout.strip() == "failed: NumberFormatException True"
    assert "SECRET" not in done.stderr, done.stderr
    assert "Exception" not in done.stderr and "FutureWarning" not in done.stderr, done.stderr


ORDERS = """\
name: orders
subject_column: customer_id
jurisdiction: EU
retention: P1Y
purposes:
  analytics: gdpr.consent
fields:
  - {name: customer_id, type: string, category: user.unique_id, identifier: direct, nullable: false}
  - {name: amount, type: float, category: user.financial, min: 0, max: 1000}
  - {name: country, type: category, category: user.location, values: [DE, FR, NL]}
"""


def test_the_cli_refuses_a_changed_source_in_one_line(tmp_path: Path, spark: SparkSession) -> None:
    """From the command line: a source rewritten without a declared column after registration is refused
    with one line naming the dataset and the column (no traceback, no internal error), nothing spent. The
    workspace is set up in process (on the tests' Spark); the query and the budget run as commands."""
    ids = [f"c{i:03d}" for i in range(6)]
    rows = pd.DataFrame(
        {"customer_id": ids * 2, "amount": [float(i) for i in range(12)], "country": ["DE", "FR", "NL"] * 4}
    )
    location = write_parquet(tmp_path, rows, "orders.parquet")
    ws = Workspace.init(tmp_path / "ws")
    try:
        ws.use_spark(spark)
        admin = ws.session(OWNER, "administration")
        source = owner_source(tmp_path)
        admin.register_external(
            load_schema(yaml.safe_load(ORDERS), ws.taxonomy),
            {"kind": "parquet", "location": location, "owner": "order-system", "owner_key": source.owner_key},
        )
        admin.enrol("orders", ids, pd.DataFrame({"subject": ids, "purpose": "analytics"}))
        admin.set_budget("orders", 5, 1e-5)
    finally:
        ws.close()
    write_parquet(tmp_path, rows.drop(columns=["country"]), "orders.parquet")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_", "COMPLAI_"))}
    env |= {"COMPLAI_WORKSPACE": str(tmp_path / "ws"), "COMPLAI_SPARK_MASTER": "local[1]"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "complai.cli.main", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
        )

    done = cli("dp", "query", "orders", "SELECT COUNT(*) FROM orders", "--epsilon", "0.5", "--purpose", "analytics")
    assert done.returncode == 1 and done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if not line.startswith("WARNING: Using incubator modules")]
    assert errors == [
        "error: the source of dataset orders has changed since it was registered: column country is no longer "
        "in it; nothing was read"
    ]
    budget = cli("dp", "budget", "orders", "--json")
    assert budget.returncode == 0
    assert [b["epsilon_spent_at_delta"] for b in json.loads(budget.stdout)] == [0.0]
