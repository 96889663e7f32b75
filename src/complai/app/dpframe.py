"""DP queries as DataFrame calls: `session.dp("adult").where("age > 30").group_by("sex")
.agg("count(*)", "avg(age)", epsilon=1.0)`.

A DPFrame holds only the query's text parts until `agg`, which composes them into one SQL statement of
the DP query language (dp.sql) and runs it as one `session.dp_query`: the authorisation, the budget,
the release and its ledger event are that operation's, nothing else is read or recorded here. The
result is the answer as a frame of noisy values, a "<statistic> ±95%" error bound after each, and the
release's public parameters (pandas `attrs`; Spark column metadata under "complai").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from complai.errors import InvalidInput

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from complai.dp.queries import Answer
    from complai.dp.sql import Query, QueryBuilder

Output = Literal["pandas", "polars", "spark"]
OUTPUTS: tuple[str, ...] = ("pandas", "polars", "spark")


class DPQuerying(Protocol):
    """What a DPFrame needs of a session: its DP query and its Spark session."""

    def dp_query(
        self,
        sql: str | QueryBuilder,
        epsilon: float,
        delta: float | None = ...,
        max_rows: int = ...,
        progress: Callable[[int, int], None] | None = ...,
        selection_delta: float | None = ...,
    ) -> Answer: ...

    def spark_session(self) -> SparkSession: ...


def _parsed(sql: str) -> Query:
    from complai.dp.sql import parse  # heavy: sqlglot

    return parse(sql)


class DPFrame:
    """A DP query on one dataset, built step by step; immutable (each step returns a new DPFrame)."""

    def __init__(self, session: DPQuerying, dataset: str, where: tuple[str, ...] = (), by: str | None = None) -> None:
        if not isinstance(dataset, str) or not dataset.isidentifier():
            raise InvalidInput("name the dataset by its name")
        self._session = session
        self.dataset = dataset
        self.conditions = where
        self.by = by

    def __repr__(self) -> str:
        return f"DPFrame({self.dataset!r}, where={self.conditions!r}, by={self.by!r})"

    def where(self, condition: str) -> DPFrame:
        """Keep the rows `condition` holds for (a SQL row predicate, ANDed with earlier ones)."""
        if not isinstance(condition, str) or not condition.strip():
            raise InvalidInput('give the condition as SQL text, e.g. "age > 30"')
        probe = _parsed(f"SELECT COUNT(*) FROM {self.dataset} WHERE ({condition})")
        if probe.dataset != self.dataset or probe.group_by is not None or len(probe.aggregates) != 1:
            raise InvalidInput(f"not a row condition: {condition[:80]!r}")
        return DPFrame(self._session, self.dataset, (*self.conditions, condition), self.by)

    def group_by(self, column: str) -> DPFrame:
        """One statistic per value of `column` (declared values, or DP partition selection: see dp.md)."""
        if not isinstance(column, str) or not column.isidentifier():
            raise InvalidInput("group by one column, named as in the schema")
        return DPFrame(self._session, self.dataset, self.conditions, column)

    def sql(self, *statistics: str) -> str:
        """The one statement `agg(*statistics)` runs (checked: exactly these statistics, this dataset,
        these conditions and this key, nothing else)."""
        if not statistics:
            raise InvalidInput('give at least one statistic, e.g. "count(*)" or "avg(age)"')
        for stat in statistics:
            if not isinstance(stat, str) or not stat.strip():
                raise InvalidInput('give each statistic as SQL text, e.g. "avg(age)"')
            probe = _parsed(f"SELECT {stat} FROM {self.dataset}")
            if probe.dataset != self.dataset or probe.condition is not None or len(probe.aggregates) != 1:
                raise InvalidInput(f"not one statistic: {stat[:80]!r}")
        select = ([self.by] if self.by else []) + list(statistics)
        text = f"SELECT {', '.join(select)} FROM {self.dataset}"
        if self.conditions:
            text += " WHERE " + " AND ".join(f"({c})" for c in self.conditions)
        if self.by:
            text += f" GROUP BY {self.by}"
        query = _parsed(text)
        if query.dataset != self.dataset or query.group_by != self.by or len(query.aggregates) != len(statistics):
            raise InvalidInput("the statistics and conditions do not compose into one query; check their SQL")
        return text

    def agg(
        self,
        *statistics: str,
        epsilon: float,
        delta: float | None = None,
        max_rows: int = 1,
        selection_delta: float | None = None,
        output: Output = "pandas",
    ) -> Any:
        """Release `statistics` (count(*), count(c), sum(c), avg(c)/mean(c), variance(c), median(c),
        quantile(c, q)) with differential privacy, as one DP query: a frame with a noisy column and a
        "<statistic> ±95%" column per statistic, one row per group (a "group" index in pandas, a "group"
        column in polars and Spark) or a single row. `output="spark"` builds a small Spark DataFrame on
        the driver from the answer alone; `"polars"` needs polars installed."""
        if output not in OUTPUTS:
            raise InvalidInput(f"output is one of {', '.join(OUTPUTS)}")
        if output == "polars":
            try:
                pl = importlib.import_module("polars")  # heavy: polars (optional), only for polars output
            except ImportError:
                raise InvalidInput("output='polars' needs polars installed (pip install polars)") from None
        text = self.sql(*statistics)
        kw: dict[str, Any] = {"delta": delta, "max_rows": max_rows}
        if selection_delta is not None:
            kw["selection_delta"] = selection_delta
        answer = self._session.dp_query(text, epsilon, **kw)
        if output == "spark":
            from complai.dp.spark import answer_frame  # heavy: pyspark

            return answer_frame(self._session.spark_session(), answer, error_bounds=True)
        frame = answer.to_pandas(error_bounds=True)
        if output == "polars":
            return pl.from_pandas(frame.reset_index() if frame.index.name == "group" else frame)
        return frame
