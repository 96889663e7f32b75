"""DP queries on Spark (dp/spark.py) give what they give in process: the WHERE clause holds on the same
rows as the in-process mask (nulls and NaN included), the contribution bound keeps exactly max_rows rows
of a subject that has more, and a plan's exact aggregates are the same `Exact` on both engines."""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.dp import queries
from complai.dp import spark as dpspark
from complai.dp.sql import parse
from complai.errors import PolicyDenied
from complai.taxonomy.loader import load_taxonomy
from complai.vault.records import column_array
from complai.vault.schema import DatasetSchema, load_schema
from tests.spark.conftest import write_parquet
from tests.spark.test_external import source_of
from tests.vault.conftest import SCHEMA, consents_frame, people_frame
from tests.vault.test_external_registry import IDS
from tests.vault.test_external_registry import LAKE as LAKE_CUSTOMERS

UTC = dt.UTC
LAKE: dict[str, Any] = {
    "name": "lake",
    "subject_column": "sid",
    "jurisdiction": "EU",
    "retention": "P1Y",
    "purposes": {"analytics": "gdpr.legitimate_interests"},
    "fields": [
        {"name": "sid", "type": "string", "category": "user.unique_id", "identifier": "direct", "nullable": False},
        {"name": "n", "type": "integer", "category": "user.behavior", "min": 0, "max": 100},
        {"name": "x", "type": "float", "category": "user.behavior", "min": -10, "max": 10},
        {"name": "s", "type": "string", "category": "user.behavior"},
        {"name": "c", "type": "category", "category": "user.behavior", "values": ["a", "b", "c"]},
        {"name": "b", "type": "boolean", "category": "user.behavior"},
        {"name": "d", "type": "date", "category": "user.behavior", "min": "1990-01-01", "max": "2030-01-01"},
        {"name": "t", "type": "datetime", "category": "user.behavior", "min": "2000-01-01", "max": "2030-01-01"},
    ],
}
SPARK_SCHEMA = "sid string, n long, x double, s string, c string, b boolean, d date, t timestamp"
STRINGS = ["", "a", "apple", "Zebra", "zoo", "é", "日本", "m"]


@pytest.fixture(scope="module")
def schema() -> DatasetSchema:
    return load_schema(LAKE, load_taxonomy())


def _rows(rows: int, subjects: int, seed: int) -> list[dict[str, Any]]:
    """Rows with nulls in every value column (and NaN besides nulls in the float column)."""
    rng = random.Random(seed)

    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.15 else value

    out = []
    for i in range(rows):
        x = rng.choice([rng.uniform(-15, 15), float(rng.randint(-12, 12)), 2.5, -0.5, float("nan")])
        out.append(
            {
                "sid": f"p{rng.randrange(subjects):03d}" if i % 7 else "p000",
                "n": maybe(rng.choice([rng.randint(-5, 110), 0, 50, 100])),
                "x": maybe(x),
                "s": maybe(rng.choice(STRINGS)),
                "c": maybe(rng.choice(["a", "b", "c"])),
                "b": maybe(rng.random() < 0.5),
                "d": maybe(dt.date(1985, 1, 1) + dt.timedelta(days=rng.randrange(17_000))),
                "t": maybe(
                    dt.datetime(1998, 1, 1, tzinfo=UTC)
                    + dt.timedelta(days=rng.randrange(12_000), microseconds=rng.randrange(86_400_000_000))
                ),
            }
        )
    return out


def _frame(schema: DatasetSchema, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as the vault's reads type them (dp.queries sees this frame in process)."""
    stored: dict[str, list[Any]] = {f.name: [] for f in schema.fields}
    for r in rows:
        for name in stored:
            v = r[name]
            if isinstance(v, dt.datetime):
                v = v.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            elif isinstance(v, dt.date):
                v = v.isoformat()
            stored[name].append(v)
    data = {}
    for f in schema.fields:
        data[f.name] = (
            pd.array(stored[f.name], dtype="string")
            if f.name == schema.subject_column
            else column_array(f, stored[f.name])
        )
    return pd.DataFrame(data)


def _spark_frame(spark: Any, rows: list[dict[str, Any]]) -> Any:
    """The same rows in Spark (with a row number, `rowid`), NaN and null kept apart."""
    cols = [c.split()[0] for c in SPARK_SCHEMA.split(", ")]
    data = [(i, *(r[c] for c in cols)) for i, r in enumerate(rows)]
    return spark.createDataFrame(data, f"rowid long, {SPARK_SCHEMA}")


def _condition(rng: random.Random, depth: int = 0) -> str:
    """A random WHERE clause over every field type, literals near (and beyond) the data's values."""
    if depth < 3 and rng.random() < 0.45:
        kind = rng.choice(["AND", "OR", "NOT"])
        if kind == "NOT":
            return f"NOT ({_condition(rng, depth + 1)})"
        return f"({_condition(rng, depth + 1)} {kind} {_condition(rng, depth + 1)})"
    column = rng.choice(["n", "x", "s", "c", "b", "d", "t"])
    if rng.random() < 0.1:
        return f"{column} IS {rng.choice(['', 'NOT '])}NULL"
    pools: dict[str, list[str]] = {
        "n": ["-1", "0", "50", "100", "7", "50.5", "-3", "1000000000000000000000000000000", "-99999999999999999999999"],
        "x": ["0", "2.5", "-0.5", "-10", "10", "3", "1e300", "100000000000000000000000000"],
        "s": [f"'{s}'" for s in STRINGS],
        "c": ["'a'", "'b'", "'c'", "'d'"],
        "b": ["TRUE", "FALSE"],
        "d": ["'1990-01-01'", "'2010-05-06'", "'2010-05-06T12:00:00'", "'2031-01-01'", "'1984-12-31T23:59:59Z'"],
        "t": [
            "'2015-03-04T05:06:07.123456Z'",
            "'2015-03-04'",
            "'2015-03-04T05:06:07+02:00'",
            "'2015-03-04T05:06:07.1234565'",
            "'2031-01-01'",
            "'1999-06-30T00:00:00.000001Z'",
        ],
    }
    lit = pools[column]
    ordered = column not in ("c", "b")
    ops = ["=", "!=", "IN", *([">", ">=", "<", "<=", "BETWEEN"] if ordered else [])]
    op = rng.choice(ops)
    if op == "IN":
        return f"{column} IN ({', '.join(rng.sample(lit, rng.randint(1, min(3, len(lit)))))})"
    if op == "BETWEEN":
        lo, hi = rng.choice(lit), rng.choice(lit)
        return f"{column} BETWEEN {lo} AND {hi}"
    return f"{column} {op} {rng.choice(lit)}"


def test_predicate_holds_where_the_in_process_mask_does(spark: Any, schema: DatasetSchema) -> None:
    rows = _rows(400, 60, seed=1)
    frame = _frame(schema, rows)
    df = _spark_frame(spark, rows)
    types = {f.name: f.type for f in schema.fields}
    rng = random.Random(7)
    sqls = [_condition(rng) for _ in range(40)]
    sqls += [
        "NOT (x > 0)",  # NaN and null rows: the comparison fails, NOT holds
        "NOT (n = 50) AND NOT (s = 'a')",
        "x != 2.5",
        "NOT (x IS NULL)",
        "n > 1000000000000000000000000000000",
        "NOT (n < -99999999999999999999999)",
        "t > '2015-03-04T05:06:07.1234565'",
        "d BETWEEN '2010-05-06T12:00:00' AND '2020-01-01'",
        "NOT (b = TRUE)",
        "c IN ('a', 'd')",
    ]
    bound = [parse(f"SELECT COUNT(*) FROM lake WHERE {s}").bound(schema) for s in sqls]
    masks = [parse(f"SELECT COUNT(*) FROM lake WHERE {s}").predicate(schema) for s in sqls]
    picked = df.select("rowid", *[dpspark.predicate(b, types).alias(f"p{i}") for i, b in enumerate(bound) if b])
    got = sorted(picked.collect(), key=lambda r: r["rowid"])
    assert len(got) == len(rows)
    for i, (sql, mask) in enumerate(zip(sqls, masks, strict=True)):
        assert mask is not None
        want = mask(frame)
        have = np.array([r[f"p{i}"] for r in got])
        assert all(v in (True, False) for v in have), sql  # never null
        assert have.astype(bool).tolist() == want.tolist(), sql
    # the conditions are not trivial: each holds on some rows and fails on others
    assert sum(0 < m(frame).sum() < len(rows) for m in masks if m) > 30


def _plan(
    schema: DatasetSchema, sql: str, max_rows: int = 1, delta: float | None = 1e-6, purpose: str = "analytics"
) -> Any:
    return queries.plan(parse(sql), schema, epsilon=1.0, delta=delta, max_rows=max_rows, purpose=purpose)


STATISTICS = (
    "COUNT(*), COUNT(x), COUNT(d), SUM(n), AVG(x), VARIANCE(x), SUM(d), AVG(t), VARIANCE(t), "
    "MEDIAN(x), QUANTILE(n, 0.9), QUANTILE(d, 0.25), QUANTILE(t, 0.5)"
)


@pytest.mark.parametrize(
    "sql",
    [
        f"SELECT {STATISTICS} FROM lake",
        f"SELECT c, {STATISTICS} FROM lake WHERE NOT (x > 0) OR n IS NULL GROUP BY c",
        f"SELECT b, {STATISTICS} FROM lake WHERE d >= '2000-01-01' AND NOT (s IN ('a', 'é')) GROUP BY b",
        "SELECT COUNT(*), SUM(x), VARIANCE(n) FROM lake WHERE t < '2020-06-01T12:00:00Z' AND NOT (c = 'b')",
    ],
)
def test_exact_aggregates_equal_the_in_process_engine(spark: Any, schema: DatasetSchema, sql: str) -> None:
    rows = _rows(300, 40, seed=2)
    most = max(pd.Series([r["sid"] for r in rows]).value_counts())
    plan = _plan(schema, sql, max_rows=most)  # no subject over the bound: both engines keep every row
    want = plan.exact(_frame(schema, rows))
    have = dpspark.exact(plan, _spark_frame(spark, rows))
    assert have.same_as(want), (have, want)
    assert int(want.rows.sum()) > 0 and all(sum(v) != 0 for v in want.sums.values())


def test_days_are_the_in_process_days_bit_for_bit(spark: Any) -> None:
    rng = np.random.default_rng(3)
    micros = rng.integers(-(2**61) // 1000, 2**62 // 1000, 2000)  # 1897 to 2116, microseconds
    stamps = pd.Series(pd.to_datetime(micros, unit="us", utc=True))
    want = queries.as_days(stamps)
    df = spark.createDataFrame(pd.DataFrame({"i": np.arange(len(micros)), "us": micros}))
    from pyspark.sql import functions as F

    got = df.select("i", dpspark._days(F.timestamp_micros("us"), "datetime").alias("days")).collect()
    have = np.array([r["days"] for r in sorted(got, key=lambda r: r["i"])])
    assert have.tobytes() == want.tobytes()


def test_a_subject_with_a_thousand_rows_counts_max_rows(spark: Any, schema: DatasetSchema) -> None:
    light = [{**r, "sid": f"l{i:03d}"} for i, r in enumerate(_rows(100, 1, seed=4))]  # one row each
    heavy = [{**r, "sid": "heavy", "c": "a"} for r in _rows(1000, 1, seed=5)]
    df = _spark_frame(spark, light + heavy)
    in_a = sum(r["c"] == "a" for r in light)
    for k in (1, 3):
        plan = _plan(schema, "SELECT c, COUNT(*) FROM lake GROUP BY c", max_rows=k)
        have = dpspark.exact(plan, df)
        assert have.keys == ["a", "b", "c"]
        assert int(have.rows[0]) == in_a + k
        assert have.rows[1:].tolist() == [sum(r["c"] == c for r in light) for c in ("b", "c")]
    kept = {r["sid"]: r["count"] for r in dpspark.bounded(df, "sid", 3, seed=11).groupBy("sid").count().collect()}
    assert kept.pop("heavy") == 3 and set(kept.values()) == {1} and len(kept) == len(light)


def test_released_answers_from_one_spark_exact_are_covered_by_their_bounds(spark: Any, schema: DatasetSchema) -> None:
    """OpenDP draws its noise from the operating system and takes no seed: six binomial standard errors
    below 95 % leave less than 1e-8 to chance when the mechanism and its stated bound are right."""
    rows = _rows(300, 40, seed=6)
    most = max(pd.Series([r["sid"] for r in rows]).value_counts())
    plan = _plan(schema, "SELECT COUNT(*), SUM(n), AVG(x) FROM lake", max_rows=most)
    exact = dpspark.exact(plan, _spark_frame(spark, rows))
    true_n = len(rows)
    true_sum = sum(min(max(r["n"], 0), 100) for r in rows if r["n"] is not None)
    assert int(exact.rows[0]) == true_n and exact.sums["n"] == [true_sum]
    reps, inside = 2000, {"count(*)": 0, "sum(n)": 0}
    for _ in range(reps):
        answer = plan.release_exact(exact)
        inside["count(*)"] += abs(answer.values["count(*)"] - true_n) <= answer.accuracy["count(*)"]
        inside["sum(n)"] += abs(answer.values["sum(n)"] - true_sum) <= answer.accuracy["sum(n)"]
    for label, hits in inside.items():
        assert hits / reps >= 0.95 - 6 * math.sqrt(0.95 * 0.05 / reps), label


@pytest.fixture
def twins(spark_ws: Workspace, tmp_path: Path) -> Workspace:
    """The same subjects and rows in a vault dataset and in an external one (plus a lake row of a subject
    never enrolled); one subject has withdrawn its consent, one objects, one is erased; both datasets
    have a budget."""
    ws = spark_ws
    ws.catalog.register(load_schema(SCHEMA, ws.taxonomy), actor=OWNER)
    ws.vault.ingest("customers", people_frame(), actor=OWNER, consents_data=consents_frame())
    stranger = pd.DataFrame([("X-9", "Ann Other", "ann@example.org", 1, "retail")], columns=people_frame().columns)
    location = write_parquet(tmp_path, pd.concat([people_frame(), stranger], ignore_index=True), "lake.parquet")
    admin = ws.session(OWNER, "administration")
    admin.register_external(load_schema(LAKE_CUSTOMERS, ws.taxonomy), source_of(tmp_path, location))
    admin.enrol("lake_customers", IDS)
    clock = ws.clock
    assert isinstance(clock, ManualClock)
    clock.advance(timedelta(minutes=1))
    ws.vault.withdraw_consent("C-1002", "marketing", actor=OWNER)
    ws.vault.object("C-1004", "credit_scoring", actor=OWNER)
    ws.vault.erase("C-1003", actor=OWNER)  # its rows stay in the lake until the owner system deletes them
    clock.advance(timedelta(minutes=1))
    for name in ("customers", "lake_customers"):
        admin.set_budget(name, 50.0, 1e-3)
    return ws


def test_a_dp_query_on_an_external_dataset_runs_on_spark_and_is_recorded_as_a_vault_query(
    twins: Workspace, spark: Any
) -> None:
    ws = twins
    sql = "SELECT segment, COUNT(*), SUM(income), AVG(income) FROM {} WHERE income > 40000 GROUP BY segment"
    # credit_scoring: all consented, C-1003 erased, C-1004 objects; marketing: C-1001 and C-1002 consented,
    # C-1002 withdrew
    for purpose, rows in (("credit_scoring", [1, 1]), ("marketing", [0, 1])):
        vault_plan = _plan(ws.catalog.get("customers").schema, sql.format("customers"), purpose=purpose)
        lake_plan = _plan(ws.catalog.get("lake_customers").schema, sql.format("lake_customers"), purpose=purpose)
        in_vault = vault_plan.exact(ws.vault.fetch("customers", purpose).frame)
        frame = ws.vault.lake_frame("lake_customers", purpose, list(lake_plan.reads), spark)
        on_spark = dpspark.exact(lake_plan, frame)
        assert on_spark.same_as(in_vault), purpose
        assert in_vault.rows.tolist() == rows, purpose  # keys: retail, premium

    analyst = ws.session(OWNER, "credit_scoring")
    events = []
    for name in ("customers", "lake_customers"):
        before = len(spark.sparkContext.statusTracker().getJobIdsForGroup(None))
        answer = analyst.dp_query(sql.format(name), epsilon=1.0, delta=1e-6)
        ran = len(spark.sparkContext.statusTracker().getJobIdsForGroup(None)) > before
        assert ran == (name == "lake_customers")  # the vault's records are aggregated in process
        assert set(answer.values) == {"count(*)", "sum(income)", "mean(income)"}
        assert set(answer.values["count(*)"]) == {"retail", "premium"}
        events.append(json.loads(ws.ledger.entry(analyst.last_seq).data))
    vault_event, lake_event = events
    assert lake_event["type"] == vault_event["type"] == "dp.query"
    assert lake_event.keys() == vault_event.keys()
    differ = {k for k in vault_event if vault_event[k] != lake_event[k]}
    assert differ <= {"seq", "time", "dataset", "query_digest", "schema_digest", "epsilon_remaining", "prev"}
    assert lake_event["dataset"] == "lake_customers" and lake_event["rho"] == vault_event["rho"]
    assert ws.budgets.get("lake_customers").epsilon_spent > 0


def test_a_refused_principal_starts_no_spark_job(twins: Workspace, spark: Any) -> None:
    ws = twins
    ws.identity.add(OWNER, "nobody", "service")
    nobody = ws.session("nobody", "credit_scoring")
    before = sorted(spark.sparkContext.statusTracker().getJobIdsForGroup(None))
    size = ws.ledger.head().size
    with pytest.raises(PolicyDenied):
        nobody.dp_query("SELECT COUNT(*) FROM lake_customers", epsilon=1.0)
    assert sorted(spark.sparkContext.statusTracker().getJobIdsForGroup(None)) == before
    assert ws.ledger.head().size == size + 1
    assert json.loads(ws.ledger.entry(size).data)["type"] == "access.denied"
    assert ws.budgets.get("lake_customers").epsilon_spent == 0


@pytest.mark.parametrize("by", ["s", "n", "d"])
def test_keys_selected_by_dp_partition_selection_are_the_in_process_keys(
    spark: Any, schema: DatasetSchema, by: str
) -> None:
    rows = _rows(300, 40, seed=8)
    most = max(pd.Series([r["sid"] for r in rows]).value_counts())
    sql = f"SELECT {by}, COUNT(*), COUNT(x), SUM(n), AVG(x) FROM lake WHERE NOT (b = TRUE) GROUP BY {by}"
    plan = _plan(schema, sql, max_rows=most)
    assert plan.needs.keys is None  # no declared values: keys are selected
    want = plan.exact(_frame(schema, rows))
    have = dpspark.exact(plan, _spark_frame(spark, rows))
    assert have.same_as(want), (have.keys[:5], want.keys[:5])
    assert len(want.keys) > 5
    answer = plan.release_exact(have)
    assert answer.selection is not None and set(answer.values["count(*)"]) <= set(have.keys)


def test_partition_selection_through_the_session_on_an_external_dataset(twins: Workspace) -> None:
    ws = twins
    analyst = ws.session(OWNER, "credit_scoring")
    sql = "SELECT income, COUNT(*) FROM lake_customers GROUP BY income"
    answer = analyst.dp_query(sql, epsilon=1.0, delta=1e-4, max_rows=1, selection_delta=1e-5)
    assert answer.selection is not None and answer.selection["delta"] == 1e-5
    event = json.loads(ws.ledger.entry(analyst.last_seq).data)
    assert event["selection"] == answer.selection
    # a key is one subject here: far below any threshold the selection delta allows, none is released
    assert answer.values["count(*)"] == {}
    assert ws.budgets.get("lake_customers").as_dict()["delta_spent_approx"] == pytest.approx(1e-5)


def test_an_answer_as_a_spark_frame_holds_the_noisy_values_and_public_parameters(
    spark: Any, schema: DatasetSchema
) -> None:
    rows = _rows(100, 20, seed=9)
    plan = _plan(schema, "SELECT c, COUNT(*), AVG(d) FROM lake GROUP BY c", max_rows=50)
    answer = plan.release_exact(dpspark.exact(plan, _spark_frame(spark, rows)))
    df = dpspark.answer_frame(spark, answer)
    label = "mean(d) (days since 1970-01-01)"
    assert df.columns == ["group", "count(*)", "count(*) ±95%", label, f"{label} ±95%"]
    got = {r["group"]: r for r in df.collect()}
    assert set(got) == {"a", "b", "c"}
    for key in got:
        assert got[key]["count(*)"] == answer.values["count(*)"][key]
        assert got[key][f"{label} ±95%"] == answer.accuracy[label][key]
    for field in df.schema.fields:
        assert field.metadata == {"complai": answer.public()}
    total = _plan(schema, "SELECT SUM(n) FROM lake")
    single = dpspark.answer_frame(spark, total.release_exact(total.exact(_frame(schema, rows))), error_bounds=False)
    assert single.columns == ["sum(n)"] and single.count() == 1
