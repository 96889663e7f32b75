"""De-identification on Spark through the session and the CLI: a Parquet text column de-identified and
written whole or not at all (one `deid.text_column` event), the k, l and t of a Parquet table checked
against thresholds (one `deid.anonymity_checked` event), refusals that write and record nothing, and a
governed Spark read of an external dataset de-identified as its purpose declares, with the pseudonyms
an in-process governed read shows."""

from __future__ import annotations

import json
import math
import os
import stat
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.deid.analyzer import TextAnalyzer
from complai.deid.operators import Anonymizer
from complai.deid.tabular import measure
from complai.errors import ComplaiError, InvalidInput
from complai.files import PARTIAL, staged_dataset_dir
from complai.vault.schema import load_schema
from tests.cli.test_requests_portal import Ran  # a command run in this process: the tests' Spark is the one it finds
from tests.spark.conftest import write_parquet
from tests.spark.test_external import COPIES, jobs, lake_rows, last_event, source_of, stage_names
from tests.vault.conftest import SCHEMA, consents_frame, people_frame
from tests.vault.test_external_registry import LAKE

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

NOTES = [
    "Write to ana.lima@example.org before Friday.",
    "Call +44 20 7946 0958 or mail bo@example.net about card 4111 1111 1111 1111.",
    "Nothing personal here.",
    None,
    "",
]
PLANTED = {"EMAIL_ADDRESS": 2, "CREDIT_CARD": 1}  # at least these, by construction


def notes_source(tmp_path: Path) -> str:
    frame = pd.DataFrame({"id": range(len(NOTES)), "note": NOTES, "score": [0.5, 1.5, 2.5, 3.5, 4.5]})
    return write_parquet(tmp_path, frame, "notes.parquet")


def size(ws: Workspace) -> int:
    return ws.ledger.head().size


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if PARTIAL in p.name]


def test_a_text_column_is_de_identified_written_privately_and_recorded_once(
    spark_ws: Workspace, tmp_path: Path
) -> None:
    ws = spark_ws
    source = notes_source(tmp_path)
    out = tmp_path / "clean"
    s = ws.session(OWNER, "analytics")
    before = size(ws)
    done = s.deidentify_text_column(source, "note", out, operators={"EMAIL_ADDRESS": "hash"}, regex_only=True)
    table = pq.read_table(out)
    assert table.column_names == ["id", "note", "score"]  # the findings and lengths are not written
    got = sorted(table.to_pylist(), key=lambda r: r["id"])
    assert [r["score"] for r in got] == [0.5, 1.5, 2.5, 3.5, 4.5]
    texts = [r["note"] for r in got]
    assert texts[2] == NOTES[2] and texts[3] is None and texts[4] == ""
    assert "@example" not in " ".join(t for t in texts if t) and "4111" not in texts[1]
    assert texts[0].startswith("Write to <EMAIL_ADDRESS_") and "<CREDIT_CARD>" in texts[1]
    # the ad-hoc keys of this principal and purpose, never the governed ones
    adhoc = Anonymizer.adhoc(ws.deid_keys, OWNER, "analytics")
    assert adhoc.pseudonym("EMAIL_ADDRESS", "ana.lima@example.org") in texts[0]
    assert Anonymizer(ws.deid_keys).pseudonym("EMAIL_ADDRESS", "ana.lima@example.org") not in texts[0]
    # what the in-process analyzer finds in the same texts, and at least what was planted
    expected = Counter(
        f.entity for fs in TextAnalyzer(regex_only=True).analyze_batch([t for t in NOTES if t]) for f in fs
    )
    assert done.findings == dict(expected) and all(done.findings[e] >= n for e, n in PLANTED.items())
    assert (done.rows, done.characters) == (len(NOTES), sum(len(t) for t in NOTES if t))
    # private, whole, no temporary folder left beside it
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for folder, dirs, files in os.walk(out):
        assert all(stat.S_IMODE(os.stat(os.path.join(folder, d)).st_mode) == 0o700 for d in dirs)
        assert files and all(stat.S_IMODE(os.stat(os.path.join(folder, f)).st_mode) == 0o600 for f in files)
    assert leftovers(tmp_path) == []
    # one event, with counts and the input's identity, never a text
    assert size(ws) == before + 1 and done.ledger_seq == before
    event = last_event(ws)
    assert event["type"] == "deid.text_column" and event["actor"] == OWNER and event["column"] == "note"
    assert (event["rows"], event["characters"], event["findings"]) == (done.rows, done.characters, done.findings)
    assert event["operators"] == {"default": "replace", "EMAIL_ADDRESS": "hash"}
    assert event["input_digest"].startswith("sha256:") and "example" not in json.dumps(event)
    # the same input has the same identity; an existing output is replaced only with force
    with pytest.raises(InvalidInput, match="already exists"):
        s.deidentify_text_column(source, "note", out, regex_only=True)
    assert size(ws) == before + 1
    again = s.deidentify_text_column(source, "note", out, regex_only=True, force=True)
    assert last_event(ws)["input_digest"] == event["input_digest"] and again.findings == done.findings
    assert (
        min(pq.read_table(out).to_pylist(), key=lambda r: r["id"])["note"] == "Write to <EMAIL_ADDRESS> before Friday."
    )
    assert leftovers(tmp_path) == []


def test_bad_input_writes_and_records_nothing(spark_ws: Workspace, tmp_path: Path) -> None:
    ws = spark_ws
    source = notes_source(tmp_path)
    s = ws.session(OWNER, "analytics")
    out = tmp_path / "clean"
    before = size(ws)
    for kw, words in (
        ({"column": "nothing"}, "unknown column"),
        ({"column": "score"}, "not text"),
        ({"column": "note", "default": "shred"}, "unknown operator"),
        ({"column": "note", "operators": {"EMAIL_ADDRESS": "shred"}}, "unknown operator"),
        ({"column": "note", "entities": ["SHOE_SIZE"]}, "unknown entity"),
        ({"column": "note", "source": str(tmp_path / "missing.parquet")}, "does not exist"),
        ({"column": "note", "source": str(tmp_path)}, "overlap its input"),
    ):
        args: dict[str, Any] = {"source": source, "out": out, "regex_only": True, **kw}
        with pytest.raises(InvalidInput, match=words):
            s.deidentify_text_column(**args)
        assert not out.exists() and size(ws) == before, kw
    (tmp_path / "not.parquet").write_text("id,note\n1,a\n")
    with pytest.raises(InvalidInput, match="as Parquet"):
        s.deidentify_text_column(tmp_path / "not.parquet", "note", out, regex_only=True)
    # a link is never written through, and force replaces nothing but a file or a folder of data files
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InvalidInput, match="symbolic link"):
        s.deidentify_text_column(source, "note", tmp_path / "link", regex_only=True, force=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("mine")
    with pytest.raises(InvalidInput, match="more than data files"):
        s.deidentify_text_column(source, "note", mine, regex_only=True, force=True)
    assert (mine / "thesis.tex").read_text() == "mine" and not any((tmp_path / "elsewhere").iterdir())
    assert size(ws) == before and leftovers(tmp_path) == []


def test_a_failed_job_leaves_no_folder_and_no_event(spark_ws: Workspace, tmp_path: Path) -> None:
    """A folder whose second file holds the column as integers: the schema (its `_common_metadata`, which
    Spark reads first) says text, and reading that file fails inside the job."""
    ws = spark_ws
    folder = tmp_path / "mixed"
    folder.mkdir()
    pq.write_metadata(pa.schema([("id", pa.int64()), ("note", pa.string())]), folder / "_common_metadata")
    pq.write_table(pa.table({"id": [1], "note": ["mail x@example.org"]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"id": [2], "note": [7]}), folder / "part-1.parquet")
    s = ws.session(OWNER, "analytics")
    before = size(ws)
    with pytest.raises(ComplaiError) as failed:
        s.deidentify_text_column(folder, "note", tmp_path / "clean", regex_only=True)
    assert type(failed.value) is ComplaiError and "failed in Spark" in str(failed.value)
    assert "\n" not in str(failed.value) and "example" not in str(failed.value)
    assert not (tmp_path / "clean").exists() and leftovers(tmp_path) == [] and size(ws) == before


def test_a_staged_folder_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_dataset_dir(out) as target:
        target.mkdir()
        (target / "part-0").write_text("half")
        raise RuntimeError("the writer failed")
    assert not out.exists() and leftovers(tmp_path) == []
    with staged_dataset_dir(out) as target:
        target.mkdir()
        (target / "part-0").write_text("whole")
        assert not out.exists()
    assert (out / "part-0").read_text() == "whole"
    with pytest.raises(RuntimeError), staged_dataset_dir(out, force=True) as target:
        target.mkdir()
        raise RuntimeError("the writer failed")
    assert (out / "part-0").read_text() == "whole"  # the previous output as it was


def anonymity_table() -> pd.DataFrame:
    # classes {a,a,b}, {a,c}, {c,c} (a null is a value of its own): k=2, l=1
    return pd.DataFrame({"zip": ["1", "1", "1", "2", "2", None, None], "s": ["a", "a", "b", "a", "c", "c", "c"]})


def test_anonymity_is_checked_against_thresholds_and_recorded(
    spark_ws: Workspace, spark: SparkSession, tmp_path: Path
) -> None:
    ws = spark_ws
    table = anonymity_table()
    source = write_parquet(tmp_path, table, "people.parquet")
    s = ws.session(OWNER, "analytics")
    before = size(ws)
    got = s.check_anonymity(source, ["zip"], "s", k=2, t=0.9)
    want = measure(table, ["zip"], "s")
    assert got.figures.keys() == want.keys() and (got.figures["k"], got.figures["classes"]) == (2, 3)
    assert all(math.isclose(got.figures[key], want[key], abs_tol=2e-6) for key in want)
    assert got.met == {"k": True, "t": want["t"] <= 0.9} and got.all_met == (want["t"] <= 0.9)
    missed = s.check_anonymity(source, ["zip"], "s", k=3, l=2)
    assert missed.met == {"k": False, "l": False} and not missed.all_met
    assert size(ws) == before + 2
    event = last_event(ws)
    assert event["type"] == "deid.anonymity_checked" and event["quasi_identifiers"] == ["zip"]
    assert (event["k"], event["l_distinct"], event["k_asked"], event["l_asked"], event["met"]) == (2, 1, 3, 2, False)
    assert event["t_asked"] is None and event["sensitive"] == "s" and event["rows"] == 7
    assert event["input_digest"].startswith("sha256:")
    bare = s.check_anonymity(source, ["zip", "s"])
    assert bare.met == {} and bare.all_met and bare.figures == {"rows": 7, "classes": 5, "k": 1}
    # refusals before any job over the rows, recorded nowhere
    size_before, jobs_before = size(ws), jobs(spark)
    for args, kw, words in (
        ((["zip", "nope"],), {}, "unknown column"),
        ((["zip"], "zip"), {}, "cannot be a quasi-identifier"),
        ((["zip"],), {"l": 2}, "sensitive column"),
        ((["zip"], "s"), {"t": 1.5}, "between 0 and 1"),
        ((["zip"], "s"), {"k": 0}, "at least 1"),
    ):
        with pytest.raises(InvalidInput, match=words):
            s.check_anonymity(source, *args, **kw)
    with pytest.raises(InvalidInput, match="does not exist"):
        s.check_anonymity(tmp_path / "missing", ["zip"])
    assert size(ws) == size_before
    ran = [j for j in jobs(spark) if j not in jobs_before]
    assert all(set(stage_names(spark, j)) <= {"parquet"} for j in ran)  # at most the schema's footer


def test_the_cli_commands(spark_ws: Workspace, tmp_path: Path) -> None:
    ws = spark_ws
    w = ["--workspace", str(ws.services.path)]
    source = notes_source(tmp_path)
    out = tmp_path / "clean"
    r = Ran(*w, "deid", "column", source, "--column", "note", "--out", str(out), "--regex-only", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # one document on stdout, progress on stderr
    assert doc["rows"] == len(NOTES) and doc["findings"]["EMAIL_ADDRESS"] == 2 and doc["out"] == str(out)
    # the progress line names the source whole, on one line, however long its path
    assert f"de-identifying column note of {source} on Spark..." in r.stderr and out.is_dir()
    assert last_event(ws)["type"] == "deid.text_column"
    r = Ran(*w, "deid", "column", source, "--column", "note", "--out", str(out), "--regex-only")
    assert r.returncode == 2 and "already exists" in r.stderr
    r = Ran(*w, "deid", "column", source, "--column", "nope", "--out", str(tmp_path / "x"), "--regex-only")
    assert r.returncode == 2 and "unknown column" in r.stderr and not (tmp_path / "x").exists()
    r = Ran(*w, "deid", "column", source, "--column", "note", "--out", str(tmp_path / "x"), "--operator", "shred")
    assert r.returncode == 2 and "unknown operator" in r.stderr and not (tmp_path / "x").exists()

    people = write_parquet(tmp_path, anonymity_table(), "people.parquet")
    r = Ran(*w, "deid", "check", people, "--quasi", "zip", "--sensitive", "s", "--k", "2", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["k"], doc["l_distinct"], doc["met"], doc["all_met"]) == (2, 1, {"k": True}, True)
    r = Ran(*w, "deid", "check", people, "--quasi", "zip", "--sensitive", "s", "--k", "2", "--l", "2")
    assert r.returncode == 1 and "l 2: NOT met" in r.stdout and "k 2: met" in r.stdout
    r = Ran(*w, "deid", "check", people, "--quasi", "zip")
    assert r.returncode == 0 and "7 rows in 3 classes: k=2" in r.stdout
    events = size(ws)
    r = Ran(*w, "deid", "check", people, "--quasi", "zip,nope", "--k", "2")
    assert r.returncode == 2 and "unknown column" in r.stderr and size(ws) == events


@pytest.fixture
def governed(spark_ws: Workspace, tmp_path: Path) -> Workspace:
    """The same subjects in a vault dataset (one record each) and in an external one (three rows each),
    both de-identified for credit scoring: direct identifiers dropped, the customer id pseudonymised."""
    ws = spark_ws
    deid = {"credit_scoring": {"drop_direct_identifiers": True, "pseudonymize": ["customer_id"]}}
    ws.catalog.register(load_schema({**SCHEMA, "deidentify": deid}, ws.taxonomy), actor=OWNER)
    ws.vault.ingest("customers", people_frame(), actor=OWNER, consents_data=consents_frame())
    location = write_parquet(tmp_path, lake_rows(), "lake.parquet")
    s = ws.session(OWNER, "administration")
    s.register_external(load_schema({**LAKE, "deidentify": deid}, ws.taxonomy), source_of(tmp_path, location))
    s.enrol("lake_customers", [cid for cid, *_ in people_frame().itertuples(index=False)])
    return ws


def test_a_governed_spark_read_de_identifies_as_the_purpose_declares(governed: Workspace, spark: SparkSession) -> None:
    ws = governed
    s = ws.session(OWNER, "credit_scoring")
    in_process = s.read_governed("customers")
    in_event = last_event(ws)
    got = s.read_spark("lake_customers")
    event = last_event(ws)
    # the same columns, the same rows (three copies each), the same pseudonyms
    assert got.frame.columns == list(in_process.frame.columns) == ["customer_id", "income", "segment"]
    rows = sorted(tuple(r) for r in got.frame.collect())
    assert rows == sorted([tuple(r) for r in in_process.frame.itertuples(index=False)] * COPIES)
    assert len(rows) == len(people_frame()) * COPIES
    ids = people_frame()["customer_id"].tolist()
    assert {r[0] for r in rows} == {Anonymizer(ws.deid_keys).pseudonym("ID", cid) for cid in ids}
    # recorded as the in-process read records its de-identification
    assert got.deidentification == in_process.deidentification == event["deidentification"]
    assert event["deidentification"] == in_event["deidentification"]
    assert event["deidentification"] == {"pseudonymized": ["customer_id"], "dropped": ["full_name", "email"]}
    assert (event["type"], event["columns"], event["rows"]) == ("vault.read", in_event["columns"], len(rows))
    # a caller adds protections (a column shown dropped), and k is refused before any job, recording nothing
    narrow = s.read_spark("lake_customers", ["customer_id", "email", "income"])
    assert narrow.frame.columns == ["customer_id", "income"] and last_event(ws)["deidentification"]["dropped"] == [
        "email"
    ]
    before, jobs_before = size(ws), jobs(spark)
    with pytest.raises(InvalidInput, match="in process only"):
        s.read_spark("lake_customers", deidentify={"k": 2})
    assert (size(ws), jobs(spark)) == (before, jobs_before)


def test_spark_pseudonyms_are_the_in_process_ones_or_refused(governed: Workspace, tmp_path: Path) -> None:
    """A caller's `pseudonymize` cannot keep an identifier the purpose drops (email stays dropped); a
    boolean column gets the pseudonym of Python's "True"/"False"; a date column, whose in-process text
    Spark does not write alike, is refused before any job, recording nothing."""
    ws = governed
    s = ws.session(OWNER, "credit_scoring")
    got = s.read_spark("lake_customers", deidentify={"pseudonymize": ["email"]})
    assert "email" not in got.frame.columns and got.deidentification is not None
    assert got.deidentification["dropped"] == ["full_name", "email"]
    schema = {
        "name": "flags",
        "subject_column": "customer_id",
        "jurisdiction": "EU",
        "retention": "P30D",
        "purposes": {"fraud_detection": "gdpr.legitimate_interests"},
        "fields": [
            {"name": "customer_id", "type": "string", "category": "user.unique_id", "nullable": False},
            {"name": "vip", "type": "boolean", "category": "user.behavior"},
            {"name": "joined", "type": "date", "category": "user.behavior"},
        ],
    }
    ids = [cid for cid, *_ in people_frame().itertuples(index=False)]
    rows = pa.table(
        {
            "customer_id": ids,
            "vip": [i % 2 == 0 for i in range(len(ids))],
            "joined": pa.array([pd.Timestamp("2024-01-31").date()] * len(ids), pa.date32()),
        }
    )
    location = write_parquet(tmp_path, rows, "flags.parquet")
    admin = ws.session(OWNER, "administration")
    admin.register_external(load_schema(schema, ws.taxonomy), source_of(tmp_path, location))
    admin.enrol("flags", ids)
    fraud = ws.session(OWNER, "fraud_detection")
    read = fraud.read_spark("flags", ["customer_id", "vip"], deidentify={"pseudonymize": ["vip"]})
    pseudonym = Anonymizer(ws.deid_keys).pseudonym
    assert sorted(r["vip"] for r in read.frame.collect()) == sorted(
        pseudonym("ID", str(i % 2 == 0)) for i in range(len(ids))
    )
    before = size(ws)
    with pytest.raises(InvalidInput, match="in process only"):
        fraud.read_spark("flags", deidentify={"pseudonymize": ["joined"]})
    assert size(ws) == before
