"""A SQL subset for DP queries, parsed with sqlglot:

    SELECT [group_col,] COUNT(*) | COUNT(c) | SUM(c) | AVG(c) | VARIANCE(c) | MEDIAN(c) | QUANTILE(c, q), ...
    FROM dataset [WHERE row predicates] [GROUP BY group_col]

Row predicates (comparisons with literals, IN, BETWEEN, IS [NOT] NULL, AND, OR, NOT) only look at one
row at a time, so filtering before the DP aggregation keeps its guarantee. Everything else (joins,
subqueries, DISTINCT, MIN/MAX, HAVING, ORDER BY, LIMIT, window functions) is refused with a message
that says what is not supported.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlglot
from sqlglot import exp

from complai.dp.queries import Aggregate
from complai.errors import InvalidInput

if TYPE_CHECKING:
    from complai.vault.schema import DatasetSchema

_AGG = {exp.Count: "count", exp.Sum: "sum", exp.Avg: "mean", exp.Variance: "variance", exp.VariancePop: "variance"}
MAX_SQL_CHARS = 100_000
MAX_CONDITIONS = 1_000  # row predicates per query
MAX_NESTING = 32  # levels of NOT / parenthesised AND-OR groups
_INTEGER = re.compile(r"^[0-9]+$")
_NUMERIC = ("integer", "float")
_ORDERED = ("integer", "float", "date", "datetime", "string", "text")
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": lambda s, v: s == v, "!=": lambda s, v: s != v, ">": lambda s, v: s > v,
    ">=": lambda s, v: s >= v, "<": lambda s, v: s < v, "<=": lambda s, v: s <= v,
}  # fmt: skip
_CMP = {exp.EQ: "=", exp.NEQ: "!=", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<="}


@dataclass(frozen=True)
class Condition:
    """One row predicate on one column: op in = != > >= < <= in between null; its literals."""

    op: str
    column: str
    values: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Junction:
    """and / or of parts, or not of one part."""

    op: str
    parts: tuple[Condition | Junction, ...]


@dataclass
class Query:
    """A parsed statement: its syntax only. `predicate(schema)` checks it against the dataset's schema
    (after the caller is authorised: nothing here has looked at the schema)."""

    dataset: str
    aggregates: list[Aggregate]
    group_by: str | None
    condition: Condition | Junction | None
    columns: set[str]

    def predicate(self, schema: DatasetSchema) -> Callable[[pd.DataFrame], np.ndarray] | None:
        """The WHERE clause as a row mask, its literals checked against the fields' types; evaluating it
        cannot fail on any data the vault returns for the schema."""
        bound = self.bound(schema)
        if bound is None:
            return None
        return lambda frame: _mask(bound, frame)

    def bound(self, schema: DatasetSchema) -> Condition | Junction | None:
        """The WHERE clause with its columns checked against the schema and its literals as values of the
        fields' types (numbers, booleans, strings, UTC timestamps for dates and datetimes), or None: the
        tree every engine evaluates (`predicate` in process, dp.spark.predicate on Spark)."""
        if self.condition is None:
            return None
        return _bind(self.condition, {f.name: f.type for f in schema.fields})


def _short(node: exp.Expr) -> str:
    try:
        text = node.sql()
    except RecursionError:
        text = type(node).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _column(node: exp.Expr) -> str:
    if not isinstance(node, exp.Column):
        raise InvalidInput(f"expected a column, got {_short(node)!r}")
    return node.name


def _number(text: str) -> int | float:
    try:
        value: int | float = int(text) if _INTEGER.match(text) else float(text)
    except ValueError:
        raise InvalidInput(f"{text[:40]!r} is not a number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"number {text[:40]} is out of range")
    return value


def _literal(node: exp.Expr | None) -> Any:
    if isinstance(node, exp.Literal):
        return node.this if node.is_string else _number(node.this)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        return -_number(node.this.this)
    if isinstance(node, exp.Boolean):
        return node.this
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.this.is_string:
        return node.this.this  # DATE '2020-01-01'
    shown = "nothing" if node is None else repr(_short(node))
    raise InvalidInput(f"only literals may be compared with columns, got {shown}")


def _condition(node: exp.Expr, used: set[str], count: list[int], depth: int = 0) -> Condition | Junction:
    """The WHERE clause as Conditions under Junctions; AND/OR chains are flattened without recursion."""
    if depth > MAX_NESTING:
        raise InvalidInput(f"conditions nest more than {MAX_NESTING} levels deep")
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And | exp.Or):
        kind = type(node)
        parts: list[Condition | Junction] = []
        stack: list[exp.Expr] = [node]
        while stack:
            n = stack.pop()
            while isinstance(n, exp.Paren) and isinstance(n.this, kind):
                n = n.this
            if isinstance(n, kind):
                stack.extend([n.right, n.left])
            else:
                parts.append(_condition(n, used, count, depth + 1))
        return Junction("and" if kind is exp.And else "or", tuple(parts))
    if isinstance(node, exp.Not):
        return Junction("not", (_condition(node.this, used, count, depth + 1),))
    count[0] += 1
    if count[0] > MAX_CONDITIONS:
        raise InvalidInput(f"a query may have at most {MAX_CONDITIONS} conditions")
    leaf: Condition
    if isinstance(node, exp.Binary) and type(node) in _CMP:
        leaf = Condition(_CMP[type(node)], _column(node.left), (_literal(node.right),))
    elif isinstance(node, exp.In):
        if node.args.get("query") or not node.expressions:
            raise InvalidInput("IN takes a list of literals")
        count[0] += len(node.expressions) - 1
        if count[0] > MAX_CONDITIONS:
            raise InvalidInput(f"a query may have at most {MAX_CONDITIONS} conditions")
        leaf = Condition("in", _column(node.this), tuple(_literal(v) for v in node.expressions))
    elif isinstance(node, exp.Between):
        leaf = Condition("between", _column(node.this), (_literal(node.args["low"]), _literal(node.args["high"])))
    elif isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
        leaf = Condition("null", _column(node.this))
    else:
        raise InvalidInput(f"unsupported condition {_short(node)!r}")
    used.add(leaf.column)
    return leaf


def _typed(value: Any, column: str, ftype: str) -> Any:
    """A literal as a value of the field's type, or InvalidInput (before any data is read)."""
    if ftype in _NUMERIC:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"{column} is numeric: compare it with a number, not {value!r}")
        return value
    if ftype == "boolean":
        if not isinstance(value, bool):
            raise InvalidInput(f"{column} is boolean: compare it with TRUE or FALSE")
        return value
    if ftype in ("date", "datetime"):
        try:
            if not isinstance(value, str):
                raise ValueError
            stamp = pd.Timestamp(value)
            if pd.isna(stamp):
                raise ValueError
        except (ValueError, TypeError, OverflowError):
            raise InvalidInput(
                f"{column} is a {ftype}: compare it with an ISO 8601 date such as '2020-01-31'"
            ) from None
        return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    if not isinstance(value, str):
        raise InvalidInput(f"{column} is a {ftype} field: compare it with a quoted string")
    return value


def _bind(node: Condition | Junction, types: Mapping[str, str]) -> Condition | Junction:
    if isinstance(node, Junction):
        return Junction(node.op, tuple(_bind(p, types) for p in node.parts))
    ftype = types.get(node.column)
    if ftype is None:
        raise InvalidInput(f"unknown column {node.column!r}")
    if node.op in (">", ">=", "<", "<=", "between") and ftype not in _ORDERED:
        raise InvalidInput(f"{node.column} is a {ftype} field: only =, !=, IN and IS NULL apply")
    return Condition(node.op, node.column, tuple(_typed(v, node.column, ftype) for v in node.values))


def _mask(node: Condition | Junction, frame: pd.DataFrame) -> np.ndarray:
    """Rows where the condition holds (a null never satisfies a comparison)."""
    if isinstance(node, Junction):
        masks = [_mask(p, frame) for p in node.parts]
        if node.op == "not":
            return ~masks[0]
        joined: np.ndarray = np.logical_and.reduce(masks) if node.op == "and" else np.logical_or.reduce(masks)
        return joined
    s = frame[node.column]
    if node.op == "null":
        nulls: np.ndarray = s.isna().to_numpy(dtype=bool)
        return nulls
    present: np.ndarray = s.notna().to_numpy(dtype=bool)
    if not present.any():
        return present
    if node.op == "in":
        hit = s.isin(list(node.values))
    elif node.op == "between":
        lo, hi = node.values
        hit = (s >= lo) & (s <= hi)
    else:
        hit = _OPS[node.op](s, node.values[0])
    holds: np.ndarray = pd.Series(hit).fillna(False).to_numpy(dtype=bool) & present
    return holds


def parse(sql: str) -> Query:
    """Parse the statement's syntax (no schema involved: the caller authorises, then checks it against
    the dataset's schema with Query.predicate)."""
    if not isinstance(sql, str) or len(sql) > MAX_SQL_CHARS:
        raise InvalidInput(f"give the query as SQL text of at most {MAX_SQL_CHARS} characters")
    try:
        query = _parse(sql)
    except RecursionError:
        raise InvalidInput("the query is nested too deeply") from None
    # the caller's own copy of what the cache keeps (its conditions are immutable)
    return replace(query, aggregates=list(query.aggregates), columns=set(query.columns))


@functools.lru_cache(maxsize=512)  # a statement asked again (a dashboard's) is not parsed again (~1 ms)
def _parse(sql: str) -> Query:
    try:
        statements = sqlglot.parse(sql)
    except sqlglot.errors.SqlglotError as exc:
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(exc).splitlines()[0] if str(exc) else "")
        raise InvalidInput(f"SQL does not parse: {first[:120]}") from None
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
            level = 0.5 if isinstance(node, exp.Median) else _literal(node.args.get("quantile"))
            if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
                raise InvalidInput("a quantile must be between 0 and 1")
            used.add(col)
            aggregates.append(Aggregate("quantile", col, float(level)))
            continue
        fn = next((name for cls, name in _AGG.items() if type(node) is cls), None)
        if fn is None:
            raise InvalidInput(
                f"unsupported expression {_short(node)!r} (COUNT, SUM, AVG, VARIANCE, MEDIAN, QUANTILE only)"
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
    condition = _condition(q.args["where"].this, used, [0]) if q.args.get("where") else None
    if group_by:
        used.add(group_by)
    return Query(tables[0].name, aggregates, group_by, condition, used)


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
