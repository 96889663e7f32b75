"""De-identification on Spark at its edges: thresholds the ledger cannot record exactly are refused before
any job, column names that Spark would parse (a backtick, a dot) are taken as they are, a source column
that collides with complai's own (in any case) is refused, `--force` replaces only Spark's part files,
and an output whose recording fails is taken back out with the replaced one put back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from complai.access.identity import OWNER
from complai.app.ops.lakedeid import MAX_COUNT
from complai.app.workspace import Workspace
from complai.deid.spark import anonymity
from complai.deid.tabular import measure
from complai.errors import InvalidInput
from complai.files import PARTIAL, check_dataset_dir, staged_dataset_dir
from tests.spark.conftest import write_parquet
from tests.spark.test_deid_ops import Ran, governed  # noqa: F401 (a fixture)
from tests.spark.test_external import jobs, stage_names

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def size(ws: Workspace) -> int:
    return ws.ledger.head().size


def schema_reads_only(spark: SparkSession, before: list[int]) -> bool:
    """No job since `before` but Parquet footers read for a schema."""
    return all(set(stage_names(spark, j)) <= {"parquet"} for j in jobs(spark) if j not in before)


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if PARTIAL in p.name]


@pytest.mark.parametrize(
    "asked",
    [
        {"k": MAX_COUNT + 1},
        {"k": True},
        {"k": 2.5},
        {"k": "2"},
        {"l": float("nan")},
        {"l": 0},
        {"t": float("nan")},
        {"t": "0.5"},
        {"t": True},
    ],
)
def test_a_threshold_out_of_its_domain_is_refused_before_any_job(
    spark_ws: Workspace, spark: SparkSession, tmp_path: Path, asked: dict[str, Any]
) -> None:
    source = write_parquet(tmp_path, pa.table({"zip": ["1", "1"], "s": ["a", "b"]}))
    before, ran = size(spark_ws), jobs(spark)
    with pytest.raises(InvalidInput, match=r"whole number, at least 1|number between 0 and 1"):
        spark_ws.session(OWNER, "analytics").check_anonymity(source, ["zip"], "s", **asked)
    assert (size(spark_ws), jobs(spark)) == (before, ran)


def test_the_cli_refuses_a_k_the_ledger_cannot_hold_with_exit_2(spark_ws: Workspace, tmp_path: Path) -> None:
    source = write_parquet(tmp_path, pa.table({"zip": ["1", "1"]}))
    before = size(spark_ws)
    w = ["--workspace", str(spark_ws.services.path)]
    r = Ran(*w, "deid", "check", source, "--quasi", "zip", "--k", str(MAX_COUNT + 1))
    assert r.returncode == 2 and "whole number" in r.stderr and size(spark_ws) == before


def test_column_names_with_a_dot_or_a_backtick_are_taken_as_they_are(spark_ws: Workspace, tmp_path: Path) -> None:
    table = pa.table({"a.b": ["mail ana@example.org", "none"], "x`y": ["1", "1"], "id": [1, 2]})
    source = write_parquet(tmp_path, table)
    s = spark_ws.session(OWNER, "analytics")
    done = s.deidentify_text_column(source, "a.b", tmp_path / "out", regex_only=True)
    got = pq.read_table(tmp_path / "out")
    assert got.column_names == ["a.b", "x`y", "id"] and done.findings == {"EMAIL_ADDRESS": 1}
    assert sorted(got.column("a.b").to_pylist()) == ["mail <EMAIL_ADDRESS>", "none"]
    assert got.column("x`y").to_pylist() == ["1", "1"] and sorted(got.column("id").to_pylist()) == [1, 2]
    figures = s.check_anonymity(source, ["x`y"], "a.b", l=2).figures
    assert (figures["k"], figures["l_distinct"]) == (2, 2)


@pytest.mark.parametrize("name", ["__COMPLAI_FINDINGS", "__Complai_Length"])
def test_a_column_that_collides_with_complais_own_in_any_case_is_refused(
    spark_ws: Workspace, spark: SparkSession, tmp_path: Path, name: str
) -> None:
    source = write_parquet(tmp_path, pa.table({"note": ["a", "b"], name: ["kept", "kept"]}))
    before, ran = size(spark_ws), jobs(spark)
    with pytest.raises(InvalidInput, match="already has"):
        spark_ws.session(OWNER, "analytics").deidentify_text_column(source, "note", tmp_path / "out")
    assert size(spark_ws) == before and not (tmp_path / "out").exists() and schema_reads_only(spark, ran)


def test_force_replaces_a_folder_of_part_files_only(tmp_path: Path) -> None:
    spark_like = tmp_path / "spark"
    spark_like.mkdir()
    for name in ("part-00000-0b5e-c000.snappy.parquet", ".part-00000-0b5e-c000.snappy.parquet.crc", "_SUCCESS"):
        (spark_like / name).write_text("x")
    assert check_dataset_dir(spark_like, force=True) == spark_like
    for name in ("part-of-my-thesis.docx", "_committed_by_me.txt"):
        other = tmp_path / name.split(".")[0]
        other.mkdir()
        (other / name).write_text("mine")
        with pytest.raises(InvalidInput, match="more than data files"):
            check_dataset_dir(other, force=True)


def test_an_output_that_cannot_be_recorded_is_taken_back_and_the_replaced_one_restored(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with staged_dataset_dir(out) as target:
        target.mkdir()
        (target / "part-00000").write_text("before")

    def refuse(placed: Path = out) -> None:
        assert (placed / "part-00000").read_text() == "after"  # called with the new folder in place
        raise RuntimeError("the ledger refused")

    with pytest.raises(RuntimeError), staged_dataset_dir(out, force=True, then=refuse) as target:
        target.mkdir()
        (target / "part-00000").write_text("after")
    assert (out / "part-00000").read_text() == "before" and leftovers(tmp_path) == []
    with (
        pytest.raises(RuntimeError),
        staged_dataset_dir(tmp_path / "new", then=lambda: refuse(tmp_path / "new")) as target,
    ):
        target.mkdir()
        (target / "part-00000").write_text("after")
    assert not (tmp_path / "new").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("ordered", [False, True])
def test_a_nan_or_a_negative_zero_is_measured_on_spark_as_in_process(
    spark: SparkSession, tmp_path: Path, ordered: bool
) -> None:
    nan = float("nan")
    # classes {0.0, -0.0} and {NaN, null}; sensitive values 1.0, NaN and null (NaN and null: one missing value)
    table = pa.table({"q": [0.0, -0.0, 0.0, nan, None, nan], "s": [1.0, nan, None, None, nan, 1.0]})
    path = write_parquet(tmp_path, table)
    got = anonymity(spark.read.parquet(path), ["q"], "s", ordered=ordered)
    assert got == measure(pq.read_table(path).to_pandas(), ["q"], "s", ordered=ordered)
    assert (got["classes"], got["k"], got["l_distinct"]) == (2, 3, 2)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"pseudonymize": ["__complai_link"]}, "unknown column"),
        ({"text": {"__complai_link": "redact"}}, "unknown column"),
        ({"text": {"email": "keep"}}, "invalid deidentify: text.email"),
        ({"nope": 1}, "invalid deidentify: nope"),
    ],
)
def test_a_governed_spark_read_refuses_a_callers_spec_it_cannot_apply_before_any_job(
    governed: Workspace,  # noqa: F811 (the fixture imported above)
    spark: SparkSession,
    extra: dict[str, Any],
    message: str,
) -> None:
    before, ran = size(governed), jobs(spark)
    with pytest.raises(InvalidInput, match=message):
        governed.session(OWNER, "credit_scoring").read_spark("lake_customers", deidentify=extra)
    assert (size(governed), jobs(spark)) == (before, ran)
