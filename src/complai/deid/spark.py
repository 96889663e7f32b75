"""De-identification at scale on Spark: a text column de-identified where the rows are, and the
k-anonymity, l-diversity and t-closeness a table achieves, measured by Spark jobs.

`deidentify_column` runs the in-process text analyzer and operators (analyzer.py, operators.py) inside
`mapInPandas`: each Python worker builds its analyzer once (spaCy loads once per worker, as
`analyzer._presidio` is cached per process, and Spark reuses its workers) and gives, row for row, the
text `TextAnalyzer.analyze_batch` + `Anonymizer.anonymize` give in process. Tokens of one call share
the nonce the driver drew for it, whatever partition a row is in. The operator keys travel to the
executors in the task (they are in the plan's closure): give it the keys of the domain the output is
for (ad-hoc keys for what a caller holds), never the workspace's pseudonym key.

`anonymity` is `tabular.measure` as Spark aggregations: only per-class figures are reduced on the
cluster, and only the sensitive column's distinct values (assumed few) come back to the driver.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from complai.deid.analyzer import TextAnalyzer
from complai.deid.governed import dropped_identifiers
from complai.deid.operators import NONCE, OPERATORS, Anonymizer, Keys
from complai.deid.tabular import check_measured
from complai.errors import InvalidInput
from complai.vault.schema import DatasetSchema, DeidSpec

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column, DataFrame

FINDINGS = "__complai_findings"
"""The column `deidentify_column` adds: findings per entity type in the row's text (map<string,int>)."""


class _CallAnonymizer(Anonymizer):
    """The anonymizer of one call, built again on each worker: keyed as the driver's, and its tokens
    bound to the nonce the driver drew (None: deterministic tokens, as a governed read's)."""

    def __init__(self, keys: Keys, nonce: bytes | None) -> None:
        super().__init__(keys, nonced=False)
        self._nonce = nonce


@cache
def _analyzer(regex_only: bool, entities: tuple[str, ...] | None, threshold: float) -> TextAnalyzer:
    return TextAnalyzer(regex_only=regex_only, entities=entities, threshold=threshold)


@lru_cache(maxsize=8)  # a call's nonce is its own: keep the last few only
def _anonymizer(keys: Keys, nonce: bytes | None) -> Anonymizer:
    return _CallAnonymizer(keys, nonce)


def col(name: str) -> Column:
    """The column named `name` exactly: quoted, so a dot, a space or a backtick in a name is part of it."""
    from pyspark.sql import functions as F  # heavy: pyspark

    return F.col("`" + name.replace("`", "``") + "`")


def check_free(df: DataFrame, name: str) -> None:
    """InvalidInput if `df` has a column `name` would collide with: Spark resolves names regardless of
    case, so a `__COMPLAI_FINDINGS` would be replaced or dropped with the column complai adds."""
    if any(c.lower() == name.lower() for c in df.columns):
        raise InvalidInput(f"the frame already has a {name} column (in any case)")


def check_text_column(df: DataFrame, column: str) -> None:
    """InvalidInput unless `column` is a text (string) column of `df` that `deidentify_column` may take."""
    from pyspark.sql.types import StringType  # heavy: pyspark

    if column.lower() == FINDINGS.lower() or column not in df.columns:
        raise InvalidInput(f"unknown column {column!r}")
    check_free(df, FINDINGS)
    if not isinstance(df.schema[column].dataType, StringType):
        raise InvalidInput(f"column {column!r} is not text (a string column)")


def deidentify_column(
    df: DataFrame,
    column: str,
    keys: Keys,
    *,
    nonce: bytes | None,
    default: str = "replace",
    operators: dict[str, str] | None = None,
    regex_only: bool = False,
    entities: Sequence[str] | None = None,
    threshold: float = 0.5,
) -> DataFrame:
    """`df` with `column` de-identified (nulls stay null) and a `__complai_findings` column (findings
    per entity type); the same rows, in a lazy frame (nothing runs until it is used). Everything that
    can be refused (the column, its type, the operators, the entity types, the nonce) is refused here,
    before any job."""
    from pyspark.sql.types import IntegerType, MapType, StringType, StructField, StructType  # heavy: pyspark

    check_text_column(df, column)
    for op in [default, *(operators or {}).values()]:
        if op not in OPERATORS:
            raise InvalidInput(f"unknown operator {op!r} (operators: {', '.join(OPERATORS)})")
    if nonce is not None and len(nonce) != NONCE:
        raise InvalidInput(f"a call's nonce is {NONCE} bytes")
    wanted = tuple(entities) if entities else None
    TextAnalyzer(regex_only=regex_only, entities=wanted, threshold=threshold)  # refuses unknown entity types
    chosen = dict(operators or {})
    position = df.columns.index(column)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        analyzer = _analyzer(regex_only, wanted, threshold)
        anonymizer = _anonymizer(keys, nonce)
        for batch in batches:
            values = batch.iloc[:, position].tolist()
            texts = [v for v in values if isinstance(v, str)]
            found = iter(analyzer.analyze_batch(texts))
            out: list[str | None] = []
            counts: list[dict[str, int] | None] = []
            for v in values:
                if not isinstance(v, str):
                    out.append(None)
                    counts.append({})
                    continue
                findings = next(found)
                text, _ = anonymizer.anonymize(v, findings, chosen, default)
                out.append(text)
                per: dict[str, int] = {}
                for f in findings:
                    per[f.entity] = per.get(f.entity, 0) + 1
                counts.append(per)
            batch = batch.copy()
            batch[batch.columns[position]] = out
            batch[FINDINGS] = counts
            yield batch

    # pyspark's mapInPandas resolves each column by a name it parses (a dot, a backtick): it maps columns
    # named by position, which take their names back after
    names = df.columns
    plain = [f"_{i}" for i in range(len(names))]
    fields = [StructField(p, f.dataType, f.nullable, f.metadata) for p, f in zip(plain, df.schema.fields, strict=True)]
    schema = StructType([*fields, StructField(FINDINGS, MapType(StringType(), IntegerType()), False)])
    return df.toDF(*plain).mapInPandas(run, schema).toDF(*names, FINDINGS)


def anonymity(
    df: DataFrame, quasi: Sequence[str], sensitive: str | None = None, ordered: bool = False
) -> dict[str, Any]:
    """`tabular.measure` on a Spark frame: {"rows", "classes", "k"} and, with `sensitive`,
    {"l_distinct", "l_entropy", "t"} (6 decimals), the classes being the distinct `quasi` values (a null
    is a value of its own) and `ordered` measuring t along the sensitive values' order (nulls last). A
    number is taken as pandas takes it in process: a NaN is a missing value (null), -0.0 is 0.0."""
    from pyspark.sql import Window  # heavy: pyspark
    from pyspark.sql import functions as F  # heavy: pyspark
    from pyspark.sql.types import DoubleType, FloatType  # heavy: pyspark

    quasi = list(quasi)
    check_measured(df.columns, quasi, sensitive)

    def value(name: str) -> Column:
        # as pandas sees a number in process: NaN is a missing value, and -0.0 is 0.0
        if isinstance(df.schema[name].dataType, DoubleType | FloatType):
            return F.when(~F.isnan(col(name)), col(name).cast("double") + F.lit(0.0))
        return col(name)

    # one key per class: the quasi-identifiers' values as JSON (null fields left out: unambiguous)
    keyed = df.select(
        F.to_json(F.struct(*[value(c).alias(f"q{i}") for i, c in enumerate(quasi)])).alias("c"),
        *([value(sensitive).alias("s")] if sensitive else []),
    )
    if sensitive is None:
        sizes = keyed.groupBy("c").count()
        row = sizes.agg(F.sum("count").alias("rows"), F.count("*").alias("classes"), F.min("count").alias("k")).first()
        if row is None or not row["rows"]:
            raise InvalidInput("the table has no rows to measure")
        return {"rows": int(row["rows"]), "classes": int(row["classes"]), "k": int(row["k"])}
    # the sensitive values (few), in their order, nulls last: the table's distribution P
    levels = keyed.groupBy("s").count().orderBy(F.col("s").asc_nulls_last()).collect()
    if not levels:
        raise InvalidInput("the table has no rows to measure")
    spark = df.sparkSession
    n = sum(int(r["count"]) for r in levels)
    m = len(levels)
    dtype = keyed.schema["s"].dataType.simpleString()
    table = spark.createDataFrame(
        [(r["s"], i, int(r["count"]) / n) for i, r in enumerate(levels)], f"v {dtype}, i int, glob double"
    )
    cells = (
        keyed.join(F.broadcast(table), keyed["s"].eqNullSafe(table["v"]))
        .groupBy("c", "i", "glob")
        .count()
        .withColumn("n", F.sum("count").over(Window.partitionBy("c")))
        .withColumn("p", F.col("count") / F.col("n"))
    )
    per_class = cells.groupBy("c").agg(
        F.first("n").alias("n"),
        F.count("*").alias("l"),
        F.exp(-F.sum(F.col("p") * F.log(F.col("p")))).alias("h"),
        # 0.5 * sum over every value of |p - glob|: values absent from the class add glob each
        # (column names are case-insensitive in Spark: no "p" beside a "P")
        (0.5 * (1.0 + F.sum(F.abs(F.col("p") - F.col("glob")) - F.col("glob")))).alias("t"),
    )
    if ordered:
        if m > 1:
            grid = per_class.select("c").crossJoin(F.broadcast(table.select("i", "glob")))
            full = grid.join(cells.select("c", "i", "p"), ["c", "i"], "left").fillna(0.0, ["p"])
            cum = F.sum(F.col("p") - F.col("glob")).over(
                Window.partitionBy("c").orderBy("i").rowsBetween(Window.unboundedPreceding, Window.currentRow)
            )
            walks = (
                full.withColumn("cum", cum)
                .where(F.col("i") < m - 1)
                .groupBy("c")
                .agg((F.sum(F.abs("cum")) / (m - 1)).alias("t"))
            )
            per_class = per_class.drop("t").join(walks, "c")
        else:
            per_class = per_class.withColumn("t", F.lit(0.0))
    row = per_class.agg(
        F.count("*").alias("classes"),
        F.min("n").alias("k"),
        F.min("l").alias("l"),
        F.min("h").alias("h"),
        F.max("t").alias("t"),
    ).first()
    if row is None:
        raise InvalidInput("the table has no rows to measure")
    t = max(float(row["t"]), 0.0)
    return {
        "rows": n,
        "classes": int(row["classes"]),
        "k": int(row["k"]),
        "l_distinct": int(row["l"]),
        "l_entropy": round(float(row["h"]), 6),
        "t": round(t, 6),
    }


def pseudonym_column(col: Column, key: bytes, boolean: bool = False) -> Column:
    """`Anonymizer.pseudonym("ID", str(value))` computed by Spark: `<ID_` and the first 12 hex digits of
    HMAC-SHA256(key, "ID\\0" + value), then `>`; null stays null. Text and integers are Python's text of
    them as Spark casts them; a `boolean` column is "True" or "False", as Python writes it."""
    from pyspark.sql import functions as F  # heavy: pyspark

    text = F.when(col, F.lit("True")).when(~col, F.lit("False")) if boolean else col.cast("string")
    message = F.concat(F.lit(b"ID\x00"), F.encode(text, "UTF-8"))
    return F.concat(F.lit("<ID_"), F.substring(F.lower(F.hex(F.hmac(F.lit(key), message))), 1, 12), F.lit(">"))


def apply_spark(df: DataFrame, schema: DatasetSchema, spec: DeidSpec, keys: Keys) -> tuple[DataFrame, dict[str, Any]]:
    """`deid.governed.apply` on a Spark frame (a governed read of an external dataset), under the governed
    keys `keys` (deterministic tokens): the columns to pseudonymise as the in-process pseudonyms, direct
    identifiers dropped, text columns de-identified by `deidentify_column` (a missing text becomes "", as
    in process); returns the frame (lazy) and the same summary. A spec with `k` is refused before any job:
    k-anonymisation runs in process only; so is one pseudonymising a float, date or datetime column, whose
    in-process pseudonym is made from Python's text of the value, which Spark does not write alike (the
    same value would get another pseudonym: the guarantee that a value has one pseudonym everywhere)."""
    from pyspark.sql import functions as F  # heavy: pyspark

    if spec.k:
        raise InvalidInput("k-anonymity is applied in process only: read the dataset in process, or drop k")
    declared = {f.name: f.type for f in schema.fields}
    unlike = [c for c in spec.pseudonymize if c in df.columns and declared.get(c) in ("float", "date", "datetime")]
    if unlike:
        raise InvalidInput(
            f"column(s) {unlike} of dataset {schema.name} are pseudonymised for this read, and a float, date or "
            "datetime column is pseudonymised in process only (Spark writes such values otherwise): read the "
            "dataset in process, or leave the column out"
        )
    out = df
    done: dict[str, Any] = {}
    for name in spec.pseudonymize:
        if name in out.columns:
            out = out.withColumn(name, pseudonym_column(col(name), keys.pseudonym, declared.get(name) == "boolean"))
    if spec.pseudonymize:
        done["pseudonymized"] = [c for c in spec.pseudonymize if c in out.columns]
    if spec.drop_direct_identifiers:
        drop = dropped_identifiers(schema, spec, out.columns)
        out = out.drop(*drop)
        done["dropped"] = drop
    if spec.text:
        for name, op in spec.text.items():
            if name in out.columns:
                out = out.withColumn(name, F.coalesce(col(name).cast("string"), F.lit("")))
                out = deidentify_column(out, name, keys, nonce=None, default=op).drop(FINDINGS)
        done["text"] = dict(spec.text)
    return out, done
