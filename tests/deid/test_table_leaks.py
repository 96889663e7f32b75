"""Releases under innocent headers: direct identifiers leave whatever their columns are called, a
named quasi-identifier or sensitive column that holds them is refused, and dates in any format are
ranges or refused, never sets of exact dates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from complai.deid.tabular import anonymize, date_range
from complai.errors import InvalidInput

FIRST = ["Alice", "Bob", "Carol", "David", "Eve", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Zoë", "Łukasz"]
LAST = ["Smith", "Jones", "O'Brien", "Taylor", "Wilson", "Davies", "Evans", "Müller", "Roberts", "Walker-Lee"]
IBANS = ["GB82WEST12345698765432", "DE89370400440532013000", "NL91ABNA0417164300", "CH9300762011623852957"]


def people(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    names = [f"{FIRST[i % len(FIRST)]} {LAST[(i * 7) % len(LAST)]}" for i in range(n)]
    return pd.DataFrame(
        {
            "n": names,
            "col1": [f"{nm.split()[0].lower()}{i}@example.com" for i, nm in enumerate(names)],
            "contact": [f"+44 20 7946 {i:04d}" for i in range(n)],
            "ref": [IBANS[i % len(IBANS)] for i in range(n)],
            "city": [f"user{i}@example.org" for i in range(n)],  # a quasi-identifier's name, emails inside
            "age": rng.integers(20, 70, n),
            "sex": rng.choice(["F", "M"], n),
            "income": rng.choice(["<=50K", ">50K"], n),
        }
    )


def test_direct_identifiers_under_innocent_headers_leave_the_release() -> None:
    df = people()
    out, r = anonymize(df, ["age", "sex"], 4, sensitive="income")
    assert set(r.direct_identifiers["dropped"]) == {"n", "col1", "contact", "ref", "city"}
    released = set(out.astype(str).to_numpy().ravel())
    for col in ("n", "col1", "contact", "ref", "city"):
        assert not released & set(df[col].astype(str)), col
    # the report's k holds over the released quasi-identifiers (classes with equal labels merge)
    assert out.groupby(["age", "sex"]).size().min() >= r.achieved["k"] >= 4


@pytest.mark.parametrize(("quasi", "sensitive"), [(["age", "col1"], "income"), (["age"], "ref"), (["age", "n"], None)])
def test_a_named_column_holding_direct_identifiers_is_refused_unless_kept(quasi: list[str], sensitive: str) -> None:
    df = people()
    with pytest.raises(InvalidInput, match="direct identifiers"):
        anonymize(df, quasi, 4, sensitive=sensitive)
    column = next(c for c in [*quasi, sensitive] if c in ("col1", "ref", "n"))
    _, r = anonymize(df, quasi, 4, sensitive=sensitive, keep=[column])
    assert column in r.direct_identifiers["kept"] and any("WARNING" in note for note in r.notes)


def test_country_names_and_codes_are_not_names() -> None:
    rng = np.random.default_rng(1)
    df = pd.DataFrame(
        {
            "country": rng.choice(["United States", "South Korea", "New Zealand", "Hong Kong"], 60),
            "handle": [f"h{i:03d}" for i in range(60)],
            "age": rng.integers(20, 70, 60),
        }
    )
    out, r = anonymize(df, ["age"], 5)
    assert not r.direct_identifiers["dropped"] and list(out.columns) == ["country", "handle", "age"]


@pytest.mark.parametrize(
    "fmt",
    [
        "{y}-{m}-{d}",  # unpadded ISO
        "{d:02d}.{m:02d}.{y}",
        "{y}/{m:02d}/{d:02d}",
        "{d:02d}-{m:02d}-{y}",
        "{y}{m:02d}{d:02d}T0830",
    ],
)
def test_dates_in_other_formats_are_refused(fmt: str) -> None:
    df = pd.DataFrame(
        {
            "born": [fmt.format(y=1950 + i % 30, m=1 + i % 12, d=1 + i % 28) for i in range(40)],
            "g": ["a", "b"] * 20,
        }
    )
    with pytest.raises(InvalidInput, match="dates"):
        anonymize(df, ["born", "g"], 3)


def test_a_few_dates_among_other_values_are_refused() -> None:
    born = [f"1980-01-{i + 1:02d}" if i < 10 else "unknown" for i in range(40)]
    with pytest.raises(InvalidInput, match="dates"):
        anonymize(pd.DataFrame({"born": born, "g": ["a", "b"] * 20}), ["born", "g"], 3)


def test_datetimes_with_zone_names_are_dates() -> None:
    born = [f"2020-03-{1 + i % 28:02d} 23:30:00 {'UTC' if i % 2 else 'CET'}" for i in range(40)]
    df = pd.DataFrame({"born": born, "g": ["a", "b"] * 20})
    out, r = anonymize(df, ["born", "g"], 3)
    assert out.groupby(["born", "g"]).size().min() >= r.achieved["k"] >= 3
    for orig, label in zip(born, out["born"], strict=True):
        lo, hi = date_range(label)
        assert lo <= pd.Timestamp(orig[:10]).date() <= hi and "23:30" not in label


def test_a_few_identifiers_among_placeholders_or_inside_text_leave_the_release() -> None:
    from complai.deid.recognizers import find_patterns

    df = people(200)
    df = df.drop(columns=["n", "col1", "contact", "ref", "city"]).assign(
        col2=["-" if i % 25 else f"p{i}@example.com" for i in range(200)],  # 4% emails among placeholders
        notes=[f"order {i} shipped" if i != 117 else "refund to GB82 WEST 1234 5698 7654 32" for i in range(200)],
    )
    out, r = anonymize(df, ["age", "sex"], 5)
    assert set(r.direct_identifiers["dropped"]) == {"col2", "notes"}
    wanted = ["EMAIL_ADDRESS", "IBAN_CODE", "CREDIT_CARD", "US_SSN", "CN_RESIDENT_ID"]
    assert not [v for v in out.astype(str).to_numpy().ravel() if find_patterns(v, wanted)]
    with pytest.raises(InvalidInput, match="direct identifiers"):
        anonymize(df, ["age", "sex"], 5, sensitive="notes")


def test_a_date_column_left_out_of_the_quasi_identifiers_is_warned_about() -> None:
    df = people().assign(born=[f"19{50 + i % 40}-0{1 + i % 9}-1{i % 10}" for i in range(40)])
    _, r = anonymize(df, ["age", "sex"], 4)
    assert any(note.startswith("WARNING") and "born" in note for note in r.notes)
    _, r = anonymize(df, ["age", "sex", "born"], 4)
    assert not any(note.startswith("WARNING") for note in r.notes)


def test_identifiers_read_as_numbers_leave_the_release() -> None:
    from complai.datasets.customer_service import luhn_check_digit

    cards = [int(b + luhn_check_digit(b)) for b in (f"4{i:014d}" for i in range(40))]
    df = pd.DataFrame(
        {
            "x": cards,  # read from a CSV as int64
            "y": [110105194912310003] * 40,  # a resident identity number (ISO 7064 MOD 11-2)
            "z": [float(c) if i else None for i, c in enumerate(cards)],  # one missing: float64
            "age": [20 + i % 30 for i in range(40)],
        }
    )
    out, r = anonymize(df, ["age"], 4)
    assert set(r.direct_identifiers["dropped"]) == {"x", "y", "z"} and list(out.columns) == ["age"]


def test_iso_dates_under_an_innocent_header_are_a_date_quasi_identifier() -> None:
    df = pd.DataFrame({"d": [f"19{50 + i % 40}-0{1 + i % 9}-1{i % 10}" for i in range(40)], "g": ["a", "b"] * 20})
    out, r = anonymize(df, ["d", "g"], 4)
    assert out.groupby(["d", "g"]).size().min() >= r.achieved["k"] >= 4


def test_free_text_holding_personal_data_is_warned_about() -> None:
    df = people().drop(columns=["n", "col1", "contact", "ref", "city"])
    df["notes"] = [f"call me on +44 20 7946 {i:04d} after six" for i in range(40)]
    out, r = anonymize(df, ["age", "sex"], 4)
    assert "notes" in out.columns
    assert any(note.startswith("WARNING") and "notes" in note and "PHONE_NUMBER" in note for note in r.notes)
