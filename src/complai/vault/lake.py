"""The Spark side of external datasets: open a source, check its physical schema against the declared one,
the governed frame (only the rows of subjects a purpose may see now, joined by keyed link) and the scan
for the rows of erased subjects. Each pyspark import is function-local: pyspark is heavy, and nothing
starts Spark before something needs it."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd
from sqlalchemy import select

from complai.errors import ComplaiError, IntegrityError, InvalidInput
from complai.store.engine import Store
from complai.store.tables import external_sources
from complai.vault.catalog import ExternalSource
from complai.vault.schema import DatasetSchema, parse_retention

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

LINK = "__complai_link"
BROADCAST_MAX = 2_000_000  # links in a broadcast join (32 bytes each: 64 MB)

_INTEGRAL = frozenset({"tinyint", "smallint", "int", "bigint"})
ALLOWED: dict[str, frozenset[str]] = {
    "integer": _INTEGRAL,
    "float": frozenset({"float", "double"}),
    "string": frozenset({"string"}),
    "category": frozenset({"string"}),
    "text": frozenset({"string"}),
    "boolean": frozenset({"boolean"}),
    "date": frozenset({"date"}),
    "datetime": frozenset({"timestamp", "timestamp_ntz"}),
}
_ALIASES = {"byte": "tinyint", "short": "smallint", "integer": "int", "long": "bigint"}


def _normal(physical: str) -> str:
    t = physical.strip().lower()
    return _ALIASES.get(t, t)


def check_physical(schema: DatasetSchema, physical: Mapping[str, str]) -> None:
    """Refuse (InvalidInput, every mismatch at once) a source whose physical types (Spark's simple type
    names) do not hold the declared fields exactly: a DP job must never fail or change a value on data
    (no string casts, no decimal rounding)."""
    types = {name: _normal(t) for name, t in physical.items()}
    problems: list[str] = []
    for f in schema.fields:
        got = types.get(f.name)
        if got is None:
            problems.append(f"{f.name}: not in the source")
            continue
        if f.name == schema.subject_column:
            if got not in _INTEGRAL | {"string"}:
                problems.append(f"{f.name}: the subject column is {got} (a string or an integral type is needed)")
            continue
        allowed = ALLOWED[f.type]
        if got not in allowed:
            why = " (decimals are refused: store the column as double)" if got.startswith("decimal") else ""
            problems.append(f"{f.name}: declared {f.type}, the source has {got}{why}")
    if problems:
        raise InvalidInput("the source does not match the schema: " + "; ".join(problems))


def registered_physical(store: Store, dataset: str) -> dict[str, str]:
    """The physical types the dataset's source was checked against at registration (empty if unknown)."""
    with store.read() as conn:
        text = conn.execute(
            select(external_sources.c.physical_json).where(external_sources.c.dataset == dataset)
        ).scalar_one_or_none()
    return dict(json.loads(text)) if text else {}


def check_unchanged(schema: DatasetSchema, physical: Mapping[str, str], registered: Mapping[str, str] | None) -> None:
    """Refuse (IntegrityError, one line naming the dataset and the first column that differs, types only,
    never a value) a source whose physical types have changed since registration: a declared column
    gone, or of another type than the one registered, or one the schema no longer admits (a source
    swapped or rewritten after it was checked)."""
    types = {name: _normal(t) for name, t in physical.items()}
    was = {name: _normal(t) for name, t in (registered or {}).items()}
    head = f"the source of dataset {schema.name} has changed since it was registered"
    for f in schema.fields:
        got = types.get(f.name)
        if got is None:
            raise IntegrityError(f"{head}: column {f.name} is no longer in it; nothing was read")
        if f.name in was and got != was[f.name]:
            raise IntegrityError(f"{head}: column {f.name} is {got}, registered as {was[f.name]}; nothing was read")
        allowed = _INTEGRAL | {"string"} if f.name == schema.subject_column else ALLOWED[f.type]
        if got not in allowed:
            raise IntegrityError(f"{head}: column {f.name} is {got}, declared {f.type}; nothing was read")


def verify_source(
    spark: SparkSession, source: ExternalSource, schema: DatasetSchema, registered: Mapping[str, str] | None
) -> None:
    """Read the source's physical schema now (metadata only, no rows, no job) and refuse it if it has
    changed since registration (`check_unchanged`)."""
    check_unchanged(schema, physical_schema(spark, source), registered)


def _checked_frame(
    spark: SparkSession, source: ExternalSource, schema: DatasetSchema, registered: Mapping[str, str] | None
) -> DataFrame:
    """The source frame, refused (IntegrityError) if its physical types are not those registered."""
    try:
        frame = source_frame(spark, source)
        physical = {f.name: f.dataType.simpleString() for f in frame.schema.fields}
    except Exception:  # AnalysisException and friends: a path or table that is not there, or not Parquet
        raise InvalidInput(f"cannot open the source of dataset {schema.name}") from None
    check_unchanged(schema, physical, registered)
    return frame


def source_frame(spark: SparkSession, source: ExternalSource) -> DataFrame:
    """The source's rows as a lazy DataFrame (nothing is read until a job runs)."""
    if source.kind == "parquet":
        return spark.read.parquet(source.location)
    return spark.table(source.location)


def physical_schema(spark: SparkSession, source: ExternalSource) -> dict[str, str]:
    """The source's columns and their Spark types, from its metadata (no rows are read)."""
    try:
        frame = source_frame(spark, source)
    except Exception:  # AnalysisException and friends: a path or table that is not there, or not Parquet
        # the exception's kind would tell a missing path from an existing file that is not Parquet
        raise InvalidInput(f"cannot open the source {source.location!r} as {source.kind}") from None
    return {f.name: f.dataType.simpleString() for f in frame.schema.fields}


def subject_ids(spark: SparkSession, source: ExternalSource, schema: DatasetSchema) -> Iterator[str]:
    """The source's distinct subject ids as text (as the link hashes them), streamed to the driver a
    partition at a time (`toLocalIterator`); nulls are skipped."""
    frame = source_frame(spark, source).select(schema.subject_column).distinct()
    for row in frame.toLocalIterator():
        if row[0] is not None:
            yield str(row[0])


def link_column(subject: Column, key: bytes) -> Column:
    """HMAC-SHA256(key, subject as UTF-8 text), computed by Spark itself: the same bytes as
    `hmac.new(key, id.encode(), sha256).digest()` on the driver."""
    from pyspark.sql import functions as F  # heavy: pyspark

    return F.hmac(F.lit(key), F.encode(subject.cast("string"), "UTF-8"))


def _allow(spark: SparkSession, links: Sequence[bytes]) -> DataFrame:
    """The links as a one-column frame (via Arrow from pandas)."""
    from pyspark.sql.types import BinaryType, StructField, StructType  # heavy: pyspark

    schema = StructType([StructField(LINK, BinaryType(), nullable=False)])
    if not links:
        return spark.createDataFrame([], schema)
    with warnings.catch_warnings():  # pyspark's notice that it was not tested with this pandas: not ours to print
        warnings.filterwarnings("ignore", message=r"PySpark does not yet fully support pandas", category=FutureWarning)
        return spark.createDataFrame(pd.DataFrame({LINK: [bytes(x) for x in links]}), schema)


def governed_frame(
    spark: SparkSession,
    source: ExternalSource,
    schema: DatasetSchema,
    columns: Sequence[str],
    links: Sequence[bytes],
    key: bytes,
    at: datetime,
    *,
    broadcast_max: int = BROADCAST_MAX,
    registered: Mapping[str, str] | None = None,
) -> DataFrame:
    """The rows of `columns` (and the subject column) whose subject's link is in `links`, and, with a
    time column, not older than the dataset's retention at `at`: a left-semi join on the link, broadcast
    up to `broadcast_max` links. Lazy: no job runs here. The source's physical types are read now and
    must still hold the schema (and equal `registered`, the types checked at registration, when given):
    IntegrityError otherwise. Any other failure while building the frame is one typed error that says
    nothing about the data."""
    names = [f.name for f in schema.fields]
    unknown = [c for c in columns if c not in names]
    if unknown:
        raise InvalidInput(f"unknown column(s) {unknown} in dataset {schema.name}")
    source_rows = _checked_frame(spark, source, schema, registered)
    try:
        return _governed(spark, source_rows, source, schema, columns, links, key, at, broadcast_max)
    except ComplaiError:
        raise
    except Exception as exc:
        raise ComplaiError(
            f"the governed frame of dataset {schema.name} could not be built ({type(exc).__name__}); nothing was read"
        ) from None


def _governed(
    spark: SparkSession,
    source_rows: DataFrame,
    source: ExternalSource,
    schema: DatasetSchema,
    columns: Sequence[str],
    links: Sequence[bytes],
    key: bytes,
    at: datetime,
    broadcast_max: int,
) -> DataFrame:
    from pyspark.sql import functions as F  # heavy: pyspark

    names = [f.name for f in schema.fields]
    subject = schema.subject_column
    wanted = [c for c in names if c in set(columns) or c == subject]
    frame = source_rows.select(*wanted)
    if source.time_column is not None:
        oldest = at - parse_retention(schema.retention, "retention")
        bound = oldest.date() if schema.field(source.time_column).type == "date" else oldest
        frame = frame.where(F.col(source.time_column) >= F.lit(bound))
    allow = _allow(spark, links)
    if len(links) <= broadcast_max:
        allow = F.broadcast(allow)
    keyed = frame.withColumn(LINK, link_column(F.col(subject), key))
    return keyed.join(allow, on=LINK, how="left_semi").drop(LINK)


def erasure_scan(
    spark: SparkSession,
    source: ExternalSource,
    schema: DatasetSchema,
    links: Sequence[bytes],
    key: bytes,
    registered: Mapping[str, str] | None = None,
) -> dict[bytes, int]:
    """Rows per link still in the source, for the links of erased subjects (those with none are absent).
    A source whose physical types have changed since registration is refused (IntegrityError) before
    any job: a subject column of another type would find no row and mark every request gone."""
    from pyspark.sql import functions as F  # heavy: pyspark

    if not links:
        return {}
    rows = _checked_frame(spark, source, schema, registered)
    allow = F.broadcast(_allow(spark, links))
    keyed = rows.select(link_column(F.col(schema.subject_column), key).alias(LINK))
    found = keyed.join(allow, on=LINK, how="left_semi").groupBy(LINK).count().collect()
    return {bytes(row[LINK]): int(row["count"]) for row in found}
