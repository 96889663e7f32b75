"""Dates with declared bounds: the schema takes them as ISO 8601 dates, ingest refuses dates outside them,
DP statistics take dates as days since 1970-01-01 with noise calibrated to the bounds in days, and a
date feature is an age in years at the training spec's reference date. OpenDP takes no seed, so the
statistical bounds are derived from the mechanism (failure probability below 1e-8)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from complai.app.workspace import Workspace
from complai.dp.features import TabularFeatures
from complai.dp.queries import Aggregate, Plan
from complai.dp.training import TrainingSpec
from complai.errors import InvalidInput
from complai.vault.records import check_value
from complai.vault.schema import load_schema

EPOCH = dt.date(1970, 1, 1)
PEOPLE: dict[str, Any] = {
    "name": "people",
    "subject_column": "pid",
    "jurisdiction": "EU",
    "retention": "P1Y",
    "purposes": {"analytics": "gdpr.legitimate_interests"},
    "fields": [
        {"name": "pid", "type": "string", "category": "user.unique_id", "identifier": "direct", "nullable": False},
        {
            "name": "birthdate",
            "type": "date",
            "category": "user.demographic.date_of_birth",
            "identifier": "quasi",
            "min": "1900-01-01",
            "max": "2030-01-01",
        },
        {"name": "seen", "type": "datetime", "category": "user.behavior"},
        {"name": "score", "type": "integer", "category": "user.behavior", "min": 0, "max": 10},
    ],
}
SCHEMA_YAML = """
name: people
subject_column: pid
jurisdiction: EU
retention: P1Y
purposes: {analytics: gdpr.legitimate_interests}
fields:
  - {name: pid, type: string, category: user.unique_id, identifier: direct}
  - {name: birthdate, type: date, category: user.demographic.date_of_birth, min: 1900-01-01, max: 2030-01-01}
  - {name: seen, type: datetime, category: user.behavior, min: 2000-01-01, max: "2030-06-30T12:00:00+02:00"}
"""


def _with(field: dict[str, Any]) -> dict[str, Any]:
    return {**PEOPLE, "fields": [PEOPLE["fields"][0], field]}


def test_date_bounds_are_written_as_iso_dates(ws: Workspace) -> None:
    schema = load_schema(SCHEMA_YAML, ws.taxonomy)  # YAML reads 1900-01-01 as a date object
    born, seen = schema.field("birthdate"), schema.field("seen")
    assert (born.min, born.max) == ("1900-01-01", "2030-01-01")
    assert (seen.min, seen.max) == ("2000-01-01T00:00:00Z", "2030-06-30T10:00:00Z")  # UTC
    assert born.numeric_bounds == ((dt.date(1900, 1, 1) - EPOCH).days, (dt.date(2030, 1, 1) - EPOCH).days)
    assert seen.numeric_bounds[1] == (dt.date(2030, 6, 30) - EPOCH).days + 10 / 24
    # numbers stay numbers
    assert load_schema(PEOPLE, ws.taxonomy).field("score").max == 10.0


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ({"type": "date", "min": "2030-01-01", "max": "1900-01-01"}, "min is greater than max"),
        ({"type": "date", "min": 19000101}, "ISO 8601 dates such as 1900-01-01"),
        ({"type": "date", "min": "1990-02-30"}, "not an ISO 8601 date"),
        ({"type": "date", "min": "yesterday"}, "ISO 8601 dates"),
        ({"type": "date", "min": "1990-01-01T10:00:00"}, "without a time"),
        ({"type": "integer", "min": "1990-01-01"}, "numeric field is a number"),
        ({"type": "string", "min": "a"}, "numeric fields only"),
    ],
)
def test_bad_date_bounds_are_refused(ws: Workspace, field: dict[str, Any], message: str) -> None:
    spec = {"name": "x", "category": "user.behavior", **field}
    with pytest.raises(InvalidInput, match=message):
        load_schema(_with(spec), ws.taxonomy)


@pytest.fixture
def people(ws: Workspace) -> Workspace:
    admin = ws.session("owner", "administration")
    admin.create_dataset(load_schema(PEOPLE, ws.taxonomy))
    admin.set_budget("people", 100.0, 1e-6)
    return ws


def test_ingest_refuses_dates_outside_the_bounds(people: Workspace) -> None:
    s = people.session("owner", "analytics")
    head = people.ledger.head().size
    rows = pd.DataFrame(
        {"pid": ["a", "b", "c"], "birthdate": ["1899-12-31", "1980-05-05", "2030-01-02"], "seen": [None] * 3}
    )
    with pytest.raises(InvalidInput) as err:
        s.ingest("people", rows)
    assert "before the declared min 1900-01-01" in err.value.message
    assert "after the declared max 2030-01-01" in err.value.message
    assert "1980-05-05" not in err.value.message  # only the bad values are named
    assert people.ledger.head().size == head  # nothing stored, nothing recorded
    ok = rows.assign(birthdate=["1900-01-01", "1980-05-05", "2030-01-01"])  # the bounds themselves are inside
    assert s.ingest("people", ok).rows == 3


def test_sum_of_dates_noise_is_calibrated_in_days() -> None:
    """Laplace noise on a sum of days: scale = max(|min|, |max|) in days / epsilon (one row per subject)."""
    lo, hi = (dt.date(1900, 1, 1) - EPOCH).days, (dt.date(2030, 1, 1) - EPOCH).days
    born = pd.to_datetime(pd.Series(["1950-06-01", "1990-01-01", "2001-12-31"] * 10), utc=True)
    true = sum((d.date() - EPOCH).days for d in born)
    eps, reps = 1.0, 2000
    plan = Plan([Aggregate("sum", "born")], {"born": (lo, hi)}, {"born"}, eps, days=frozenset({"born"}))
    label = "sum(born) (days since 1970-01-01)"
    noise = np.array([plan.release(pd.DataFrame({"born": born})).values[label] - true for _ in range(reps)])
    b = max(abs(lo), abs(hi)) / eps
    assert abs(noise.mean()) < 6 * b * math.sqrt(2) / math.sqrt(reps)  # mean 0 (sd of a Laplace: b*sqrt(2))
    assert abs(np.abs(noise).mean() / b - 1) < 6 / math.sqrt(reps)  # E|noise| = b, sd of |noise| = b


def test_average_date_through_sql(people: Workspace) -> None:
    rng = np.random.default_rng(3)
    days = rng.integers((dt.date(1940, 1, 1) - EPOCH).days, (dt.date(2005, 1, 1) - EPOCH).days, 2000)
    born = [(EPOCH + dt.timedelta(days=int(d))).isoformat() for d in days]
    s = people.session("owner", "analytics")
    s.ingest("people", pd.DataFrame({"pid": [f"p{i}" for i in range(2000)], "birthdate": born, "seen": None}))
    young = days >= (dt.date(1980, 1, 1) - EPOCH).days
    ans = s.dp_query("SELECT AVG(birthdate) FROM people WHERE birthdate >= '1980-01-01'", 10.0)
    label = "mean(birthdate) (days since 1970-01-01)"
    # epsilon 5 for the sum (Laplace scale b = 25567 / 5 days), 5 for the count (scale 0.2 rows): with
    # about 770 rows, 150 days off on the mean needs the sum's noise past 115,000 days, 22 b: P < 1e-9
    assert young.sum() > 700
    assert abs(ans.values[label] - days[young].mean()) < 150
    doc = ans.as_dict()
    shown = dt.date.fromisoformat(doc["dates"][label])
    assert shown == EPOCH + dt.timedelta(days=round(ans.values[label]))
    with pytest.raises(InvalidInput, match="needs declared bounds"):
        s.dp_query("SELECT AVG(seen) FROM people", 1.0)


def test_date_feature_is_age_at_the_reference_date(ws: Workspace) -> None:
    schema = load_schema(PEOPLE, ws.taxonomy)
    with pytest.raises(InvalidInput, match="reference_date"):
        TabularFeatures(schema, ["birthdate"])
    with pytest.raises(InvalidInput, match="needs declared bounds"):
        TabularFeatures(schema, ["seen"], dt.date(2026, 1, 1))
    ref = dt.date(2026, 1, 1)
    feats = TabularFeatures(schema, ["birthdate"], ref)
    frame = pd.DataFrame({"birthdate": pd.to_datetime(["1990-01-01", "2030-01-01", "1850-01-01", None], utc=True)})
    x = feats.transform(frame)[:, 0]
    # ages run from (ref - max) (negative: born after the reference date) to (ref - min), in years
    young, old = (ref - dt.date(2030, 1, 1)).days / 365.25, (ref - dt.date(1900, 1, 1)).days / 365.25
    age = (ref - dt.date(1990, 1, 1)).days / 365.25
    assert x[0] == pytest.approx((age - young) / (old - young), rel=1e-6)
    assert x[1] == 0.0 and x[2] == 1.0 and x[3] == 0.5  # youngest, clipped oldest, missing in the middle
    described = feats.describe()[0]
    assert described["reference_date"] == "2026-01-01" and described["encoding"] == "age"
    spec = TrainingSpec.parse(
        {"dataset": "people", "label": "x", "features": ["birthdate"], "reference_date": "2026-01-01", "private": False}
    )
    assert spec.reference_date == ref


def test_training_on_a_date_feature(people: Workspace) -> None:
    """Approval depends only on being born before 1970: the age feature separates it (the ranking of a
    one-feature logistic model is monotone in the age, so its AUC is 1 once the sign is learnt)."""
    rng = np.random.default_rng(0)
    days = rng.integers(-20_000, 10_000, 400)
    born = [(EPOCH + dt.timedelta(days=int(d))).isoformat() for d in days]
    schema = {
        **PEOPLE,
        "name": "applicants",
        "purposes": {"train_ai_system": "gdpr.legitimate_interests"},
        "fields": [
            PEOPLE["fields"][0],
            PEOPLE["fields"][1],
            {"name": "approved", "type": "boolean", "category": "user.derived"},
        ],
    }
    admin = people.session("owner", "administration")
    admin.create_dataset(load_schema(schema, people.taxonomy))
    admin.ingest(
        "applicants", pd.DataFrame({"pid": [f"p{i}" for i in range(400)], "birthdate": born, "approved": days < 0})
    )
    s = people.session("owner", "train_ai_system")
    head = people.ledger.head().size
    kw: dict[str, Any] = {"label": "approved", "features": ["birthdate"], "private": False, "batch_size": 32}
    with pytest.raises(InvalidInput, match="reference_date"):
        s.train("applicants", **kw)
    assert people.ledger.head().size == head  # refused before the read: nothing recorded
    card = s.train("applicants", epochs=20, reference_date="2026-01-01", **kw)
    assert card["utility"]["auc"] > 0.99
    [feature] = card["data"]["preprocessing"]["features"]
    assert feature["encoding"] == "age" and feature["reference_date"] == "2026-01-01"


def test_datetime_bounds_compare_instants(ws: Workspace) -> None:
    """A datetime's bound is an instant: a value's offset is taken into account before comparing."""
    seen = load_schema(SCHEMA_YAML, ws.taxonomy).field("seen")  # max 2030-06-30T10:00:00Z
    assert check_value(seen, "2030-06-30T11:59:00+02:00") == "2030-06-30T09:59:00.000000Z"
    with pytest.raises(InvalidInput, match="after the declared max 2030-06-30T10:00:00Z"):
        check_value(seen, "2030-06-30T12:30:00+02:00")  # 10:30 UTC
    with pytest.raises(InvalidInput, match="before the declared min 2000-01-01T00:00:00Z"):
        check_value(seen, "1999-12-31T23:59:59Z")
