"""DP query benchmark: mean, count and a 10-group group-by over 10^6 and 10^7 rows, against plain
numpy / pandas on the same data and a straightforward OpenDP pipeline (clamp, resize, mean, Laplace),
in the same run; and the observed error against the stated 95 % bound over 1,000 repetitions.

    python benchmarks/dp_queries.py [--sizes 1e6,1e7] [--reps 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import opendp.prelude as dp
import pandas as pd
from rich.console import Console
from rich.table import Table

from complai.dp.queries import Aggregate, run

sys.path.insert(0, str(Path(__file__).parent))
from common import write_results

console = Console()
dp.enable_features("contrib")


def median_time(fn: Any, reps: int = 3) -> float:
    fn()  # warm
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1e6,1e7")
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/dp_queries.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(2026)
    rows = []
    for n in (int(float(x)) for x in args.sizes.split(",")):
        df = pd.DataFrame(
            {
                "hours": rng.uniform(1, 99, n),
                "age": rng.integers(17, 91, n),
                "g": pd.Categorical(rng.integers(0, 10, n)),
            }
        )
        keys = list(range(10))
        plain_mean = median_time(lambda df=df: df["hours"].mean())
        plain_count = median_time(lambda df=df: len(df))
        plain_group = median_time(lambda df=df: df.groupby("g", observed=True)["age"].agg(["count", "mean"]))
        dp_mean = median_time(lambda df=df: run(df, [Aggregate("mean", "hours")], {"hours": (1, 99)}, set(), 1.0))
        dp_count = median_time(lambda df=df: run(df, [Aggregate("count")], {}, set(), 1.0))
        dp_group = median_time(
            lambda df=df, keys=keys: run(
                df,
                [Aggregate("count"), Aggregate("mean", "age")],
                {"age": (17, 90)},
                {"age"},
                1.0,
                group_by="g",
                group_keys=keys,
            )
        )
        as_list = df["hours"].tolist()
        space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.symmetric_distance()
        pipeline = (
            space
            >> dp.t.then_clamp((1.0, 99.0))
            >> dp.t.then_resize(size=n, constant=50.0)
            >> dp.t.then_mean()
            >> dp.m.then_laplace(scale=98.0 / n / 0.5)
        )
        opendp_mean = median_time(lambda pipeline=pipeline, as_list=as_list: pipeline(as_list))
        row = {
            "rows": n,
            "plain_mean_ms": plain_mean * 1e3,
            "complai_mean_ms": dp_mean * 1e3,
            "opendp_mean_ms": opendp_mean * 1e3,
            "plain_count_ms": plain_count * 1e3,
            "complai_count_ms": dp_count * 1e3,
            "plain_groupby_ms": plain_group * 1e3,
            "complai_groupby_ms": dp_group * 1e3,
            "mean_ratio": dp_mean / plain_mean,
            "groupby_ratio": dp_group / plain_group,
            "opendp_mean_ratio": opendp_mean / plain_mean,
            "true_mean": float(df["hours"].mean()),
        }
        rows.append(row)
        console.print(
            f"  {n:,} rows: mean {dp_mean * 1e3:.1f} ms vs numpy {plain_mean * 1e3:.1f} ms "
            f"({row['mean_ratio']:.1f}x), OpenDP pipeline {opendp_mean * 1e3:.1f} ms "
            f"({row['opendp_mean_ratio']:.1f}x); group-by {dp_group * 1e3:.1f} ms vs pandas "
            f"{plain_group * 1e3:.1f} ms ({row['groupby_ratio']:.1f}x)"
        )
    # accuracy: observed error vs the stated 95 % bound
    df = pd.DataFrame({"hours": rng.uniform(1, 99, 100_000)})
    true = float(df["hours"].mean())
    within, errors, bounds = 0, [], []
    for _ in range(args.reps):
        a = run(df, [Aggregate("mean", "hours")], {"hours": (1, 99)}, set(), 0.1)
        err = abs(a.values["mean(hours)"] - true)
        errors.append(err)
        bounds.append(a.accuracy["mean(hours)"])
        within += err <= a.accuracy["mean(hours)"]
    acc = {
        "rows": 100_000,
        "epsilon": 0.1,
        "reps": args.reps,
        "share_within_bound": within / args.reps,
        "median_error": statistics.median(errors),
        "median_bound": statistics.median(bounds),
        "p95_error": float(np.quantile(errors, 0.95)),
    }
    console.print(
        f"  accuracy: {acc['share_within_bound']:.1%} of answers within the stated 95 % bound "
        f"(median error {acc['median_error']:.4f}, median bound {acc['median_bound']:.4f})"
    )
    t = Table(
        "rows",
        "numpy mean",
        "complai mean",
        "ratio",
        "OpenDP pipeline",
        "ratio",
        "pandas group-by",
        "complai group-by",
        "ratio",
    )
    for r in rows:
        t.add_row(
            f"{r['rows']:,}",
            f"{r['plain_mean_ms']:.1f} ms",
            f"{r['complai_mean_ms']:.1f} ms",
            f"{r['mean_ratio']:.1f}x",
            f"{r['opendp_mean_ms']:.1f} ms",
            f"{r['opendp_mean_ratio']:.1f}x",
            f"{r['plain_groupby_ms']:.1f} ms",
            f"{r['complai_groupby_ms']:.1f} ms",
            f"{r['groupby_ratio']:.1f}x",
        )
    console.print(t)
    write_results(args.out, {"speed": rows, "accuracy": acc})
    return 0


if __name__ == "__main__":
    sys.exit(main())
