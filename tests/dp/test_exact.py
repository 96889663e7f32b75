"""A DP query in two halves: `Plan.exact` computes the exact aggregates the plan's public `Needs` name
(what any engine computes from the rows), `Plan.release_exact` adds the noise. The exact half is
checked against independent pandas computations; the release of an Exact against the plan's own
release over the same rows (OpenDP takes no seed: with a huge epsilon the noise is far below the
differences asserted, with failure probability below 1e-9)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from complai.dp.queries import Aggregate, Exact, Moment, Plan, _grid, as_days, bound_contributions, plan
from complai.dp.sql import parse
from complai.errors import ComplaiError
from complai.vault.schema import DatasetSchema

SPEC = {
    "name": "t",
    "subject_column": "sid",
    "jurisdiction": "EU",
    "retention": "P30D",
    "purposes": {"analytics": "gdpr.legitimate_interests"},
    "fields": [
        {"name": "sid", "type": "string", "category": "user.unique_id", "nullable": False},
        {"name": "x", "type": "float", "category": "user.behavior", "min": 0, "max": 10},
        {"name": "n", "type": "integer", "category": "user.behavior", "min": -5, "max": 5},
        {"name": "g", "type": "category", "category": "user.behavior", "values": ["a", "b", "c"]},
        {"name": "d", "type": "date", "category": "user.behavior", "min": "2000-01-01", "max": "2000-12-31"},
        {
            "name": "t",
            "type": "datetime",
            "category": "user.behavior",
            "min": "2000-01-01T00:00:00",
            "max": "2001-01-01T00:00:00",
        },
    ],
}


@pytest.fixture
def schema() -> DatasetSchema:
    return DatasetSchema.model_validate(SPEC)


def frame(rows: int = 300, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 12, rows)  # some outside the bounds: clamped
    x[rng.random(rows) < 0.1] = np.nan
    n = pd.array(rng.integers(-8, 9, rows), dtype="Int64")
    n[rng.random(rows) < 0.1] = pd.NA
    days = rng.integers(10_800, 11_400, rows)  # 1999-07 .. 2001-03: some outside the bounds
    d = pd.Series(pd.to_datetime(days, unit="D")).dt.date.astype(object)
    d[rng.random(rows) < 0.1] = None
    t = pd.Series(pd.to_datetime(rng.integers(946_684_800, 978_307_200, rows) * 10**9 + 123_456_789, utc=True))
    t[rng.random(rows) < 0.1] = pd.NaT
    return pd.DataFrame(
        {
            "sid": [f"s{i % 60}" for i in range(rows)],  # 5 rows per subject
            "x": x,
            "n": n,
            "g": rng.choice(np.array(["a", "b", "c", "zz", None], dtype=object), rows),  # zz: undeclared
            "d": d,
            "t": t,
        }
    )


SQL = (
    "SELECT g, COUNT(*), COUNT(d), SUM(x), AVG(n), VARIANCE(x), MEDIAN(x), QUANTILE(n, 0.9), AVG(d), AVG(t) "
    "FROM t WHERE x > 1 OR x IS NULL GROUP BY g"
)


def test_exact_equals_an_independent_computation(schema: DatasetSchema) -> None:
    p = plan(parse(SQL), schema, epsilon=1.0, max_rows=3, purpose="analytics")
    data = frame()
    exact = p.exact(data, seed=11)
    again = p.exact(data, seed=11)
    assert exact.same_as(again)
    # the rows the exact half keeps: WHERE, then 3 per subject (the same seed: the same choice)
    kept = bound_contributions(data[(data["x"] > 1) | data["x"].isna()], "sid", 3, seed=11)
    assert kept.groupby("sid").size().max() == 3
    assert exact.keys == ["a", "b", "c"]
    for i, key in enumerate(exact.keys):
        part = kept[kept["g"] == key]
        assert exact.rows[i] == len(part)
        assert exact.present["d"][i] == part["d"].notna().sum()
        x = part["x"].dropna().clip(0, 10)
        grid = _grid(10, False)
        assert exact.present["x"][i] == len(x)
        assert exact.sums["x"][i] == int(np.round(x * grid).sum())
        assert exact.squares["x"][i] == int(np.round((x * x) * _grid(100, False)).sum())
        n = part["n"].dropna().astype(float).clip(-5, 5)
        assert exact.sums["n"][i] == int(n.sum()) and "n" not in exact.squares
        days = pd.Series(as_days(part["d"])).dropna().clip(10_957, 11_322)  # 2000-01-01 .. 2000-12-31
        assert exact.sums["d"][i] == int(days.sum())
        stamps = pd.Series(as_days(part["t"])).dropna().clip(10_957, 11_323)
        assert exact.sums["t"][i] == int(np.round(stamps * _grid(11_323, False)).sum())
        cands = np.asarray(p.needs.quantiles["x"])
        assert exact.below["x"][i].tolist() == [int((x < c).sum()) for c in cands]
        assert exact.equal["x"][i].tolist() == [int((x == c).sum()) for c in cands]
    assert "Exact(keys=3" in repr(exact) and "0." not in repr(exact)  # shapes, never values


def test_needs_are_public_and_describe_the_grids(schema: DatasetSchema) -> None:
    p = plan(parse(SQL), schema, epsilon=1.0, max_rows=3, purpose="analytics")
    needs = p.needs
    assert needs.subject_column == "sid" and needs.max_rows == 3 and needs.group_by == "g"
    assert needs.keys == ["a", "b", "c"] and needs.key_type == "category"
    assert needs.counts == ("d",)
    moments = {m.column: m for m in needs.moments}
    assert moments["x"] == Moment("x", 0.0, 10.0, False, "", _grid(10, False), _grid(100, False))
    assert moments["n"] == Moment("n", -5.0, 5.0, True, "", 1.0, None)
    assert moments["d"].days == "date" and moments["d"].grid == 1.0
    assert moments["t"].days == "datetime" and moments["t"].is_int is False
    assert needs.days == {"d": "date", "t": "datetime"}
    assert needs.quantiles["n"] == tuple(float(v) for v in range(-5, 6))
    assert len(needs.quantiles["x"]) == 1001 and needs.quantile_bounds["x"] == (0.0, 10.0)
    assert needs.where is not None  # the bound WHERE tree other engines compile
    # the same on any data: nothing in Needs comes from rows
    assert plan(parse(SQL), schema, epsilon=1.0, max_rows=3, purpose="analytics").needs == needs


def test_release_of_exact_matches_the_release_of_rows(schema: DatasetSchema) -> None:
    """With epsilon 10^4 (14 releases) every noise scale is at most 0.07, 10^-3 of the values compared
    (within 10 scales but with probability below 1e-4 each), and a quantile is one of the candidates
    with the best score (any other with probability below 1e-9)."""
    p = plan(parse(SQL), schema, epsilon=1e4, max_rows=5, purpose="analytics")
    data = frame()
    direct = p.release(data)
    exact = p.exact(data)
    split = p.release_exact(exact)
    assert direct.public() == split.public()
    assert set(direct.values) == set(split.values) == set(p.statistics)
    quantiles = {p._label(a): a for a in p.aggregates if a.fn == "quantile"}
    for label, groups in direct.values.items():
        for i, (key, value) in enumerate(groups.items()):
            if label in quantiles:
                q = p.quantiles[quantiles[label]]
                column = str(quantiles[label].column)
                scores = q.scores(int(exact.present[column][i]), exact.below[column][i], exact.equal[column][i])
                best = {q.candidates[j] for j, s in enumerate(scores) if s == min(scores)}
                assert value in best and split.values[label][key] in best, (label, key)
                continue
            assert split.values[label][key] == pytest.approx(value, rel=1e-2, abs=1.0), (label, key)
            assert split.accuracy[label][key] == pytest.approx(direct.accuracy[label][key], rel=1e-2, abs=1.0)
    # with 5 rows per subject nothing is dropped: the release is the data's own statistics
    kept = data[(data["x"] > 1) | data["x"].isna()]
    a = kept[kept["g"] == "a"]
    assert split.values["count(*)"]["a"] == pytest.approx(len(a), abs=1)
    assert split.values["sum(x)"]["a"] == pytest.approx(a["x"].dropna().clip(0, 10).sum(), abs=1)
    x = a["x"].dropna().clip(0, 10).sort_values().to_numpy()
    assert x[len(x) // 2 - 2] <= split.values["median(x)"]["a"] <= x[len(x) // 2 + 2]  # a best candidate


def test_an_ungrouped_exact_has_one_key() -> None:
    p = Plan([Aggregate("count"), Aggregate("mean", "v")], {"v": (0.0, 1.0)}, set(), 100.0)
    exact = p.exact(pd.DataFrame({"v": [0.25, 0.5, np.nan, 2.0]}))
    assert exact.keys == [""] and exact.rows.tolist() == [4] and exact.present["v"].tolist() == [3]
    assert exact.sums["v"] == [int((0.25 + 0.5 + 1.0) * _grid(1.0, False))]
    answer = p.release_exact(exact)
    # noise scales 0.03 (count) and 0.03 / 3 (mean): 10 scales off with probability below 1e-4
    assert answer.values["count(*)"] == pytest.approx(4, abs=0.3)
    assert answer.values["mean(v)"] == pytest.approx(1.75 / 3, abs=0.1)


def test_grid_rounds_half_to_even() -> None:
    """The grid rounds as numpy and Spark's rint do (half to even), never half up."""
    grid = _grid(1.0, False)
    values = [0.5 / grid, 1.5 / grid, 2.5 / grid]  # exactly halves on the grid
    p = Plan([Aggregate("sum", "v")], {"v": (0.0, 1.0)}, set(), 1.0)
    exact = p.exact(pd.DataFrame({"v": values}))
    assert exact.sums["v"] == [0 + 2 + 2]


def test_a_failure_in_either_half_says_nothing(schema: DatasetSchema, monkeypatch: pytest.MonkeyPatch) -> None:
    p = plan(parse("SELECT SUM(x) FROM t"), schema, epsilon=1.0, purpose="analytics")
    with pytest.raises(ComplaiError) as info:
        p.exact(pd.DataFrame({"sid": ["a"], "x": ["731337 is not a number"]}))
    assert "731337" not in str(info.value) and info.value.__cause__ is None

    def fail(self: Plan, exact: Exact) -> None:
        raise ValueError(f"{exact.sums}")

    monkeypatch.setattr(Plan, "_release", fail)
    exact = p.exact(pd.DataFrame({"sid": ["a"], "x": [7.3]}))
    with pytest.raises(ComplaiError) as info:
        p.release_exact(exact)
    assert str(exact.sums["x"][0]) not in str(info.value) and info.value.__cause__ is None
    assert math.isfinite(exact.sums["x"][0])
