"""DP queries on Spark: count, sum and mean over a 100-key GROUP BY with at most `--max-rows` rows per
subject, against the same aggregation without DP on the same Spark session and the same Parquet data,
in the same run; the in-process engine as an anchor where it can hold the rows, PipelineDP when it is
installed. Each time is the median of `--reps` runs (3) after a warm-up (none with `--no-warmup`).

    python benchmarks/spark_dp.py [--sizes 1e6,1e7] [--subjects 1e6] [--keys 100] [--max-rows 10]
        [--master local[2]] [--in-process-max 1e6] [--pipelinedp-max 1e6] [--enrolled 1e5]
        [--compare-split] [--reps 3] [--no-warmup] [--no-check] [--data build/spark_bench]

Columns: (a) Spark groupBy(key).agg(count, sum, avg).collect(), no DP; (b) dp.spark.exact +
Plan.release_exact (WHERE, the contribution bound, the exact per-key aggregates, the noise); (b-) the
same aggregation after the contribution bound alone, without the DP engine's columns (how much of (b)
is the bounding window); (f) (a) after a shuffle of the rows by subject alone (`repartition`), no
bound: the least any per-subject bound costs on data not already grouped by subject; (b-split, with
--compare-split) (b-) with the window over subjects above the bound only; (c) a whole session.dp_query
on an external dataset (authorisation, the governed frame's HMAC semi-join on `--enrolled` enrolled
subjects, budget, ledger); (d) PipelineDP on Spark (if importable); (e) Plan.release in process on the
rows read into pandas.

Unbiasedness: at the smallest size the Exact's count is the sum over subjects of min(rows, max_rows)
(computed independently with pandas), with max_rows over every subject's rows its grid sums equal
pandas' own, and the mean error of 20 releases of the total lies within six of its standard deviations.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from complai.config import SparkSettings
from complai.dp import queries
from complai.dp import spark as dp_spark
from complai.dp.sql import parse
from complai.spark import SparkRuntime
from complai.taxonomy.loader import load_taxonomy
from complai.vault.schema import DatasetSchema, load_schema

sys.path.insert(0, str(Path(__file__).parent))
from common import timed, write_results

console = Console()
ROW_GROUP = 1_000_000
SESSION_PARTS: dict[str, float] = {}


def schema_of(keys: int, name: str = "bench") -> dict[str, Any]:
    return {
        "name": name,
        "subject_column": "subject",
        "jurisdiction": "EU",
        "retention": "P10Y",
        "purposes": {"analytics": "gdpr.legitimate_interests"},
        "fields": [
            {
                "name": "subject",
                "type": "string",
                "category": "user.unique_id",
                "identifier": "direct",
                "nullable": False,
            },
            {"name": "key", "type": "category", "category": "user.behavior", "values": key_names(keys)},
            {"name": "x", "type": "float", "category": "user.behavior", "min": 0, "max": 1000},
        ],
    }


def key_names(keys: int) -> list[str]:
    return [f"k{i:02d}" for i in range(keys)]


def generate(path: Path, rows: int, subjects: int, keys: int, seed: int = 2026) -> Path:
    """Parquet in row groups of 10^6: a subject per row drawn with density ~ 1/sqrt(index) (a few subjects
    hold many rows, most hold few), a key among `keys`, x uniform on [0, 1000]. Reused when present."""
    out = path / f"rows{rows}_subjects{subjects}_keys{keys}.parquet"
    if out.exists():
        return out
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = np.array(key_names(keys))
    tmp = out.with_suffix(".partial")
    schema = pa.schema([("subject", pa.string()), ("key", pa.string()), ("x", pa.float64())])
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            who = np.minimum((subjects * rng.random(n) ** 2).astype(np.int64), subjects - 1)
            table = pa.table(
                {
                    "subject": pa.array(np.char.add("c", np.char.zfill(who.astype(str), 7))),
                    "key": pa.array(names[rng.integers(0, keys, n)]),
                    "x": pa.array(rng.uniform(0, 1000, n)),
                },
                schema=schema,
            )
            writer.write_table(table, row_group_size=ROW_GROUP)
    tmp.rename(out)
    return out


def median_time(fn: Callable[[], Any], reps: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[[], Any]], reps: int = 3, warmup: bool = True) -> dict[str, float]:
    """Median of `reps` runs of each after one warm-up each (unless not `warmup`), the order alternated
    run by run."""
    for fn in fns.values() if warmup else ():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(reps):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


SQL = "SELECT key, COUNT(*), SUM(x), AVG(x) FROM {} GROUP BY key"


def the_plan(schema: DatasetSchema, max_rows: int, name: str = "bench") -> queries.Plan:
    return queries.plan(
        parse(SQL.format(name)), schema, epsilon=1.0, delta=1e-6, max_rows=max_rows, purpose="analytics"
    )


def split_bounded(df: Any, subject: str, max_rows: int, seed: int) -> Any:
    """The same bound as dp.spark.bounded, the window run only over subjects with more than `max_rows`
    rows (found by a partial aggregation, broadcast), the others passed through untouched."""
    from pyspark.sql import functions as F

    heavy = df.groupBy(subject).count().where(F.col("count") > max_rows).select(subject)
    light = df.join(F.broadcast(heavy), subject, "left_anti")
    over = dp_spark.bounded(df.join(F.broadcast(heavy), subject, "left_semi"), subject, max_rows, seed)
    return light.unionByName(over)


def check_unbiased(spark: Any, path: Path, schema: DatasetSchema, max_rows: int) -> dict[str, Any]:
    """The Exact against pandas on the same rows (independent code), and the releases around it."""
    frame = pq.read_table(path).to_pandas()
    per_subject = frame["subject"].value_counts()
    plan = the_plan(schema, max_rows)
    df = spark.read.parquet(str(path))
    exact = dp_spark.exact(plan, df)
    kept = int(np.minimum(per_subject.to_numpy(), max_rows).sum())
    assert int(exact.rows.sum()) == kept, "rows kept by the bound"
    most = int(per_subject.max())
    whole = dp_spark.exact(the_plan(schema, most), df)  # nobody over the bound: every row counts
    grid = plan.needs.moments[0].grid
    mine = frame.assign(g=np.round(np.clip(frame["x"].to_numpy(), 0, 1000) * grid)).groupby("key")["g"].sum()
    assert whole.sums["x"] == [int(mine[k]) for k in whole.keys], "grid sums"
    assert whole.rows.tolist() == [int(v) for v in frame.groupby("key").size()[whole.keys]], "rows per key"
    errors = []
    total = sum(exact.sums["x"]) / grid
    for _ in range(20):
        answer = plan.release_exact(exact)
        errors.append(sum(answer.values["sum(x)"].values()) - total)
    # the per-key 95 % bounds are 1.96 noise standard deviations; the mean of 20 releases of the sum over
    # the keys has a standard deviation of sqrt(sum of variances / 20): six of them leave < 1e-8 to chance
    sd = math.sqrt(sum((a / 1.959964) ** 2 for a in answer.accuracy["sum(x)"].values()) / 20)
    mean_error = statistics.fmean(errors)
    assert abs(mean_error) <= 6 * sd, "mean error of 20 releases"
    return {
        "rows_kept": kept,
        "rows": len(frame),
        "largest_subject_rows": most,
        "mean_error_sum_20_releases": mean_error,
        "sd_of_mean_error": sd,
    }


def session_query(spark: Any, path: Path, keys: int, max_rows: int, enrolled: int, ids: list[str]) -> Callable[[], Any]:
    """A workspace with the Parquet registered as an external dataset and `enrolled` subjects enrolled
    (untimed); returns the timed call: one session.dp_query."""
    from complai.access.identity import OWNER
    from complai.app.workspace import Workspace
    from complai.crypto.sealing import generate_keypair

    root = Path(tempfile.mkdtemp(prefix="complai-spark-bench-"))
    ws = Workspace.init(root / "ws")
    ws.use_spark(spark)
    public = generate_keypair(root / "owner.key")
    key = "complai-x25519-public:" + base64.b64encode(public).decode()
    admin = ws.session(OWNER, "administration")
    admin.register_external(
        load_schema(schema_of(keys, "lake"), ws.taxonomy),
        {"kind": "parquet", "location": str(path), "owner": "lake", "owner_key": key},
    )
    t0 = time.perf_counter()
    for start in range(0, enrolled, 50_000):
        admin.enrol("lake", ids[start : start + 50_000])
    console.print(f"  enrolled {enrolled} subjects in {time.perf_counter() - t0:.1f} s (untimed setup)")
    admin.set_budget("lake", 1e9, 1e-3)
    analyst = ws.session(OWNER, "analytics")
    query = lambda: analyst.dp_query(SQL.format("lake"), epsilon=1.0, delta=1e-6, max_rows=max_rows)  # noqa: E731
    query()  # warm-up
    # where the time goes: the eligible links from the store, the governed frame (the links shipped to
    # Spark), a job that reads it (HMAC per row, the semi-join), the DP engine over it
    now = ws.clock.now()
    plan = the_plan(ws.catalog.get("lake").schema, max_rows, "lake")
    parts = {}
    t0 = time.perf_counter()
    ws.vault.eligible_links("lake", "analytics", now)
    parts["eligible_links_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    frame = ws.vault.lake_frame("lake", "analytics", list(plan.reads), spark, at=now)
    parts["lake_frame_s"] = time.perf_counter() - t0
    parts["governed_count_s"], _ = timed(frame.count)
    parts["engine_on_governed_s"], _ = timed(lambda: plan.release_exact(dp_spark.exact(plan, frame)))
    console.print(f"  session parts: {parts}")
    SESSION_PARTS.update(parts)
    return query


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e6,1e7")
    ap.add_argument("--subjects", default="1e6")
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--max-rows", type=int, default=10)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--driver-memory", default="8g")
    ap.add_argument("--in-process-max", default="1e6")
    ap.add_argument("--pipelinedp-max", default="1e6")
    ap.add_argument("--enrolled", default="1e5", help="subjects enrolled for (c); 0 skips (c)")
    ap.add_argument(
        "--compare-split",
        action="store_true",
        help="also time (b-split): subjects with at most max-rows rows passed through, the window over the others",
    )
    ap.add_argument("--reps", type=int, default=3, help="timed runs of each (the median is kept)")
    ap.add_argument("--no-warmup", action="store_true", help="no untimed first run (for the largest sizes)")
    ap.add_argument("--no-check", action="store_true", help="no unbiasedness check (it reads the rows into pandas)")
    ap.add_argument("--data", type=Path, default=Path("build/spark_bench"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/spark_dp.json"))
    args = ap.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    subjects, k = int(float(args.subjects)), args.max_rows
    runtime = SparkRuntime(
        SparkSettings(
            master=args.master,
            conf={"spark.driver.memory": args.driver_memory, "spark.sql.shuffle.partitions": "8"},
        )
    )
    spark = runtime.session()
    from pyspark.sql import functions as F

    schema = load_schema(schema_of(args.keys), load_taxonomy())
    plan = the_plan(schema, k)
    try:
        import pipeline_dp  # noqa: F401

        have_pipelinedp = True
    except ImportError:
        have_pipelinedp = False
    rows_out: list[dict[str, Any]] = []
    checks: dict[str, Any] = {}
    for n in sizes:
        path = generate(args.data, n, subjects, args.keys)
        console.print(f"[bold]{n:,} rows[/] ({path.stat().st_size / 1e6:.0f} MB Parquet)")
        df = spark.read.parquet(str(path))

        def plain(df: Any = df) -> Any:
            return df.groupBy("key").agg(F.count(F.lit(1)), F.sum("x"), F.avg("x")).collect()

        def engine(df: Any = df) -> Any:
            return plan.release_exact(dp_spark.exact(plan, df))

        def bounded_only(df: Any = df) -> Any:
            b = dp_spark.bounded(df, "subject", k, seed=1)
            return b.groupBy("key").agg(F.count(F.lit(1)), F.sum("x"), F.avg("x")).collect()

        def shuffled(df: Any = df) -> Any:
            return df.repartition("subject").groupBy("key").agg(F.count(F.lit(1)), F.sum("x"), F.avg("x")).collect()

        fns = {"plain": plain, "engine": engine, "bounded": bounded_only, "shuffle": shuffled}
        if args.compare_split:

            def split_only(df: Any = df) -> Any:
                b = split_bounded(df, "subject", k, seed=1)
                return b.groupBy("key").agg(F.count(F.lit(1)), F.sum("x"), F.avg("x")).collect()

            fns["split"] = split_only
        timings = interleaved(fns, args.reps, not args.no_warmup)
        row: dict[str, Any] = {"rows": n, "plain_s": timings["plain"], "dp_engine_s": timings["engine"]}
        row["bounded_plain_s"] = timings["bounded"]
        row["shuffle_plain_s"] = timings["shuffle"]
        row["reps"] = args.reps
        if "split" in timings:
            row["bounded_split_s"] = timings["split"]
        console.print(f"  {row}")
        if n == min(sizes) and not args.no_check:
            checks = check_unbiased(spark, path, schema, k)
            console.print(f"  unbiased: {checks}")
        enrolled = int(float(args.enrolled))
        if enrolled and n == min(sizes):
            ids = [f"c{i:07d}" for i in range(min(enrolled, subjects))]
            query = session_query(spark, path, args.keys, k, len(ids), ids)
            row["session_s"] = median_time(query)
            row["session_enrolled"] = len(ids)
            row["session_parts"] = dict(SESSION_PARTS)
        if n <= int(float(args.in_process_max)):
            t0 = time.perf_counter()
            frame = pq.read_table(path).to_pandas()
            row["in_process_read_s"] = time.perf_counter() - t0
            row["in_process_s"] = median_time(lambda frame=frame: plan.release(frame))
            del frame
        if have_pipelinedp and n <= int(float(args.pipelinedp_max)):
            row["pipelinedp_s"] = median_time(lambda df=df: pipelinedp_run(spark, df, args.keys, k))
        row["engine_ratio"] = row["dp_engine_s"] / row["plain_s"]
        if "session_s" in row:
            row["session_ratio"] = row["session_s"] / row["plain_s"]
        rows_out.append(row)
        console.print(f"  {row}")
    runtime.stop()

    table = Table(title=f"DP count/sum/mean over {args.keys} keys, max {k} rows per subject, {args.master}")
    columns = (
        "rows", "no DP (a)", "shuffle + agg (f)", "f/a", "bound + agg (b-)", "complai (b)", "b/a",
        "session (c)", "c/a", "PipelineDP (d)",
    )  # fmt: skip
    for col in (*columns, "in process (e)"):
        table.add_column(col, justify="right")
    for r in rows_out:
        table.add_row(
            f"{r['rows']:,}",
            f"{r['plain_s']:.2f} s",
            f"{r['shuffle_plain_s']:.2f} s",
            f"{r['shuffle_plain_s'] / r['plain_s']:.2f}x",
            f"{r['bounded_plain_s']:.2f} s",
            f"{r['dp_engine_s']:.2f} s",
            f"{r['engine_ratio']:.2f}x",
            f"{r['session_s']:.2f} s" if "session_s" in r else "-",
            f"{r['session_ratio']:.2f}x" if "session_ratio" in r else "-",
            f"{r['pipelinedp_s']:.2f} s" if "pipelinedp_s" in r else "-",
            f"{r['in_process_s']:.2f} s" if "in_process_s" in r else "-",
        )
    console.print(table)
    if not have_pipelinedp:
        console.print("PipelineDP is not installed: (d) not measured")
    write_results(
        args.out,
        {
            "date": dt.date.today().isoformat(),
            "master": args.master,
            "subjects": subjects,
            "keys": args.keys,
            "max_rows": k,
            "rows": rows_out,
            "unbiased": checks,
            "pipelinedp": have_pipelinedp,
        },
    )
    return 0


def pipelinedp_run(spark: Any, df: Any, keys: int, max_rows: int) -> Any:
    """PipelineDP's count, sum and mean per key on its Spark RDD backend, with the same bounds."""
    import pipeline_dp

    backend = pipeline_dp.SparkRDDBackend(spark.sparkContext)
    accountant = pipeline_dp.NaiveBudgetAccountant(total_epsilon=1.0, total_delta=1e-6)
    engine = pipeline_dp.DPEngine(accountant, backend)
    params = pipeline_dp.AggregateParams(
        noise_kind=pipeline_dp.NoiseKind.GAUSSIAN,
        metrics=[pipeline_dp.Metrics.COUNT, pipeline_dp.Metrics.SUM, pipeline_dp.Metrics.MEAN],
        max_contributions=max_rows,
        min_value=0.0,
        max_value=1000.0,
    )
    extractors = pipeline_dp.DataExtractors(
        privacy_id_extractor=lambda r: r[0], partition_extractor=lambda r: r[1], value_extractor=lambda r: r[2]
    )
    result = engine.aggregate(df.rdd.map(tuple), params, extractors, public_partitions=key_names(keys))
    accountant.compute_budgets()
    return result.collect()


if __name__ == "__main__":
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    sys.exit(main())
