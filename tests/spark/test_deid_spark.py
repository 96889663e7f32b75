"""De-identification on Spark: a text column gives, row for row, the in-process analyzer and operators'
text (regex-only and NER), its tokens share the call's nonce across partitions; the k, l and t a Spark
frame achieves equal the in-process measure (itself checked by hand and against pycanon)."""

from __future__ import annotations

import base64
import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest
from pycanon import anonymity as pycanon

from complai.datasets import load_adult
from complai.deid import spark as deid_spark
from complai.deid.analyzer import TextAnalyzer
from complai.deid.operators import NONCE, Anonymizer, Keys
from complai.deid.tabular import measure
from complai.errors import InvalidInput

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

KEYS = Keys.from_workspace_key(bytes(range(32))).adhoc("ana", "support")

PEOPLE = ["Maria Gonzalez", "Dr. John Smith", "Aiko Tanaka", "Peter O'Neill", "Fatima Khan", "Lars Eriksson"]
TEMPLATES = [
    "{name} wrote from {email} on 2023-03-14 about the invoice.",
    "Call {name} back at +44 20 7946 0958, she asked twice.",
    "IBAN GB82 WEST 1234 5698 7654 32 belongs to {name}.",
    "Nothing personal in this line at all.",
    "Meeting with {name} moved to March 3, 2024; reach her at {email}.",
    "{name} and {other} share the card 4111 1111 1111 1111.",
]


def sentences() -> list[str | None]:
    out: list[str | None] = []
    for i in range(36):
        name, other = PEOPLE[i % len(PEOPLE)], PEOPLE[(i + 2) % len(PEOPLE)]
        email = name.split()[-1].lower().replace("'", "") + "@example.org"
        out.append(TEMPLATES[i % len(TEMPLATES)].format(name=name, other=other, email=email))
    return [*out, None, ""]


def frame(spark: SparkSession, texts: list[str | None]) -> Any:
    rows = [(i, t) for i, t in enumerate(texts)]
    return spark.createDataFrame(rows, "id long, note string").repartition(2, "id")


def in_process(
    texts: list[str | None], regex_only: bool, nonce: bytes | None, **kw: Any
) -> tuple[list[str | None], list[dict[str, int]]]:
    """The texts as the in-process analyzer and operators give them, and the findings per entity type."""
    anonymizer = deid_spark._CallAnonymizer(KEYS, nonce)
    found = iter(TextAnalyzer(regex_only=regex_only).analyze_batch([t for t in texts if t is not None]))
    out: list[str | None] = []
    counts: list[dict[str, int]] = []
    for t in texts:
        findings = [] if t is None else next(found)
        out.append(None if t is None else anonymizer.anonymize(t, findings, **kw)[0])
        counts.append({e: sum(f.entity == e for f in findings) for e in {f.entity for f in findings}})
    return out, counts


@pytest.mark.parametrize("regex_only", [True, False])
def test_a_column_is_de_identified_as_in_process(spark: SparkSession, regex_only: bool) -> None:
    texts = sentences()
    nonce = os.urandom(NONCE)
    ops = {"EMAIL_ADDRESS": "hash", "PERSON": "tokenize", "CREDIT_CARD": "mask"}
    df = deid_spark.deidentify_column(
        frame(spark, texts), "note", KEYS, nonce=nonce, operators=ops, regex_only=regex_only
    )
    assert df.columns == ["id", "note", deid_spark.FINDINGS]
    got = {r["id"]: (r["note"], r[deid_spark.FINDINGS]) for r in df.collect()}
    assert sorted(got) == list(range(len(texts)))
    want, counts = in_process(texts, regex_only, nonce, operators=ops)
    assert [got[i] for i in range(len(texts))] == list(zip(want, counts, strict=True))
    assert got[len(texts) - 2] == (None, {})
    joined = " ".join(t for t, _ in got.values() if t)
    assert "@example.org" not in joined and "4111 1111 1111 1111" not in joined
    assert ("Maria Gonzalez" in joined) == regex_only  # names are found by NER only
    if not regex_only:
        # tokens carry the call's nonce whichever partition their row was in, and open in process
        tokens = [w for t, _ in got.values() if t for w in t.split() if w.startswith("[[tok:")]
        assert len(tokens) > 10
        for tok in tokens:
            blob = tok.split(":")[2].split("]]")[0]
            assert base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))[:NONCE] == nonce
        restored, n = Anonymizer(KEYS, nonced=True).detokenize(joined)
        assert n == len(joined.split("[[tok:")) - 1 and "Maria Gonzalez" in restored


def test_refusals_come_before_any_job(spark: SparkSession) -> None:
    df = frame(spark, ["a"])
    before = sorted(spark.sparkContext.statusTracker().getJobIdsForGroup(None))
    for kw, words in (
        ({"column": "nothing"}, "unknown column"),
        ({"column": "id"}, "not text"),
        ({"column": "note", "default": "shred"}, "unknown operator"),
        ({"column": "note", "entities": ["SHOE_SIZE"]}, "unknown entity"),
        ({"column": "note", "nonce": b"short"}, "nonce"),
    ):
        args = {"nonce": None, **kw}
        with pytest.raises(InvalidInput, match=words):
            deid_spark.deidentify_column(df, keys=KEYS, **args)
    assert sorted(spark.sparkContext.statusTracker().getJobIdsForGroup(None)) == before


def test_measure_by_hand_and_against_pycanon() -> None:
    df = pd.DataFrame(
        {
            "zip": ["1", "1", "1", "2", "2", None, None],
            "s": ["a", "a", "b", "a", "c", "c", "c"],
            "n": [1, 1, 2, 1, 3, 3, 3],
        }
    )
    got = measure(df, ["zip"], "s")
    # classes {a,a,b}, {a,c}, {c,c}; P = (3/7, 1/7, 3/7)
    assert got["rows"] == 7 and got["classes"] == 3 and got["k"] == 2 and got["l_distinct"] == 1
    assert got["l_entropy"] == 1.0
    p = np.array([[2 / 3, 1 / 3, 0], [1 / 2, 0, 1 / 2], [0, 0, 1]]) - np.array([3, 1, 3]) / 7
    assert got["t"] == round(float(0.5 * np.abs(p).sum(axis=1).max()), 6)
    ordered = measure(df, ["zip"], "n", ordered=True)
    assert ordered["t"] == round(float((np.abs(np.cumsum(p, axis=1)[:, :-1]).sum(axis=1) / 2).max()), 6)
    sample = adult_sample().dropna(subset=["workclass"]).reset_index(drop=True)
    quasi = ["decade", "sex", "workclass"]
    mine = measure(sample, quasi, "income")
    assert mine["k"] == pycanon.k_anonymity(sample, quasi)
    assert mine["l_distinct"] == pycanon.l_diversity(sample, quasi, ["income"])
    with pytest.raises(InvalidInput):
        measure(df, ["zip"], "zip")
    with pytest.raises(InvalidInput):
        measure(df.head(0), ["zip"])


def adult_sample() -> pd.DataFrame:
    adult = load_adult("train").head(600)
    out = pd.DataFrame({"decade": (adult["age"] // 10 * 10).astype(str), "education_num": adult["education_num"]})
    for c in ("sex", "workclass", "occupation", "income"):
        out[c] = adult[c].astype(object).where(adult[c].notna(), None)
    return out.reset_index(drop=True)


def test_anonymity_on_spark_equals_the_in_process_measure(spark: SparkSession) -> None:
    sample = adult_sample()
    assert sample["workclass"].isna().any() and sample["occupation"].isna().any()  # nulls in both roles
    df = spark.createDataFrame(sample).repartition(2)
    quasi = ["decade", "sex", "workclass"]
    for sensitive, ordered in ((None, False), ("occupation", False), ("education_num", True)):
        want = measure(sample, quasi, sensitive, ordered=ordered)
        got = deid_spark.anonymity(df, quasi, sensitive, ordered=ordered)
        assert got.keys() == want.keys(), sensitive
        for key in want:
            assert math.isclose(got[key], want[key], abs_tol=2e-6), (sensitive, key, got[key], want[key])
    assert want["classes"] > 10 and want["t"] > 0
    with pytest.raises(InvalidInput, match="unknown column"):
        deid_spark.anonymity(df, ["nope"])


def test_a_governed_de_identification_on_spark_equals_the_in_process_one(spark: SparkSession) -> None:
    from complai.deid.governed import apply
    from complai.taxonomy import load_taxonomy
    from complai.vault.schema import DeidSpec, load_schema
    from tests.vault.conftest import SCHEMA

    schema = load_schema(
        {**SCHEMA, "fields": [*SCHEMA["fields"], {"name": "notes", "type": "text", "category": "user.content"}]},
        load_taxonomy(),
    )
    rows = pd.DataFrame(
        {
            "customer_id": ["C-1", "C-2", "C-ü3", None],
            "full_name": ["A B", "C D", "E F", "G H"],
            "email": ["a@example.org", "c@example.org", None, "g@example.org"],
            "income": [1, 2, 3, 4],
            "segment": ["retail", "premium", "retail", "retail"],
            "notes": [
                "mail a@example.org or +44 20 7946 0958",
                None,
                "nothing here",
                "IBAN GB82 WEST 1234 5698 7654 32",
            ],
        }
    )
    keys = Keys.from_workspace_key(bytes(range(32)))
    spec = DeidSpec(drop_direct_identifiers=True, pseudonymize=["customer_id"], text={"notes": "replace"})
    want, want_done = apply(rows, schema, spec, Anonymizer(keys))
    df = spark.createDataFrame(
        rows, "customer_id string, full_name string, email string, income long, segment string, notes string"
    )
    got, done = deid_spark.apply_spark(df, schema, spec, keys)
    assert done == want_done and got.columns == list(want.columns)

    def table(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
        cells = frame.astype(object).where(frame.notna(), None).to_numpy().tolist()
        return sorted(map(tuple, cells), key=str)

    assert table(got.toPandas()) == table(want)
    assert table(want)[0][0].startswith("<ID_")  # pseudonyms, not the ids
    with pytest.raises(InvalidInput, match="in process"):
        deid_spark.apply_spark(df, schema, DeidSpec(k=5), keys)
