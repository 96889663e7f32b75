"""DP queries. OpenDP draws its noise from the operating system's CSPRNG and takes no seed, so the
statistical tests use sample sizes whose bounds (six standard errors, or exact binomial tails) fail
with probability below 1e-8 when the mechanism is right."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from complai.app.workspace import Workspace
from complai.dp.queries import Aggregate, bound_contributions, run
from complai.errors import BudgetExhausted, InvalidInput, PolicyDenied
from complai.vault.schema import load_schema
from tests.vault.conftest import SCHEMA, consents_frame, people_frame

N_REPS = 3000


def test_laplace_count_noise_matches_its_scale() -> None:
    frame = pd.DataFrame({"x": range(1000)})
    eps = 0.5
    noise = np.array(
        [run(frame, [Aggregate("count")], {}, set(), eps).values["count(*)"] - 1000 for _ in range(N_REPS)]
    )
    b = 1 / eps  # Laplace scale for sensitivity 1
    # mean 0 (sd of the mean: b*sqrt(2)/sqrt(n)); mean |noise| = b (sd of |noise| is b)
    assert abs(noise.mean()) < 6 * b * math.sqrt(2) / math.sqrt(N_REPS)
    assert abs(np.abs(noise).mean() - b) < 6 * b / math.sqrt(N_REPS) + 0.05  # + discreteness of the integer mechanism


def test_stated_accuracy_covers_95_percent() -> None:
    frame = pd.DataFrame({"v": np.arange(2000) % 100})
    inside = 0
    for _ in range(N_REPS):
        ans = run(frame, [Aggregate("sum", "v")], {"v": (0, 99)}, {"v"}, 1.0)
        inside += abs(ans.values["sum(v)"] - frame["v"].sum()) <= ans.accuracy["sum(v)"]
    # at least 95 % by construction; six binomial standard errors below leaves < 1e-8 to chance
    assert inside / N_REPS >= 0.95 - 6 * math.sqrt(0.95 * 0.05 / N_REPS)


def test_gaussian_noise_matches_its_scale() -> None:
    frame = pd.DataFrame({"x": range(100)})
    answers = [run(frame, [Aggregate("count")], {}, set(), 1.0, delta=1e-6) for _ in range(N_REPS)]
    noise = np.array([a.values["count(*)"] - 100 for a in answers])
    sigma = 1 / math.sqrt(2 * answers[0].rho)
    assert abs(noise.std() / sigma - 1) < 6 / math.sqrt(2 * N_REPS)


def test_unbiased_at_ten_million_rows() -> None:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"age": rng.integers(17, 91, size=10_000_000)})
    true_sum, true_n = int(frame["age"].sum()), len(frame)
    ans = run(frame, [Aggregate("count"), Aggregate("sum", "age")], {"age": (17, 90)}, {"age"}, 1.0)
    # no silent sub-sampling: both within a few stated error bounds of the exact values
    assert abs(ans.values["count(*)"] - true_n) <= 3 * ans.accuracy["count(*)"]
    assert abs(ans.values["sum(age)"] - true_sum) <= 3 * ans.accuracy["sum(age)"]
    assert abs(ans.values["sum(age)"] / true_sum - 1) < 1e-4


def test_contribution_bounding_limits_one_subject() -> None:
    base = pd.DataFrame({"sid": [f"s{i}" for i in range(100)], "v": [10.0] * 100})
    extreme = pd.DataFrame({"sid": ["x"] * 5000, "v": [1e9] * 5000})
    k, lo, hi = 2, 0.0, 50.0
    for frame in (base, pd.concat([base, extreme], ignore_index=True)):
        kept = bound_contributions(frame, "sid", k)
        assert kept["sid"].value_counts().max() <= k
    with_extreme = bound_contributions(pd.concat([base, extreme], ignore_index=True), "sid", k)
    diff = with_extreme["v"].clip(lo, hi).sum() - base["v"].clip(lo, hi).sum()
    assert 0 <= diff <= k * max(abs(lo), abs(hi))  # the stated sum sensitivity


@pytest.fixture
def dp_ws(ws: Workspace) -> Workspace:
    schema = dict(SCHEMA)
    schema["purposes"] = {**SCHEMA["purposes"], "analytics": "gdpr.legitimate_interests"}
    ws.catalog.register(load_schema(schema, ws.taxonomy), actor="owner")
    ws.vault.ingest("customers", people_frame(), actor="owner", consents_data=consents_frame())
    ws.session("owner", "administration").set_budget("customers", 1.0, 1e-6)
    return ws


def test_sql_query_spends_and_records(dp_ws: Workspace) -> None:
    s = dp_ws.session("owner", "analytics")
    ans = s.dp_query("SELECT segment, COUNT(*), AVG(income) FROM customers GROUP BY segment", 0.3)
    assert set(ans.values["count(*)"]) == {"retail", "premium"}
    assert ans.epsilon == 0.3 and ans.rho > 0
    event = dp_ws.ledger.entry(s.last_seq)  # type: ignore[arg-type]
    assert event.kind == "dp.query" and b"SELECT" not in event.data  # the statement is recorded as a digest
    assert dp_ws.budgets.get("customers").eps_spent == pytest.approx(0.3)  # Laplace: pure epsilon


@pytest.mark.parametrize(
    ("sql", "eps", "message"),
    [
        ("SELECT COUNT(*) FROM customers", 0, "epsilon must be a positive number"),
        ("SELECT AVG(full_name) FROM customers", 0.1, "needs declared bounds"),
        ("SELECT MAX(income) FROM customers", 0.1, "unsupported expression"),
        ("SELECT COUNT(*) FROM customers GROUP BY email", 0.1, "needs its values declared"),
        ("SELECT SUM(shoe_size) FROM customers", 0.1, "unknown column"),
        ("SELECT COUNT(*) FROM customers c JOIN other o ON c.x = o.x", 0.1, "JOIN is not supported"),
    ],
)
def test_bad_queries_spend_nothing(dp_ws: Workspace, sql: str, eps: float, message: str) -> None:
    size = dp_ws.ledger.head().size
    with pytest.raises(InvalidInput, match=message):
        dp_ws.session("owner", "analytics").dp_query(sql, eps)
    assert dp_ws.budgets.get("customers").epsilon_spent == 0 and dp_ws.ledger.head().size == size


def test_exhausted_budget_refuses_and_policy_applies(dp_ws: Workspace) -> None:
    s = dp_ws.session("owner", "analytics")
    s.dp_query("SELECT COUNT(*) FROM customers", 0.9)
    with pytest.raises(BudgetExhausted, match="remains"):
        s.dp_query("SELECT COUNT(*) FROM customers", 0.9)
    dp_ws.identity.add("owner", "ana", "service")
    with pytest.raises(PolicyDenied):
        dp_ws.session("ana", "analytics").dp_query("SELECT COUNT(*) FROM customers", 0.01)


def test_private_median_and_quantile() -> None:
    rng = np.random.default_rng(11)
    frame = pd.DataFrame({"age": rng.integers(20, 61, 20_000)})
    ans = run(
        frame, [Aggregate("quantile", "age", 0.5), Aggregate("quantile", "age", 0.9)], {"age": (17, 90)}, {"age"}, 2.0
    )
    true_med, true_q9 = np.quantile(frame["age"], [0.5, 0.9])
    assert abs(ans.values["median(age)"] - true_med) <= 2
    assert abs(ans.values["quantile(age, 0.9)"] - true_q9) <= 2
    assert ans.accuracy["median(age)"] > 0


def test_sql_quantiles(dp_ws: Workspace) -> None:
    ans = dp_ws.session("owner", "analytics").dp_query("SELECT MEDIAN(income) FROM customers", 0.2)
    assert 0 <= ans.values["median(income)"] <= 10_000_000
    with pytest.raises(InvalidInput, match="between 0 and 1"):
        dp_ws.session("owner", "analytics").dp_query("SELECT QUANTILE(income, 2) FROM customers", 0.2)


def test_python_builder_speaks_the_same_language(dp_ws: Workspace) -> None:
    from complai.dp.sql import QueryBuilder

    q = QueryBuilder("customers").count().mean("income").where("income > 50000").group_by("segment")
    assert q.sql() == "SELECT segment, COUNT(*), AVG(income) FROM customers WHERE (income > 50000) GROUP BY segment"
    ans = dp_ws.session("owner", "analytics").dp_query(q, 0.2)
    assert set(ans.values["mean(income)"]) == {"retail", "premium"}


def test_a_statement_parsed_again_comes_from_the_cache_as_a_copy_of_its_own() -> None:
    from complai.dp import sql

    text = "SELECT COUNT(*), AVG(age) FROM people WHERE age > 30 GROUP BY sex"
    first = sql.parse(text)
    misses = sql._parse.cache_info().misses
    second = sql.parse(text)
    assert sql._parse.cache_info().misses == misses  # not parsed again
    assert second == first and second is not first
    first.aggregates.clear()
    first.columns.clear()
    assert len(second.aggregates) == 2 and second.columns == {"age", "sex"}
    assert len(sql.parse(text).aggregates) == 2  # what the cache keeps was not touched either
