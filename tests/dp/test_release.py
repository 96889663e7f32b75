"""Release discipline of DP queries: what an analyst, the ledger or an error receives from a DP query is
noisy output of an accounted mechanism or a public parameter, never an exact, data-dependent value."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from datetime import date, datetime
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.dp.queries import NOISY_FIELDS, PUBLIC_FIELDS, Aggregate, Answer, Noisy, Plan, Public, run
from complai.errors import ComplaiError, InvalidInput, PolicyDenied
from complai.events import DPQueryAnswered, Event
from complai.vault.schema import load_schema
from tests.vault.conftest import SCHEMA, consents_frame, people_frame

# --- the release is typed: noisy values or public parameters, nothing else --------------------------


def test_release_fields_are_noisy_or_public() -> None:
    assert {f for f in Answer.__dataclass_fields__} == NOISY_FIELDS | PUBLIC_FIELDS
    assert not NOISY_FIELDS & PUBLIC_FIELDS
    # the ledger event holds the statement's description and public parameters only
    described = {"dataset", "query_digest", "statistics", "group_by", "epsilon_remaining", "schema_digest"}
    # (legacy fields are only decoded from older ledgers; constructing an event with them is refused)
    new_fields = set(DPQueryAnswered.model_fields) - set(Event.model_fields) - DPQueryAnswered.legacy_fields
    assert new_fields == described | PUBLIC_FIELDS
    # an exact value cannot be released by mistake: construction refuses it
    with pytest.raises(AssertionError):
        Answer({"count(*)": 17.0}, {"count(*)": Public(2.0)}, 1.0, 0.0, 0.5, "laplace (pure DP)")
    with pytest.raises(AssertionError):
        Answer({"count(*)": Noisy(17.0)}, {"count(*)": 3.0}, 1.0, 0.0, 0.5, "laplace (pure DP)")
    with pytest.raises(AssertionError):
        Answer({"median(x)": Noisy(math.nan)}, {"median(x)": Public(1.0)}, 1.0, 0.0, 0.5, "laplace (pure DP)")


@pytest.fixture
def dp_ws(ws: Workspace) -> Workspace:
    schema = dict(SCHEMA)
    schema["purposes"] = {**SCHEMA["purposes"], "analytics": "gdpr.legitimate_interests"}
    ws.catalog.register(load_schema(schema, ws.taxonomy), actor="owner")
    ws.vault.ingest("customers", people_frame(), actor="owner", consents_data=consents_frame())
    ws.session("owner", "administration").set_budget("customers", 5.0, 1e-6)
    return ws


def test_no_row_count_in_answer_or_ledger(dp_ws: Workspace) -> None:
    s = dp_ws.session("owner", "analytics")
    ans = s.dp_query("SELECT COUNT(*) FROM customers WHERE income > 700000", 0.01)
    assert "rows_used" not in ans.as_dict()
    # (selection: only when GROUP BY keys were selected by DP partition selection)
    assert set(ans.as_dict()) == NOISY_FIELDS | PUBLIC_FIELDS - {"selection"}
    event = dp_ws.ledger.entry(s.last_seq)  # type: ignore[arg-type]
    assert event.kind == "dp.query" and b"rows_used" not in event.data
    recorded = json.loads(event.data)
    assert set(recorded) == {"type", "v", "time", "actor", "purpose", "dataset", "query_digest", "statistics"} | {
        "group_by",
        "schema_digest",
        "epsilon_remaining",
        *(PUBLIC_FIELDS - {"selection"}),
    }


# --- neighbouring datasets: identical non-noisy output ---------------------------------------------

PROP_SCHEMA: dict[str, Any] = {
    "subject_column": "sid",
    "jurisdiction": "EU",
    "retention": "P30D",
    "purposes": {"analytics": "gdpr.legitimate_interests"},
    "fields": [
        {"name": "sid", "type": "string", "category": "user.unique_id", "identifier": "direct", "nullable": False},
        {"name": "x", "type": "float", "category": "user.financial.income", "min": -5, "max": 50},
        {"name": "n", "type": "integer", "category": "user.financial.income", "min": 0, "max": 100},
        {"name": "big", "type": "float", "category": "user.financial.income", "min": 0, "max": 2.0**40},
        {"name": "g", "type": "category", "category": "user.behavior", "values": ["a", "b"]},
        {"name": "flag", "type": "boolean", "category": "user.behavior"},
    ],
}
STATS = ["COUNT(*)", "COUNT(x)", "SUM(x)", "AVG(x)", "VARIANCE(n)", "SUM(n)", "MEDIAN(n)", "QUANTILE(x, 0.25)"]
STATS += ["SUM(big)", "AVG(big)"]
WHERES = [
    None,
    "x > 3.5",
    "g = 'a'",
    "n BETWEEN 10 AND 60",
    "x IS NULL",
    "NOT (n < 50) OR flag = TRUE",
    "n IN (1, 2, 3) OR big >= 1e11",
]


def _rows(x: float, n: int, big: float) -> st.SearchStrategy[list[dict[str, Any]]]:
    """One subject's rows, values within [-x, x] / [0, n] / [0, big]."""
    row = st.fixed_dictionaries(
        {
            "x": st.none() | st.floats(-x, x, allow_nan=False),
            "n": st.none() | st.integers(0, n),
            "big": st.none() | st.floats(0, big, allow_nan=False),
            "g": st.sampled_from(["a", "b"]),
            "flag": st.none() | st.booleans(),
        }
    )
    return st.lists(row, min_size=1, max_size=3)


subject = _rows(5, 100, 2.0**40)  # within the declared bounds (the vault refuses others)
wild_subject = _rows(1e6, 10**6, 2.0**60)  # beyond them: clamping is exercised
query = st.fixed_dictionaries(
    {
        "stats": st.lists(st.sampled_from(STATS), min_size=1, max_size=3, unique=True),
        "group": st.sampled_from([None, "g", "flag"]),
        "where": st.sampled_from(WHERES),
        "epsilon": st.sampled_from([0.05, 0.5, 2.0]),
        "delta": st.sampled_from([None, 1e-6]),
        "max_rows": st.integers(1, 2),
    }
)


def _frame(subjects: list[list[dict[str, Any]]], typed: bool = True) -> pd.DataFrame:
    """Rows as the vault returns them (typed), or as plain Python values to ingest."""
    rows = [{"sid": f"s{i}", **r} for i, rs in enumerate(subjects) for r in rs]
    cols = ["sid", "x", "n", "big", "g", "flag"]
    if not typed:
        return pd.DataFrame(rows, columns=cols, dtype=object)
    frame = pd.DataFrame(rows, columns=cols)
    frame["n"] = frame["n"].astype("Int64")
    frame["flag"] = frame["flag"].astype("boolean")
    return frame


def _redacted(tree: Any) -> Any:
    """The release with every noisy number replaced by a marker: what must not depend on the data."""
    if isinstance(tree, dict):
        return {k: _redacted(v) for k, v in tree.items()}
    if type(tree) is Noisy:
        return "<noisy>"
    return (type(tree).__name__, tree)


def _outcome(ws: Workspace, name: str, q: dict[str, Any]) -> tuple[Any, ...]:
    sql = f"SELECT {', '.join(([q['group']] if q['group'] else []) + q['stats'])} FROM {name}"
    if q["where"]:
        sql += f" WHERE {q['where']}"
    if q["group"]:
        sql += f" GROUP BY {q['group']}"
    size = ws.ledger.head().size
    try:
        ans = ws.session("owner", "analytics").dp_query(sql, q["epsilon"], q["delta"], q["max_rows"])
    except ComplaiError as exc:
        return ("refused", type(exc).__name__, str(exc), ws.ledger.head().size - size)
    events = [ws.ledger.entry(seq).data for seq in range(size, ws.ledger.head().size)]
    return ("answered", _redacted(ans.as_dict()), events)


@pytest.fixture(scope="module")
def workspace_pair() -> Iterator[tuple[Workspace, Workspace, Iterator[int]]]:
    with tempfile.TemporaryDirectory() as tmp:
        a = Workspace.init(Path(tmp) / "a", clock=ManualClock())
        b = Workspace.init(Path(tmp) / "b", clock=ManualClock())
        try:
            yield a, b, count()
        finally:
            a.close()
            b.close()


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.lists(subject, max_size=8),
    extra=subject,
    add=st.booleans(),
    q=query,
)
def test_neighbouring_datasets_release_the_same_non_noisy_output(
    workspace_pair: tuple[Workspace, Workspace, Iterator[int]],
    data: list[list[dict[str, Any]]],
    extra: list[dict[str, Any]],
    add: bool,
    q: dict[str, Any],
) -> None:
    """D and D' differ by one subject (added, or removed) and all of its rows; everything the query
    returns and records, but the noisy numbers, is identical."""
    a, b, names = workspace_pair
    neighbour = [*data, extra] if add or not data else data[:-1]
    name = f"d{next(names)}"
    for ws, subjects in ((a, data), (b, neighbour)):
        ws.catalog.register(load_schema({**PROP_SCHEMA, "name": name}, ws.taxonomy), actor="owner")
        # a subject's identical rows are one record (an ingest refuses the repeat): still neighbours
        frame = _frame(subjects, typed=False).drop_duplicates(ignore_index=True)
        if len(frame):
            ws.vault.ingest(name, frame, actor="owner")
        ws.session("owner", "administration").set_budget(name, 100.0, 1e-5)
    assert _outcome(a, name, q) == _outcome(b, name, q)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.lists(wild_subject, max_size=10), extra=wild_subject, q=query)
def test_neighbouring_frames_same_public_output(
    data: list[list[dict[str, Any]]], extra: list[dict[str, Any]], q: dict[str, Any]
) -> None:
    """The same property on the mechanisms alone, over more (and larger) generated inputs."""
    aggs = {
        "COUNT(*)": Aggregate("count"),
        "COUNT(x)": Aggregate("count", "x"),
        "SUM(x)": Aggregate("sum", "x"),
        "AVG(x)": Aggregate("mean", "x"),
        "VARIANCE(n)": Aggregate("variance", "n"),
        "SUM(n)": Aggregate("sum", "n"),
        "MEDIAN(n)": Aggregate("quantile", "n", 0.5),
        "QUANTILE(x, 0.25)": Aggregate("quantile", "x", 0.25),
        "SUM(big)": Aggregate("sum", "big"),
        "AVG(big)": Aggregate("mean", "big"),
    }
    bounds = {"x": (-5.0, 50.0), "n": (0.0, 100.0), "big": (0.0, 2.0**40)}
    keys = {"g": ["a", "b"], "flag": [False, True], None: None}[q["group"]]
    outs = []
    for subjects in (data, [*data, extra]):
        ans = run(
            _frame(subjects),
            [aggs[s] for s in q["stats"]],
            bounds,
            {"n"},
            q["epsilon"],
            q["delta"],
            q["group"],
            keys,
            q["max_rows"],
            "sid",
        )
        outs.append(_redacted(ans.as_dict()))
    assert outs[0] == outs[1]


def test_sum_noise_scale_does_not_depend_on_the_row_count() -> None:
    """The exact-sum grid used to shrink with the number of rows, so the stated error bound of a sum
    over wide bounds changed between 16 and 17 rows: the count leaked through the accuracy."""
    bounds = {"v": (0.0, 2.0**40)}
    accs = {
        run(pd.DataFrame({"v": [1.0] * n}), [Aggregate("sum", "v")], bounds, set(), 1.0).accuracy["sum(v)"]
        for n in (1, 16, 17, 1000)
    }
    assert len(accs) == 1


def test_large_integer_sum_is_released_not_echoed() -> None:
    """An exact sum above 2^31 made OpenDP's i32 mechanism fail with the exact sum in its message."""
    frame = pd.DataFrame({"v": np.full(3000, 1_000_000, dtype=np.int64)})
    ans = run(frame, [Aggregate("sum", "v")], {"v": (0, 1_000_000)}, {"v"}, 1.0)
    assert abs(ans.values["sum(v)"] - 3_000_000_000) <= 5 * ans.accuracy["sum(v)"]


def test_empty_group_still_goes_through_the_mechanism() -> None:
    frame = pd.DataFrame({"v": [3.0, 4.0], "g": ["a", "a"]})
    ans = run(frame, [Aggregate("quantile", "v", 0.5)], {"v": (0.0, 10.0)}, set(), 1.0, None, "g", ["a", "b"])
    assert math.isfinite(ans.values["median(v)"]["b"])  # not NaN, which said "no rows here"


def test_plan_checks_everything_before_data() -> None:
    """Parameters are refused from public information alone: a Plan never sees a frame."""
    with pytest.raises(InvalidInput, match="at least 1e-06"):
        Plan([Aggregate("count")], {}, set(), 1e-320)
    with pytest.raises(InvalidInput, match="delta"):
        Plan([Aggregate("count")], {}, set(), 1.0, 1e-320)
    with pytest.raises(InvalidInput, match="max rows per subject"):
        Plan([Aggregate("count")], {}, set(), 1.0, max_rows=10**9)
    with pytest.raises(InvalidInput, match="bounds"):
        Plan([Aggregate("sum", "v")], {"v": (0.0, math.inf)}, set(), 1.0)


# --- errors tell an unauthorised principal nothing about the dataset -------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COUNT(*) FROM no_such_dataset",
        "SELECT SUM(shoe_size) FROM customers",
        "SELECT AVG(full_name) FROM customers",
        "SELECT COUNT(*) FROM customers GROUP BY email",
        "SELECT COUNT(*) FROM customers WHERE income > 'abc'",
        "SELECT COUNT(*) FROM customers WHERE segment > 'a'",
    ],
)
def test_unauthorised_principal_learns_nothing_from_errors(dp_ws: Workspace, sql: str) -> None:
    dp_ws.identity.add("owner", "ana", "service")
    dataset = sql.split("FROM ")[1].split()[0]
    with pytest.raises(PolicyDenied) as info:
        dp_ws.session("ana", "analytics").dp_query(sql, 0.1)
    assert str(info.value) == f"ana may not query_dp {dataset!r} for analytics"
    assert dp_ws.budgets.get("customers").epsilon_spent == 0


def test_unauthorised_budget_change_learns_nothing(dp_ws: Workspace) -> None:
    dp_ws.identity.add("owner", "ana", "service")
    s = dp_ws.session("ana", "administration")
    for dataset, principal in (("no_such_dataset", "*"), ("customers", "no_such_principal")):
        with pytest.raises(PolicyDenied, match="ana may not admin"):
            s.set_budget(dataset, 1.0, 1e-6, principal)


# --- malformed queries and parameters: one-line refusals, nothing spent ------------------------------

DEEP = "SELECT COUNT(*) FROM customers WHERE " + "(" * 3000 + "income > 1" + ")" * 3000
WIDE = "SELECT COUNT(*) FROM customers WHERE " + " OR ".join(f"income = {i}" for i in range(3000))


@pytest.mark.parametrize(
    ("sql", "eps", "delta", "max_rows", "message"),
    [
        ("SELECT QUANTILE(income, 1e-400) FROM customers", 0.1, None, 1, "between 0 and 1"),
        ("SELECT QUANTILE(income) FROM customers", 0.1, None, 1, "does not parse"),
        ("SELECT COUNT(*) FROM customers WHERE income > 'abc'", 0.1, None, 1, "numeric"),
        ("SELECT COUNT(*) FROM customers WHERE income > 1e400", 0.1, None, 1, "out of range"),
        ("SELECT COUNT(*) FROM customers WHERE segment > 'retail'", 0.1, None, 1, "only =, !=, IN"),
        ("SELECT COUNT(*) FROM customers WHERE income IS TRUE", 0.1, None, 1, "unsupported condition"),
        ("SELECT COUNT(*) FROM customers", 1e-320, None, 1, "epsilon must be a positive number"),
        ("SELECT COUNT(*) FROM customers", math.nan, None, 1, "epsilon must be a positive number"),
        ("SELECT COUNT(*) FROM customers", 0.1, 1e-320, 1, "delta"),
        ("SELECT COUNT(*) FROM customers", 0.1, None, 10**12, "max rows per subject"),
        (WIDE, 0.1, None, 1, "at most 1000 conditions"),
        (DEEP, 0.1, None, 1, "nest"),
    ],
)
def test_malformed_queries_refused_spending_nothing(
    dp_ws: Workspace, sql: str, eps: float, delta: float | None, max_rows: int, message: str
) -> None:
    size = dp_ws.ledger.head().size
    with pytest.raises(InvalidInput, match=message) as info:
        dp_ws.session("owner", "analytics").dp_query(sql, eps, delta, max_rows)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200
    assert dp_ws.budgets.get("customers").epsilon_spent == 0 and dp_ws.ledger.head().size == size


def test_exponent_literals_are_numbers(dp_ws: Workspace) -> None:
    s = dp_ws.session("owner", "analytics")
    ans = s.dp_query("SELECT COUNT(*) FROM customers WHERE income > 1e5 AND income < 2.5E6", 0.1)
    assert ans.values["count(*)"] >= 0
    ans = s.dp_query("SELECT COUNT(*) FROM customers WHERE income > -1e5", 0.1)
    assert ans.values["count(*)"] >= 0


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ({"name": "score", "type": "float", "category": "user.behavior", "min": math.nan, "max": 1}, "min"),
        ({"name": "score", "type": "float", "category": "user.behavior", "min": 0, "max": math.inf}, "max"),
        ({"name": "score", "type": "float", "category": "user.behavior", "min": -1e300, "max": 0}, "min"),
        ({"name": "tier", "type": "category", "category": "user.behavior", "values": []}, "at least one"),
        ({"name": "tier", "type": "category", "category": "user.behavior", "values": ["a", "a"]}, "more than once"),
    ],
)
def test_schema_refuses_unusable_bounds_and_keys(ws: Workspace, field: dict[str, Any], message: str) -> None:
    schema = {**SCHEMA, "fields": [*SCHEMA["fields"], field]}
    with pytest.raises(InvalidInput, match=message):
        load_schema(schema, ws.taxonomy)


# --- a WHERE clause the schema accepts cannot fail on any data --------------------------------------

TYPED_SCHEMA: dict[str, Any] = {
    "name": "typed",
    "subject_column": "sid",
    "jurisdiction": "EU",
    "retention": "P30D",
    "purposes": {"analytics": "gdpr.legitimate_interests"},
    "fields": [
        {"name": "sid", "type": "string", "category": "user.unique_id", "nullable": False},
        {"name": "i", "type": "integer", "category": "user.behavior"},
        {"name": "f", "type": "float", "category": "user.behavior"},
        {"name": "s", "type": "string", "category": "user.behavior"},
        {"name": "c", "type": "category", "category": "user.behavior", "values": ["a", "b"]},
        {"name": "b", "type": "boolean", "category": "user.behavior"},
        {"name": "d", "type": "date", "category": "user.behavior"},
        {"name": "t", "type": "datetime", "category": "user.behavior"},
    ],
}
_DAY = st.dates().map(lambda d: d.strftime("%Y-%m-%d"))
_VALUE = {
    "i": st.integers(-(2**53), 2**53),
    "f": st.floats(allow_nan=False, allow_infinity=False),
    "s": st.text(max_size=4),
    "c": st.sampled_from(["a", "b"]),
    "b": st.booleans(),
    "d": st.dates(min_value=date(1700, 1, 1)).map(lambda d: d.strftime("%Y-%m-%d")),
    "t": st.datetimes(min_value=datetime(1700, 1, 1)).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
}
_LITERAL = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(alphabet="abc-:0129T", max_size=12).map(lambda t: "'" + t + "'"),
    _DAY.map(lambda t: "'" + t + "'"),
    st.sampled_from(["TRUE", "FALSE", "1e400", "-1e5", "'2020-02-30'"]),
)
_CONDITION = st.tuples(
    st.sampled_from(list(_VALUE)), st.sampled_from(["=", "!=", ">", ">=", "<", "<=", "IN", "BETWEEN", "IS NULL"])
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    rows=st.lists(st.fixed_dictionaries({k: st.none() | v for k, v in _VALUE.items()}), max_size=6),
    cond=_CONDITION,
    lits=st.lists(_LITERAL, min_size=2, max_size=2),
)
def test_accepted_where_clause_never_fails_on_data(
    rows: list[dict[str, Any]], cond: tuple[str, str], lits: list[str]
) -> None:
    from complai.dp.sql import parse
    from complai.vault.records import to_frame
    from complai.vault.schema import DatasetSchema

    schema = DatasetSchema.model_validate(TYPED_SCHEMA)
    column, op = cond
    clause = {
        "IN": f"{column} IN ({lits[0]}, {lits[1]})",
        "BETWEEN": f"{column} BETWEEN {lits[0]} AND {lits[1]}",
        "IS NULL": f"{column} IS NULL",
    }.get(op, f"{column} {op} {lits[0]}")
    try:
        predicate = parse(f"SELECT COUNT(*) FROM typed WHERE NOT ({clause})").predicate(schema)
    except InvalidInput:
        event("refused")
        return  # refused before any data: fine
    event("accepted")
    assert predicate is not None
    names = [f.name for f in schema.fields]
    values = [[r[n] for n in names[1:]] for r in rows]
    frame = to_frame(schema, names, [f"s{k}" for k in range(len(rows))], values)
    mask = predicate(frame)
    assert mask.dtype == bool and len(mask) == len(rows)


def test_unexpected_failure_on_data_says_nothing_and_spends_nothing(
    dp_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure once rows are read (none is expected) passes on no message that could describe them."""

    def fail(self: Plan, frame: pd.DataFrame) -> Answer:
        raise ValueError(f"{len(frame)} rows, first income {frame['income'].iloc[0]}")

    monkeypatch.setattr(Plan, "_answer", fail)
    size = dp_ws.ledger.head().size
    with pytest.raises(ComplaiError) as info:
        dp_ws.session("owner", "analytics").dp_query("SELECT SUM(income) FROM customers", 0.1)
    assert "rows" not in str(info.value) and "731337" not in str(info.value) and info.value.__cause__ is None
    assert dp_ws.budgets.get("customers").epsilon_spent == 0 and dp_ws.ledger.head().size == size
