"""A SQL subset for DP queries, parsed with sqlglot:

    SELECT [group_col,] COUNT(*) | COUNT(c) | SUM(c) | AVG(c) | VARIANCE(c) | MEDIAN(c) | QUANTILE(c, q), ...
    FROM dataset [WHERE row predicates] [GROUP BY group_col]

Row predicates (comparisons with literals, IN, BETWEEN, IS [NOT] NULL, AND, OR, NOT) only look at one
row at a time, so filtering before the DP aggregation keeps its guarantee. Everything else (joins,
subqueries, DISTINCT, MIN/MAX, HAVING, ORDER BY, LIMIT, window functions) is refused with a message
that says what is not supported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlglot
from sqlglot import exp

from complai.dp.queries import Aggregate
from complai.errors import InvalidInput

_AGG = {exp.Count: "count", exp.Sum: "sum", exp.Avg: "mean", exp.Variance: "variance", exp.VariancePop: "variance"}


@dataclass
class Query:
    dataset: str
    aggregates: list[Aggregate]
    group_by: str | None
    where: Callable[[pd.DataFrame], pd.Series] | None
    columns: set[str]


def _column(node: exp.Expression) -> str:
    if not isinstance(node, exp.Column):
        raise InvalidInput(f"expected a column, got {node.sql()!r}")
    return node.name


def _literal(node: exp.Expression) -> Any:
    if isinstance(node, exp.Literal):
        return node.this if node.is_string else float(node.this) if "." in node.this else int(node.this)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
        return -_literal(node.this)
    if isinstance(node, exp.Boolean):
        return node.this
    raise InvalidInput(f"only literals may be compared with columns, got {node.sql()!r}")


def _predicate(node: exp.Expression, used: set[str]) -> Callable[[pd.DataFrame], pd.Series]:
    if isinstance(node, exp.Paren):
        return _predicate(node.this, used)
    if isinstance(node, exp.And):
        a, b = _predicate(node.left, used), _predicate(node.right, used)
        return lambda df: a(df) & b(df)
    if isinstance(node, exp.Or):
        a, b = _predicate(node.left, used), _predicate(node.right, used)
        return lambda df: a(df) | b(df)
    if isinstance(node, exp.Not):
        a = _predicate(node.this, used)
        return lambda df: ~a(df)
    ops: dict[type, Callable[[pd.Series, Any], pd.Series]] = {
        exp.EQ: lambda s, v: s == v, exp.NEQ: lambda s, v: s != v, exp.GT: lambda s, v: s > v,
        exp.GTE: lambda s, v: s >= v, exp.LT: lambda s, v: s < v, exp.LTE: lambda s, v: s <= v,
    }  # fmt: skip
    for cls, fn in ops.items():
        if isinstance(node, cls):
            col, value = _column(node.left), _literal(node.right)
            used.add(col)
            return lambda df: fn(df[col], value).fillna(False).astype(bool)
    if isinstance(node, exp.In):
        col = _column(node.this)
        values = [_literal(v) for v in node.expressions]
        if not values or node.args.get("query"):
            raise InvalidInput("IN takes a list of literals")
        used.add(col)
        return lambda df: df[col].isin(values)
    if isinstance(node, exp.Between):
        col, lo, hi = _column(node.this), _literal(node.args["low"]), _literal(node.args["high"])
        used.add(col)
        return lambda df: ((df[col] >= lo) & (df[col] <= hi)).fillna(False).astype(bool)
    if isinstance(node, exp.Is):
        col = _column(node.this)
        used.add(col)
        return lambda df: df[col].isna()
    raise InvalidInput(f"unsupported condition {node.sql()!r}")


def parse(sql: str) -> Query:
    try:
        statements = sqlglot.parse(sql)
    except sqlglot.errors.ParseError as exc:
        raise InvalidInput(f"SQL does not parse: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Select):
        raise InvalidInput("give exactly one SELECT statement")
    q: exp.Select = statements[0]
    for key, what in (
        ("joins", "JOIN"),
        ("having", "HAVING"),
        ("order", "ORDER BY"),
        ("limit", "LIMIT"),
        ("distinct", "DISTINCT"),
        ("with", "WITH"),
        ("windows", "WINDOW"),
    ):
        if q.args.get(key):
            raise InvalidInput(f"{what} is not supported in DP queries")
    if q.find(exp.Subquery) or len(list(q.find_all(exp.Select))) > 1:
        raise InvalidInput("subqueries are not supported in DP queries")
    tables = list(q.find_all(exp.Table))
    if len(tables) != 1:
        raise InvalidInput("query exactly one dataset (FROM dataset)")
    group_by = None
    if q.args.get("group"):
        keys = q.args["group"].expressions
        if len(keys) != 1:
            raise InvalidInput("GROUP BY takes one column")
        group_by = _column(keys[0])
    used: set[str] = set()
    aggregates = []
    for item in q.expressions:
        node = item.this if isinstance(item, exp.Alias) else item
        if isinstance(node, exp.Column):
            if node.name != group_by:
                raise InvalidInput(f"column {node.name!r} in SELECT must be aggregated (or be the GROUP BY key)")
            continue
        if isinstance(node, exp.Median | exp.ApproxQuantile | exp.Quantile):
            col = _column(node.this)
            level = 0.5 if isinstance(node, exp.Median) else _literal(node.args["quantile"])
            if not isinstance(level, int | float) or not 0 < level < 1:
                raise InvalidInput("a quantile must be between 0 and 1")
            used.add(col)
            aggregates.append(Aggregate("quantile", col, float(level)))
            continue
        fn = next((name for cls, name in _AGG.items() if type(node) is cls), None)
        if fn is None:
            raise InvalidInput(
                f"unsupported expression {node.sql()!r} (COUNT, SUM, AVG, VARIANCE, MEDIAN, QUANTILE only)"
            )
        arg = node.this
        if isinstance(arg, exp.Star):
            if fn != "count":
                raise InvalidInput(f"{fn.upper()}(*) is not meaningful")
            aggregates.append(Aggregate("count"))
        else:
            col = _column(arg)
            used.add(col)
            aggregates.append(Aggregate(fn, col))
    if not aggregates:
        raise InvalidInput("select at least one aggregate")
    where = _predicate(q.args["where"].this, used) if q.args.get("where") else None
    if group_by:
        used.add(group_by)
    return Query(tables[0].name, aggregates, group_by, where, used)


class QueryBuilder:
    """The Python face of the same query language:

    q = QueryBuilder("adult").count().mean("age").where("age > 30").group_by("sex")
    session.dp_query(q, epsilon=0.5)
    """

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset
        self._select: list[str] = []
        self._where: list[str] = []
        self._group: str | None = None

    def count(self, column: str | None = None) -> QueryBuilder:
        self._select.append(f"COUNT({column or '*'})")
        return self

    def sum(self, column: str) -> QueryBuilder:
        self._select.append(f"SUM({column})")
        return self

    def mean(self, column: str) -> QueryBuilder:
        self._select.append(f"AVG({column})")
        return self

    def variance(self, column: str) -> QueryBuilder:
        self._select.append(f"VARIANCE({column})")
        return self

    def quantile(self, column: str, q: float) -> QueryBuilder:
        self._select.append(f"QUANTILE({column}, {float(q)!r})")
        return self

    def median(self, column: str) -> QueryBuilder:
        return self.quantile(column, 0.5)

    def where(self, condition: str) -> QueryBuilder:
        """A SQL row predicate, e.g. "age > 30 AND sex = 'Male'" (ANDed with earlier ones)."""
        self._where.append(f"({condition})")
        return self

    def group_by(self, column: str) -> QueryBuilder:
        self._group = column
        return self

    def sql(self) -> str:
        if not self._select:
            raise InvalidInput("add at least one statistic")
        select = ([self._group] if self._group else []) + self._select
        out = f"SELECT {', '.join(select)} FROM {self.dataset}"
        if self._where:
            out += " WHERE " + " AND ".join(self._where)
        if self._group:
            out += f" GROUP BY {self._group}"
        return out

    def __str__(self) -> str:
        return self.sql()
