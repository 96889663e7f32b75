"""DP queries as DataFrame calls: one composed statement, one dp_query (authorised, spent and recorded
there), a frame of noisy values with their error bounds and the release's public parameters only."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.crypto.digest import digest_text
from complai.errors import InvalidInput, PolicyDenied
from complai.vault.schema import load_schema
from tests.dp.conftest import adult_workspace
from tests.spark.conftest import write_parquet
from tests.spark.test_external import source_of
from tests.vault.conftest import people_frame
from tests.vault.test_external_registry import IDS, LAKE

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

PUBLIC = {"epsilon", "delta", "rho", "mechanism"}


def events(ws: Workspace, since: int) -> list[dict[str, Any]]:
    return [json.loads(ws.ledger.entry(seq).data) for seq in range(since, ws.ledger.head().size)]


@pytest.fixture
def adult(sqlite_ws: Workspace) -> Workspace:
    return adult_workspace(sqlite_ws, 200)


def test_a_grouped_aggregation_is_one_dp_query_with_error_bounds_and_public_attrs(adult: Workspace) -> None:
    s = adult.session(OWNER, "analytics")
    q = s.dp("adult").where("age > 30").where("hours_per_week >= 10").group_by("sex")
    sql = q.sql("count(*)", "avg(age)")
    assert sql == "SELECT sex, count(*), avg(age) FROM adult WHERE (age > 30) AND (hours_per_week >= 10) GROUP BY sex"
    size = adult.ledger.head().size
    frame = q.agg("count(*)", "avg(age)", epsilon=1.0)
    assert list(frame.index) == ["Female", "Male"] and frame.index.name == "group"
    assert list(frame.columns) == ["count(*)", "count(*) ±95%", "mean(age)", "mean(age) ±95%"]
    assert all(math.isfinite(v) for v in frame.to_numpy().ravel())
    assert (frame["mean(age) ±95%"] > 0).all()
    assert set(frame.attrs) == PUBLIC and frame.attrs["epsilon"] == 1.0
    (event,) = events(adult, size)  # one operation, one event: the dp_query's
    assert event["type"] == "dp.query" and event["query_digest"] == digest_text(sql)
    assert event["statistics"] == ["count(*)", "mean(age)"] and event["group_by"] == "sex"
    assert {k: event[k] for k in PUBLIC} == frame.attrs
    assert adult.budgets.get("adult").epsilon_spent == pytest.approx(1.0)
    # no GROUP BY: one row; a second agg is a second query and a second event
    single = s.dp("adult").agg("sum(capital_loss)", epsilon=0.5)
    assert list(single.columns) == ["sum(capital_loss)", "sum(capital_loss) ±95%"] and len(single) == 1
    assert [e["type"] for e in events(adult, size)] == ["dp.query", "dp.query"]


def test_a_refused_principal_or_a_statement_that_does_not_compose_records_no_query(adult: Workspace) -> None:
    adult.identity.add(OWNER, "ana", "service")
    size = adult.ledger.head().size
    with pytest.raises(PolicyDenied):
        adult.session("ana", "analytics").dp("adult").group_by("sex").agg("count(*)", epsilon=1.0)
    assert [e["type"] for e in events(adult, size)] == ["access.denied"]
    size = adult.ledger.head().size
    s = adult.session(OWNER, "analytics")
    for build in (
        lambda: s.dp("adult").agg("count(*) FROM other", epsilon=1.0),
        lambda: s.dp("adult").agg("count(*), avg(age)", epsilon=1.0),
        lambda: s.dp("adult").agg(epsilon=1.0),
        lambda: s.dp("adult").where("age > 30) GROUP BY (sex").agg("count(*)", epsilon=1.0),
        lambda: s.dp("adult").group_by("sex; DROP").agg("count(*)", epsilon=1.0),
        lambda: s.dp("adult; x").agg("count(*)", epsilon=1.0),
        lambda: s.dp("adult").agg("count(*)", epsilon=1.0, output="excel"),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidInput):
            build()
    assert adult.ledger.head().size == size
    assert adult.budgets.get("adult").epsilon_spent == 0
    if importlib.util.find_spec("polars") is None:
        with pytest.raises(InvalidInput, match="polars"):
            s.dp("adult").agg("count(*)", epsilon=1.0, output="polars")
        assert adult.ledger.head().size == size
    else:
        table = s.dp("adult").group_by("sex").agg("count(*)", epsilon=1.0, output="polars")
        assert table.columns == ["group", "count(*)", "count(*) ±95%"] and table.height == 2


@pytest.fixture
def lake(spark_ws: Workspace, tmp_path: Path) -> Workspace:
    ws = spark_ws
    admin = ws.session(OWNER, "administration")
    location = write_parquet(tmp_path, people_frame(), "lake.parquet")
    admin.register_external(load_schema(LAKE, ws.taxonomy), source_of(tmp_path, location))
    admin.enrol("lake_customers", IDS)
    admin.set_budget("lake_customers", 50.0, 1e-3)
    return ws


def test_spark_output_on_an_external_dataset_carries_the_public_parameters_as_metadata(
    lake: Workspace, spark: SparkSession
) -> None:
    s = lake.session(OWNER, "credit_scoring")
    size = lake.ledger.head().size
    df = (
        s.dp("lake_customers")
        .where("income > 0")
        .group_by("segment")
        .agg("count(*)", "avg(income)", epsilon=1.0, output="spark")
    )
    assert df.columns == ["group", "count(*)", "count(*) ±95%", "mean(income)", "mean(income) ±95%"]
    rows = {r["group"]: r for r in df.collect()}
    assert set(rows) == {"retail", "premium"}
    (event,) = events(lake, size)
    assert event["type"] == "dp.query" and event["dataset"] == "lake_customers"
    for field in df.schema.fields:
        assert field.metadata["complai"] == {k: event[k] for k in PUBLIC}
    # keys without declared values: partition selection, its delta passed through and recorded
    size = lake.ledger.head().size
    selected = (
        s.dp("lake_customers")
        .group_by("income")
        .agg("count(*)", epsilon=1.0, delta=1e-4, selection_delta=1e-5, output="spark")
    )
    (event,) = events(lake, size)
    assert event["selection"]["delta"] == 1e-5
    assert selected.schema.fields[0].metadata["complai"]["selection"] == event["selection"]
    assert selected.count() == 0  # one subject per income: below any threshold the selection delta allows
