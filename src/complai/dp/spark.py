"""DP queries compiled to Apache Spark: the WHERE clause, the bound on rows per subject and the exact
aggregates of a plan (`dp.queries.Needs`) run as one Spark job over a DataFrame, giving the same
`Exact` as `Plan.exact` gives in process on the same rows; the noise stays on the driver
(`Plan.release_exact`). Only per-key aggregates come back to the driver, never rows.

Both engines follow one order: WHERE -> at most `max_rows` rows per subject (chosen at random; rows
with undeclared keys count) -> rows with a declared (or, under partition selection, any non-null) key
-> per column, values present (not null, not NaN) -> dates and datetimes as days since 1970-01-01 ->
clamped to the declared bounds -> on the plan's fixed-point grid (`rint(v * grid)`: half to even, as
numpy's round; Spark's `round` rounds half up and is never used) -> integer sums (longs: a grid value
is at most 2^52 / ROW_CAPACITY, so no sum of ROW_CAPACITY of them overflows).

Nothing here depends on pyspark at import time: each pyspark import is local (pyspark is heavy and
optional).
"""

from __future__ import annotations

import functools
import math
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from complai.dp.queries import Answer, Exact, Plan
from complai.dp.sql import Condition, Junction
from complai.errors import ComplaiError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

_INT64 = (-(2**63), 2**63 - 1)
_DAY_US = 86_400_000_000


def _present(col: Column, ftype: str) -> Column:
    """The value is there: not null and, for a float field, not NaN (pandas' notna; Spark's NaN is a value
    that compares above every number and equals itself)."""
    from pyspark.sql import functions as F  # heavy: pyspark

    there = col.isNotNull()
    return there & ~F.isnan(col) if ftype == "float" else there


def _micros(col: Column, ftype: str) -> Column:
    """A date or datetime column as microseconds since 1970-01-01 UTC (a long; a date at midnight)."""
    from pyspark.sql import functions as F  # heavy: pyspark

    if ftype == "date":
        return F.unix_date(col).cast("long") * F.lit(_DAY_US)
    return F.unix_micros(col)


def _stamp_cmp(col: Column, op: str, ns: int) -> Column:
    """`col op t` for a column of whole microseconds and an instant `t` in nanoseconds, without
    multiplying the column (no overflow): a comparison with a sub-microsecond instant rounds the
    instant the way that keeps the comparison's truth."""
    from pyspark.sql import functions as F  # heavy: pyspark

    down, exact = ns // 1000, ns % 1000 == 0
    up = down if exact else down + 1
    if op == "=":
        return col == F.lit(down) if exact else F.lit(False)
    if op == "!=":
        return col != F.lit(down) if exact else F.lit(True)
    if op == ">":
        return col > F.lit(down)
    if op == ">=":
        return col >= F.lit(up)
    if op == "<":
        return col < F.lit(up)
    return col <= F.lit(down)  # "<="


def _int_cmp(col: Column, op: str, value: int) -> Column | None:
    """An integer field against an integer literal outside the 64-bit range: the answer is known for
    every present value (pandas compares such literals exactly; Spark cannot hold them). None when the
    literal is in range."""
    from pyspark.sql import functions as F  # heavy: pyspark

    if _INT64[0] <= value <= _INT64[1]:
        return None
    above = value > 0  # the literal lies above every value
    truth = {"=": False, "!=": True, ">": not above, ">=": not above, "<": above, "<=": above}[op]
    return F.lit(truth)


def _literal(value: Any, ftype: str) -> Any:
    """A literal as Spark can hold it: a float field compares with an out-of-range integer as numpy
    does, after converting it to a float."""
    if ftype == "float" and isinstance(value, int) and not isinstance(value, bool):
        if not _INT64[0] <= value <= _INT64[1]:
            try:
                return float(value)
            except OverflowError:
                return math.inf if value > 0 else -math.inf
    return value


def _compare(col: Column, op: str, value: Any, ftype: str) -> Column:
    if ftype in ("date", "datetime"):
        return _stamp_cmp(_micros(col, ftype), op, pd.Timestamp(value).value)
    if ftype == "integer" and isinstance(value, int) and not isinstance(value, bool):
        folded = _int_cmp(col, op, value)
        if folded is not None:
            return folded
    v = _literal(value, ftype)
    result: Column = {
        "=": lambda: col == v, "!=": lambda: col != v, ">": lambda: col > v,
        ">=": lambda: col >= v, "<": lambda: col < v, "<=": lambda: col <= v,
    }[op]()  # fmt: skip
    return result


def _leaf(node: Condition, types: Mapping[str, str]) -> Column:
    from pyspark.sql import functions as F  # heavy: pyspark

    ftype = types[node.column]
    col = F.col(node.column)
    if node.op == "null":
        return col.isNull() | F.isnan(col) if ftype == "float" else col.isNull()
    if node.op == "in":
        hits = [_compare(col, "=", v, ftype) for v in node.values]
        hit = functools.reduce(lambda a, b: a | b, hits)
    elif node.op == "between":
        lo, hi = node.values
        hit = _compare(col, ">=", lo, ftype) & _compare(col, "<=", hi, ftype)
    else:
        hit = _compare(col, node.op, node.values[0], ftype)
    return F.coalesce(_present(col, ftype) & hit, F.lit(False))


def predicate(node: Condition | Junction, types: Mapping[str, str]) -> Column:
    """The bound WHERE tree (`dp.sql.Query.bound`) as a Spark condition that holds exactly where the
    in-process row mask (`dp.sql._mask`) does: a null (or a float NaN) never satisfies a comparison, so
    each leaf is false there and NOT of it true, as numpy's `~mask` is; dates and datetimes compare as
    instants in UTC; IN is an OR of equalities and BETWEEN inclusive. The result is never null. `types`
    maps each column to its field type in the dataset's schema."""
    if isinstance(node, Condition):
        return _leaf(node, types)
    parts = [predicate(p, types) for p in node.parts]
    if node.op == "not":
        return ~parts[0]
    if node.op == "and":
        return functools.reduce(lambda a, b: a & b, parts)
    return functools.reduce(lambda a, b: a | b, parts)


def bounded(df: DataFrame, subject: str, max_rows: int, seed: int) -> DataFrame:
    """At most `max_rows` rows per subject, chosen uniformly at random and independently per subject
    (a window over the subject ordered by `rand(seed)`): the contribution bound the sensitivities
    assume. `rand`'s values depend on the row's partition and position, but they are i.i.d. uniform,
    so each subject keeps a uniform subset of its rows, as `bound_contributions` does in process."""
    from pyspark.sql import Window  # heavy: pyspark
    from pyspark.sql import functions as F  # heavy: pyspark

    rank = "__complai_rank"
    order = Window.partitionBy(subject).orderBy(F.rand(seed))
    return df.withColumn(rank, F.row_number().over(order)).where(F.col(rank) <= max_rows).drop(rank)


_SPARK_TYPES = {
    "DateType": "date",
    "TimestampType": "datetime",
    "TimestampNTZType": "datetime",
    "FloatType": "float",
    "DoubleType": "float",
    "ByteType": "integer",
    "ShortType": "integer",
    "IntegerType": "integer",
    "LongType": "integer",
    "BooleanType": "boolean",
}


def field_types(df: DataFrame) -> dict[str, str]:
    """Each column's type as `predicate` needs it, from the frame's physical schema (what decides how a
    value compares: NaN for floats, instants for dates and datetimes, 64-bit integers)."""
    return {f.name: _SPARK_TYPES.get(type(f.dataType).__name__, "string") for f in df.schema.fields}


def _days(col: Column, kind: str) -> Column:
    """A date or datetime as days since 1970-01-01, a double computed as the in-process engine computes it
    from the vault's microsecond timestamps (dp.queries.as_days): float(microseconds) / 8.64e10."""
    from pyspark.sql import functions as F  # heavy: pyspark

    if kind == "date":
        return F.unix_date(col).cast("double")
    return F.unix_micros(col).cast("double") / F.lit(8.64e10)


def _value(col: Column, ftype: str, days: str) -> tuple[Column, Column]:
    """(present, value as a double): present is not null and not NaN; the value is only meaningful where
    present (Spark's least and greatest skip nulls, so a missing value must never reach a clamp)."""
    return _present(col, ftype), (_days(col, days) if days else col.cast("double"))


def _clamp(v: Column, lo: float, hi: float) -> Column:
    from pyspark.sql import functions as F  # heavy: pyspark

    return F.least(F.greatest(v, F.lit(float(lo))), F.lit(float(hi)))


def _on_grid(v: Column, grid: float) -> Column:
    """rint(v * grid) as a long (exact: |v * grid| <= 2^52 / ROW_CAPACITY; rint rounds half to even)."""
    from pyspark.sql import functions as F  # heavy: pyspark

    return F.rint(v * F.lit(float(grid))).cast("long")


def _key_text(col: Column, ftype: str) -> Column:
    """A group key as its text (str(int), "True"/"False", an ISO date, the string) under partition
    selection; null stays null (such rows are dropped)."""
    from pyspark.sql import functions as F  # heavy: pyspark

    if ftype == "boolean":
        return F.when(col, F.lit("True")).when(~col, F.lit("False"))
    if ftype == "date":
        return F.date_format(col, "yyyy-MM-dd")
    return col.cast("string")


def _declared(keys: list[Any], ftype: str) -> dict[Any, int]:
    """Each declared key a row's value can equal, with its index: a key matches a value of its own kind
    (text with text, a boolean with a boolean), as pandas' Index.get_indexer matches them."""
    out: dict[Any, int] = {}
    for i, key in enumerate(keys):
        if isinstance(key, bool):
            ok = ftype == "boolean"
        elif isinstance(key, str):
            ok = ftype == "string"
        else:
            ok = ftype in ("integer", "float") and isinstance(key, int | float)
        if ok and key not in out:
            out[key] = i
    return out


def exact(plan: Plan, df: DataFrame, seed: int | None = None) -> Exact:
    """The exact aggregates of `plan` over the rows of `df` (the rows read, before
    the plan's WHERE): one Spark job, whose result is a few numbers per key; the same `Exact` as
    `plan.exact` on the same rows (but for the random choice of rows of a subject over `max_rows`;
    `seed` fixes it, by default it is drawn fresh). Any failure becomes the generic DP query failure,
    which says nothing about the data."""
    try:
        return _exact(plan, df, seed)
    except ComplaiError:
        raise
    except Exception:
        raise ComplaiError("the DP query failed while computing its answer; nothing was spent") from None


def _exact(plan: Plan, df: DataFrame, seed: int | None) -> Exact:
    from pyspark.sql import functions as F  # heavy: pyspark

    needs = plan.needs
    types = field_types(df)
    if needs.where is not None:
        df = df.where(predicate(needs.where, types))
    if needs.subject_column is not None:
        df = bounded(df, needs.subject_column, needs.max_rows, secrets.randbits(63) if seed is None else seed)
    key = "__complai_key"
    declared: list[str] | None
    if needs.group_by is None:
        declared = [""]
        df = df.withColumn(key, F.lit(0))
    elif needs.keys is not None:
        declared = [str(k) for k in needs.keys]
        # the rows of declared keys (a hash set lookup), grouped by the key's value: its index comes after
        slots = _declared(needs.keys, types[needs.group_by])
        df = df.withColumn(key, F.col(needs.group_by))
        df = df.where(F.col(key).isin(list(slots)) if slots else F.lit(False))
    else:
        declared = None
        text = _key_text(F.col(needs.group_by), types[needs.group_by])
        df = df.withColumn(key, text).where(F.col(key).isNotNull())

    aggs: list[Column] = [F.count(F.lit(1)).alias("rows")]
    present_of: dict[str, str] = {}
    values: dict[str, tuple[Column, Column]] = {}

    def present(column: str) -> str:
        if column not in present_of:
            name = f"p{len(present_of)}"
            there, value = _value(F.col(column), types[column], needs.days.get(column, ""))
            present_of[column] = name
            values[column] = (there, value)
            aggs.append(F.count_if(there).alias(name))
        return present_of[column]

    for column in needs.counts:
        present(column)
    sums: dict[str, str] = {}
    squares: dict[str, str] = {}
    for i, m in enumerate(needs.moments):
        present(m.column)
        there, raw = values[m.column]
        v = _clamp(raw, m.lo, m.hi)
        sums[m.column] = f"s{i}"
        aggs.append(F.sum(F.when(there, _on_grid(v, m.grid))).alias(f"s{i}"))
        if m.square_grid is not None:
            squares[m.column] = f"q{i}"
            aggs.append(F.sum(F.when(there, _on_grid(v * v, m.square_grid))).alias(f"q{i}"))
    buckets: dict[str, tuple[str, str, np.ndarray]] = {}
    for i, (column, cands) in enumerate(needs.quantiles.items()):
        present(column)
        buckets[column] = (f"b{i}", f"e{i}", np.unique(np.asarray(cands, dtype=np.float64) + 0.0))
    if buckets:
        df = _bucketed(df, buckets, values, needs.quantile_bounds)
        sets = [[key]] + [[key, b, e] for b, e, _ in buckets.values()]
        cols = [key] + [c for b, e, _ in buckets.values() for c in (b, e)]
        grouped = df.groupingSets(sets, *cols).agg(*aggs, F.grouping_id().alias("gid"))
    else:
        grouped = df.groupBy(key).agg(*aggs)
    rows_out = grouped.collect() if declared is not None else list(grouped.toLocalIterator())
    # grouping_id sets a bit per column left out of the set: the (key) set leaves out every bucket column
    main = [r for r in rows_out if not buckets or r["gid"] == 2 ** (2 * len(buckets)) - 1]
    if declared is None:
        keys = sorted(r[key] for r in main)
        slot = {k: i for i, k in enumerate(keys)}
        index_of = {r[key]: slot[r[key]] for r in main}
    elif needs.keys is not None:
        keys = declared
        slots = _declared(needs.keys, types[str(needs.group_by)])
        index_of = {r[key]: slots[r[key]] for r in main}
    else:
        keys = declared
        index_of = {r[key]: 0 for r in main}
    n = len(keys)

    def column_of(name: str) -> Any:
        out = np.zeros(n, dtype=np.int64)
        for r in main:
            out[index_of[r[key]]] = r[name] or 0
        return out

    def totals(name: str) -> list[int]:
        out = [0] * n
        for r in main:
            out[index_of[r[key]]] = int(r[name] or 0)
        return out

    below: dict[str, Any] = {}
    equal: dict[str, Any] = {}
    for column, (b, e, unique) in buckets.items():
        grid_points = np.asarray(needs.quantiles[column], dtype=np.float64) + 0.0
        at = np.searchsorted(unique, grid_points)  # each candidate's place among the distinct ones
        u = len(unique)
        hist = np.zeros((n, u + 1), dtype=np.int64)  # values with #(u <= x) == j
        same = np.zeros((n, u + 1), dtype=np.int64)  # of those, values equal to unique[j - 1]
        for r in rows_out:
            if r[b] is None or int(r[b]) > u:  # the other grouping sets; values not present
                continue
            j, k = int(r[b]), index_of[r[key]]
            hist[k, j] += r["rows"]
            if r[e]:
                same[k, j] += r["rows"]
        lt = np.cumsum(hist, axis=1)  # lt[:, j]: #(x < unique[j]) = #{#(u <= x) <= j}
        below[column] = lt[:, at]
        equal[column] = same[:, at + 1]
    present_arrays = {c: column_of(name) for c, name in present_of.items()}
    return Exact(
        keys,
        column_of("rows"),
        present_arrays,
        {c: totals(name) for c, name in sums.items()},
        {c: totals(name) for c, name in squares.items()},
        below,
        equal,
    )


def _bucketed(
    df: DataFrame,
    buckets: Mapping[str, tuple[str, str, Any]],
    values: Mapping[str, tuple[Column, Column]],
    bounds: Mapping[str, tuple[float, float]],
) -> DataFrame:
    """Each quantile column's clamped value placed among the distinct candidates: b = #(candidates <= x)
    (Spark ML's Bucketizer: a binary search) and e = whether x is the candidate b; a missing value goes
    to the extra bucket past the last."""
    from pyspark.ml.feature import Bucketizer  # heavy: pyspark's ML library
    from pyspark.sql import functions as F  # heavy: pyspark

    for column, (b, e, unique) in buckets.items():
        lo, hi = bounds[column]
        x = f"x_{b}"
        # + 0.0 turns -0.0 into 0.0: the binary search orders -0.0 below 0.0, numpy holds them equal
        there, raw = values[column]
        df = df.withColumn(x, F.when(there, _clamp(raw, lo, hi) + F.lit(0.0)).otherwise(F.lit(math.nan)))
        splits = [-math.inf, *(float(v) for v in unique), math.inf]
        df = Bucketizer(splits=splits, inputCol=x, outputCol=b, handleInvalid="keep").transform(df)
        # #(candidates < x) = len - #(-candidates <= -x): e = whether x is a candidate
        neg = f"n_{b}"
        flipped = [-math.inf, *(-float(v) + 0.0 for v in unique[::-1]), math.inf]
        df = df.withColumn(neg, -F.col(x) + F.lit(0.0))
        df = Bucketizer(splits=flipped, inputCol=neg, outputCol=e, handleInvalid="keep").transform(df)
        hit = F.col(b) + F.col(e) == F.lit(float(len(unique) + 1))
        df = df.withColumn(b, F.col(b).cast("int")).withColumn(e, hit).drop(x, neg)
    return df


def answer_frame(spark: SparkSession, answer: Answer, error_bounds: bool = True) -> DataFrame:
    """A DP answer as a small Spark DataFrame: one row per group (a "group" column) or a single row, a
    column per statistic and, with `error_bounds`, a "<statistic> ±95%" column after each. The public
    parameters of the release (epsilon, delta, rho, mechanism, selection) are every column's metadata
    under "complai"; nothing else is in it (built on the driver from the answer alone)."""
    from pyspark.sql import functions as F  # heavy: pyspark

    frame = answer.to_pandas(error_bounds=error_bounds)
    grouped = frame.index.name == "group"
    table = frame.reset_index() if grouped else frame
    columns = [str(c) for c in table.columns]
    rows = [
        tuple(str(v) if c == "group" else float(v) for c, v in zip(columns, r, strict=True))
        for r in table.itertuples(index=False)
    ]
    ddl = ", ".join(f"`{c}` {'string' if c == 'group' else 'double'}" for c in columns)
    df = spark.createDataFrame(rows, ddl)
    meta = {"complai": answer.public()}
    return df.select(*[F.col(f"`{c}`").alias(c, metadata=meta) for c in columns])
