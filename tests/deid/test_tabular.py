"""Mondrian output is k-anonymous, l-diverse and t-close as an independent implementation (pycanon)
measures it, and keeps one row per input row with every other column untouched."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycanon import anonymity

from complai.app.workspace import Workspace
from complai.datasets import load_adult
from complai.deid.kanon import Constraints, emd, mondrian
from complai.deid.tabular import anonymize, date_label, date_range
from complai.errors import InvalidInput

QIS = ["age", "education", "marital_status", "occupation", "race", "sex", "native_country"]


@pytest.fixture(scope="module")
def adult() -> pd.DataFrame:
    return load_adult("train").drop(columns=["split"]).reset_index(drop=True)


@pytest.mark.parametrize("k", [2, 5, 10, 50])
def test_k_anonymity_checked_by_pycanon(adult: pd.DataFrame, k: int) -> None:
    out, report = anonymize(adult, QIS, k, sensitive="income")
    assert anonymity.k_anonymity(out.reset_index(drop=True), QIS) >= k
    assert report.achieved["k"] >= k
    # every row stays; every column but the direct identifier (subject_id) stays as it was
    assert report.direct_identifiers["dropped"] == ["subject_id"]
    assert len(out) == len(adult) and list(out.columns) == [c for c in adult.columns if c != "subject_id"]
    others = [c for c in adult.columns if c not in QIS and c != "subject_id"]
    pd.testing.assert_frame_equal(out[others], adult[others])


def test_l_diversity_and_t_closeness_checked_by_pycanon(adult: pd.DataFrame) -> None:
    out, report = anonymize(adult, QIS, 5, sensitive="income", l=2, t=0.2)
    o = out.reset_index(drop=True)
    assert anonymity.k_anonymity(o, QIS) >= 5
    assert anonymity.l_diversity(o, QIS, ["income"]) >= 2
    assert anonymity.t_closeness(o, QIS, ["income"]) <= 0.2 + 1e-9
    assert report.achieved["t"] <= 0.2 and report.achieved["l_distinct"] >= 2


def test_entropy_l_diversity(adult: pd.DataFrame) -> None:
    qis = [q for q in QIS if q != "occupation"]
    data = adult.dropna(subset=["occupation"]).reset_index(drop=True)
    out, report = anonymize(data, qis, 5, sensitive="occupation", l=3, l_kind="entropy")
    assert report.achieved["l_entropy"] >= 3 - 1e-9
    assert anonymity.entropy_l_diversity(out.reset_index(drop=True), qis, ["occupation"]) >= 3 - 1e-6
    # income (76% / 24%) has entropy l of about 1.7: entropy l=2 is impossible, and said so
    with pytest.raises(InvalidInput, match="does not satisfy entropy l=2"):
        anonymize(adult, QIS, 5, sensitive="income", l=2, l_kind="entropy")


def test_suppression_of_outliers(adult: pd.DataFrame) -> None:
    out, report = anonymize(adult, ["age", "hours_per_week", "sex"], 5, suppress=0.05)
    assert report.suppressed_rows >= 5
    assert (out["age"] == "*").sum() == report.suppressed_rows
    assert anonymity.k_anonymity(out.reset_index(drop=True), ["age", "hours_per_week", "sex"]) >= 5


def test_generalised_values_contain_the_originals(adult: pd.DataFrame) -> None:
    out, _ = anonymize(adult.iloc[:3000], ["age", "education"], 10)
    for orig, gen in zip(adult["age"].iloc[:3000], out["age"], strict=True):
        if gen.startswith("["):
            lo, hi = (int(x) for x in gen[1:-1].split("-"))
            assert lo <= orig <= hi
        else:
            assert int(gen) == orig
    for orig, gen in zip(adult["education"].iloc[:3000], out["education"], strict=True):
        assert gen == "*" or gen == orig or orig in gen.strip("{}").split("|")


def test_risk_and_utility_measures() -> None:
    df = pd.DataFrame({"age": [20, 21, 22, 40, 41, 42, 60, 61, 62, 63], "x": range(10)})
    out, r = anonymize(df, ["age"], 3)
    # Mondrian splits 10 rows at the median into 5 + 5; a half of 5 < 2k cannot be split again
    assert out["age"].tolist() == ["[20-41]"] * 5 + ["[42-63]"] * 5
    assert r.classes == 2
    assert r.risk["prosecutor"]["highest"] == pytest.approx(1 / 5)
    assert r.risk["marketer"] == pytest.approx(2 / 10)
    assert r.utility["discernibility"] == 5 * 5 + 5 * 5
    assert r.utility["average_class_size"] == pytest.approx(10 / 2 / 3)
    # information loss: (41-20)/43 for the first class, (63-42)/43 for the second
    assert r.utility["information_loss"] == pytest.approx(21 / 43)


@given(st.integers(1, 8), st.integers(20, 200), st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_mondrian_partitions_cover_every_row_once_and_respect_k(k: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 12, size=(n, 3)).astype(float)
    r = mondrian(codes, [11, 11, 11], Constraints(k=k))
    rows = np.concatenate(r.partitions)
    assert sorted(rows.tolist()) == list(range(n))
    assert min(len(p) for p in r.partitions) >= k


def test_emd() -> None:
    glob = np.array([0.5, 0.5])
    assert emd(np.array([5, 5]), glob, False) == 0
    assert emd(np.array([10, 0]), glob, False) == pytest.approx(0.5)
    # ordered: moving all mass one step over 3 values costs 1/(3-1) of the shifted mass
    assert emd(np.array([0, 10, 0]), np.array([1.0, 0, 0]), True) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quasi": ["shoe_size"], "k": 5}, "unknown column"),
        ({"quasi": ["age"], "k": 100_000}, "larger than the table"),
        ({"quasi": ["age", "sex"], "k": 5, "numeric": ["sex"]}, "not numeric"),
        ({"quasi": ["age"], "k": 5, "l": 2}, "need a sensitive column"),
        ({"quasi": ["age"], "k": 5, "sensitive": "income", "l": 3}, "does not satisfy"),
        ({"quasi": ["age"], "k": 0}, "at least 1"),
    ],
)
def test_bad_input(adult: pd.DataFrame, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        anonymize(adult, **kwargs)  # type: ignore[arg-type]


EDUCATION = {
    "Preschool": ["Basic", "*"], "1st-4th": ["Basic", "*"], "5th-6th": ["Basic", "*"], "7th-8th": ["Basic", "*"],
    "9th": ["Secondary", "*"], "10th": ["Secondary", "*"], "11th": ["Secondary", "*"], "12th": ["Secondary", "*"],
    "HS-grad": ["Secondary", "*"], "Some-college": ["Higher", "*"], "Assoc-voc": ["Higher", "*"],
    "Assoc-acdm": ["Higher", "*"], "Bachelors": ["Higher", "*"], "Masters": ["Graduate", "Higher", "*"],
    "Prof-school": ["Graduate", "Higher", "*"], "Doctorate": ["Graduate", "Higher", "*"],
}  # fmt: skip


def test_categorical_hierarchies(adult: pd.DataFrame) -> None:
    out, _ = anonymize(adult, ["age", "education", "sex"], 10, hierarchies={"education": EDUCATION})
    assert anonymity.k_anonymity(out.reset_index(drop=True), ["age", "education", "sex"]) >= 10
    labels = set(out["education"])
    nodes = {n for path in EDUCATION.values() for n in path} | set(EDUCATION)
    assert labels <= nodes  # every label is a value or a node of the tree, never an ad hoc set
    for orig, gen in zip(adult["education"], out["education"], strict=True):
        assert gen == orig or gen in EDUCATION[orig]
    with pytest.raises(InvalidInput, match="not in its hierarchy"):
        anonymize(adult, ["education"], 5, hierarchies={"education": {"Bachelors": ["*"]}})


# --- direct identifiers: never in a release that claims k-anonymity -------------------------------------


def customers(n: int = 60, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    births = [date(1940, 1, 1).toordinal() + int(d) for d in rng.integers(0, 20_000, n)]
    return pd.DataFrame(
        {
            "customer_id": [f"C-{1000 + i}" for i in range(n)],
            "full_name": [f"Person Number{i}" for i in range(n)],
            "email": [f"p{i}@example.com" for i in range(n)],
            "handle": [f"h{i:03d}" for i in range(n)],  # nothing in name or values says it identifies
            "birthdate": [date.fromordinal(b).isoformat() for b in births],
            "country": rng.choice(["DE", "FR", "US"], n),
            "balance": rng.integers(0, 10_000, n),
        }
    )


def test_direct_identifiers_are_dropped_by_default_and_kept_only_by_name() -> None:
    df = customers()
    out, r = anonymize(df, ["birthdate", "country"], 5)
    assert list(out.columns) == ["handle", "birthdate", "country", "balance"]
    assert r.direct_identifiers["dropped"] == ["customer_id", "full_name", "email"]
    assert set(r.direct_identifiers["reasons"]) == {"customer_id", "full_name", "email"}
    assert r.achieved["k"] >= 5 and not r.direct_identifiers["kept"]
    out, r = anonymize(df, ["birthdate", "country"], 5, keep=["email"])
    assert out["email"].tolist() == df["email"].tolist()
    assert r.direct_identifiers["kept"] == ["email"] and any("WARNING" in n and "email" in n for n in r.notes)
    out, r = anonymize(df, ["birthdate", "country"], 5, direct_identifiers="pseudonymize", pseudonymize=str.upper)
    assert out["email"].tolist() == [e.upper() for e in df["email"]]
    assert r.direct_identifiers["pseudonymized"] == ["customer_id", "full_name", "email"]
    with pytest.raises(InvalidInput, match="keyed pseudonym"):
        anonymize(df, ["birthdate"], 5, direct_identifiers="pseudonymize")
    with pytest.raises(InvalidInput, match="unknown column"):
        anonymize(df, ["birthdate"], 5, keep=["shoe_size"])


def test_session_uses_the_schema_and_keyed_pseudonyms(ws: Workspace) -> None:
    from complai.vault.schema import load_schema
    from tests.vault.conftest import SCHEMA

    df = customers(20)
    schema = load_schema(
        {
            **SCHEMA,
            "fields": [
                *SCHEMA["fields"],
                {"name": "handle", "type": "string", "category": "user.unique_id", "identifier": "direct"},
            ],
        },
        ws.taxonomy,
    )
    s = ws.session("owner", "analytics")
    out, r = s.deidentify_table(df, schema=schema, quasi=["birthdate", "country"], k=4)
    # the schema declares handle a direct identifier; the scanner classifies the undeclared columns
    assert "handle" not in out.columns and r.direct_identifiers["reasons"]["handle"].startswith("declared")
    out, r = s.deidentify_table(
        df, schema=schema, quasi=["birthdate", "country"], k=4, direct_identifiers="pseudonymize"
    )
    assert out["email"].str.fullmatch(r"<ID_[0-9a-f]{12}>").all() and out["email"].nunique() == 20
    again, _ = s.deidentify_table(df, quasi=["birthdate"], k=4, direct_identifiers="pseudonymize")
    assert again["email"].tolist() == out["email"].tolist()  # same key, same pseudonym
    with pytest.raises(InvalidInput, match="declared direct identifiers"):
        s.deidentify_table(df, schema=schema, quasi=["birthdate", "handle"], k=4)


# --- dates: ranges, never sets of exact dates -------------------------------------------------------------


def test_dates_generalise_as_ranges_and_numeric_is_accepted() -> None:
    df = customers()
    for numeric in (None, ["birthdate"]):
        out, r = anonymize(df, ["birthdate", "country"], 5, numeric=numeric)
        assert not out["birthdate"].str.contains("[{|]", regex=True).any()
        for orig, label in zip(df["birthdate"], out["birthdate"], strict=True):
            lo, hi = date_range(label)
            assert lo <= date.fromisoformat(orig) <= hi
        # information loss is the labels' span in days over the column's
        assert 0 < r.utility["information_loss_by_column"]["birthdate"] < 1
    assert date_label(date(1952, 11, 23).toordinal(), date(1952, 11, 23).toordinal())[0] == "1952-11-23"
    assert date_label(date(1952, 11, 3).toordinal(), date(1952, 11, 23).toordinal())[0] == "1952-11"
    assert date_label(date(1952, 1, 3).toordinal(), date(1955, 12, 2).toordinal())[0] == "1952-1955"
    label = date_label(date(1952, 11, 23).toordinal(), date(1955, 8, 30).toordinal())[0]
    assert label == "[1952-11-01, 1955-08-31]"
    with pytest.raises(InvalidInput, match="missing values"):
        anonymize(df.assign(birthdate=df["birthdate"].where(df.index > 0)), ["birthdate"], 5)
    # a date column that is not all ISO dates is refused, not released as sets of exact dates
    for other in ("unknown", "23/11/1952", "Nov 23, 1952"):
        with pytest.raises(InvalidInput, match="not every value is an ISO date"):
            anonymize(df.assign(birthdate=[other, *df["birthdate"][1:]]), ["birthdate"], 5)
    us = [date.fromisoformat(d).strftime("%m/%d/%Y") for d in df["birthdate"]]
    with pytest.raises(InvalidInput, match="not every value is an ISO date"):
        anonymize(df.assign(birthdate=us), ["birthdate"], 5)


@st.composite
def dated_tables(draw: st.DrawFn) -> tuple[pd.DataFrame, int]:
    n = draw(st.integers(4, 60))
    k = draw(st.integers(1, max(1, n // 2)))
    pool = draw(st.lists(st.dates(date(1900, 1, 1), date(2030, 12, 31)), min_size=1, max_size=n))
    days = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    with_time = draw(st.booleans())
    texts = [d.isoformat() + ("T08:30:00" if with_time else "") for d in days]
    groups = draw(st.lists(st.sampled_from(["a", "b"]), min_size=n, max_size=n))
    return pd.DataFrame({"born": texts, "g": groups, "v": range(n)}), k


@given(dated_tables())
@settings(max_examples=60, deadline=None, derandomize=True)
def test_every_released_date_is_a_range_holding_its_class(table: tuple[pd.DataFrame, int]) -> None:
    df, k = table
    out, _ = anonymize(df, ["born", "g"], k)
    classes = out.groupby(["born", "g"]).indices
    assert min(len(rows) for rows in classes.values()) >= k
    for (label, _), rows in classes.items():
        lo, hi = date_range(label)
        originals = {date.fromisoformat(df["born"].iloc[i][:10]) for i in rows}
        assert all(lo <= d <= hi for d in originals)
        if lo == hi:  # an exact date is released only when every record of the class has it
            assert originals == {lo}
