"""DP queries over a table: count, sum, mean, variance, histograms and their group-by versions.

Each subject contributes at most `max_rows` rows (more are dropped at random before anything is
computed), values are clamped to the bounds declared in the dataset schema, group keys must be
declared values: nothing about the data's range or categories is read from the data. The aggregates
are computed exactly (values on a fixed-point grid fine enough that float64 accumulation is exact; see
_exact_sums), which is also why OpenDP's float-sum truncation above 2^20 rows cannot bite. OpenDP
supplies the noise (its Laplace, discrete Laplace and Gaussian measurements) and the privacy maps,
applied to aggregates whose sensitivity we derive here:

- count (or a histogram / group-by count over disjoint groups): L1 = L2 = max_rows;
- sum of values clamped to [L, U]: L1 = max_rows * max(|L|, |U|) (adding or removing one subject);
- mean = noisy sum / noisy count; variance from noisy sums of x and x^2 and a noisy count;
- quantiles: OpenDP's private quantile (exponential mechanism over candidates spread over the declared
  bounds); their error bound is stated in rows of rank.

Dates and datetimes with declared bounds enter these statistics as days since 1970-01-01 (bounds and
noise in days); their labels say so, and `Answer.as_dict` adds the ISO 8601 date of each noisy mean and
quantile (post-processing of the noisy value).

With a delta the queries use the Gaussian mechanism (zCDP), otherwise Laplace (pure epsilon-DP). Every
answer carries the epsilon (and delta) it cost, its zCDP rho and a 95 % error bound.

Release discipline: what leaves this module (the Answer) holds only numbers released by an accounted
mechanism (`Noisy`, and post-processing of them) and numbers computed from public parameters alone
(`Public`: epsilon, delta, bounds, declared keys, rows per subject, mechanism, scale). Nothing is
computed from the data's size or content except through a mechanism: the fixed-point grid of the exact
sums depends on the declared bounds and a public row capacity, never on the row count; an empty group
still goes through its mechanism. `plan` checks every parameter and builds every measurement before
any data is touched, so nothing can fail, and no error can describe the data, once rows are read.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any, Literal, Protocol

import numpy as np
import opendp.prelude as dp
import pandas as pd

from complai.dp.accounting import rho_for, rho_of_laplace
from complai.errors import ComplaiError, InvalidInput
from complai.vault.schema import BOUND_LIMIT, EPOCH, DatasetSchema  # declared bounds: finite and within +-2^53

dp.enable_features("contrib")
ALPHA = 0.05
MIN_EPSILON = 1e-6  # below this every answer is noise, and noise scales stop being finite numbers
MIN_DELTA = 1e-100
MAX_ROWS_PER_SUBJECT = 10_000
# Public row capacity the exact-sum grid is sized for (partial sums stay below 2^52 up to this many rows)
ROW_CAPACITY = 2**31


DAYS = " (days since 1970-01-01)"  # label suffix of a statistic over a date column
DAYS_SQUARED = " (days²)"  # the variance of a date column


def iso_date(days: float) -> str:
    """A number of days since 1970-01-01 as an ISO 8601 date (rounded to the nearest day)."""
    return (EPOCH + timedelta(days=round(days))).isoformat()


def as_days(series: pd.Series) -> np.ndarray:
    """Dates or datetimes as days since 1970-01-01 (NaN where missing); times of day as fractions."""
    stamps = pd.to_datetime(series, utc=True)
    days = (stamps - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(days=1)
    out: np.ndarray = days.to_numpy(dtype="float64", na_value=np.nan)
    return out


class Noisy(float):
    """A number released by an accounted DP mechanism, or computed from such numbers and public
    parameters only (post-processing)."""

    __slots__ = ()


class Public(float):
    """A number computed from public parameters only (epsilon, delta, bounds, rows per subject, scale)."""

    __slots__ = ()


@dataclass(frozen=True)
class Aggregate:
    """One requested statistic: fn in count|sum|mean|variance|quantile, column (None for count(*)),
    q for a quantile (0.5 = median)."""

    fn: str
    column: str | None = None
    q: float | None = None

    @property
    def label(self) -> str:
        if self.fn == "quantile":
            return f"median({self.column})" if self.q == 0.5 else f"quantile({self.column}, {self.q:g})"
        return f"{self.fn}({self.column or '*'})"


# The Answer's fields, each either noisy (released by a mechanism) or a public parameter. A new field
# must be added to one of these sets, and the release discipline test fails until it is.
NOISY_FIELDS = frozenset({"values", "accuracy"})
PUBLIC_FIELDS = frozenset({"epsilon", "delta", "rho", "mechanism"})


def _leaves(tree: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(tree, dict):
        return [leaf for k, v in tree.items() for leaf in _leaves(v, (*path, str(k)))]
    return [(path, tree)]


@dataclass(frozen=True)
class Answer:
    """A DP release: the only thing a DP query hands out. `values` are Noisy; `accuracy` (95 % absolute
    error bounds, same shape) are Public (from the noise scale) or Noisy (from noisy parts); the group
    keys are the declared ones; everything else is a public parameter. Construction refuses anything else."""

    values: dict[str, Any]  # label -> value, or label -> {group: value}
    accuracy: dict[str, Any]
    epsilon: float
    delta: float
    rho: float
    mechanism: str

    def __post_init__(self) -> None:
        names = {f.name for f in fields(self)}
        if names != NOISY_FIELDS | PUBLIC_FIELDS:
            raise AssertionError("every field of a DP release is either noisy or public")
        vals, accs = _leaves(self.values), _leaves(self.accuracy)
        if [p for p, _ in vals] != [p for p, _ in accs]:
            raise AssertionError("a release's accuracy has the shape of its values")
        for _, v in vals:
            if type(v) is not Noisy or not math.isfinite(v):
                raise AssertionError("a released value is the finite output of a mechanism")
        for _, a in accs:
            if type(a) not in (Noisy, Public) or not math.isfinite(a):
                raise AssertionError("a released error bound is noisy or public")

    def public(self) -> dict[str, Any]:
        """The public parameters of the release (what the ledger may record)."""
        return {name: getattr(self, name) for name in sorted(PUBLIC_FIELDS)}

    def as_dict(self) -> dict[str, Any]:
        """The fields; with `dates`, the ISO 8601 date of each noisy mean and quantile of a date column."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        dates = {
            label: ({g: iso_date(v) for g, v in value.items()} if isinstance(value, dict) else iso_date(value))
            for label, value in self.values.items()
            if label.endswith(DAYS) and not label.startswith("sum(")
        }
        if dates:
            out["dates"] = dates
        return out

    def to_pandas(self, error_bounds: bool = False) -> pd.DataFrame:
        """The noisy values as a DataFrame: one column per statistic, one row per group (index "group")
        or a single row; with `error_bounds`, a "<statistic> ±95%" column after each. The public
        parameters (epsilon, delta, rho, mechanism) are in `.attrs`; nothing else is in it."""
        grouped = any(isinstance(v, dict) for v in self.values.values())
        columns: dict[str, list[float]] = {}
        keys: list[str] = []
        for label, value in self.values.items():
            parts = [(label, value)] + ([(f"{label} ±95%", self.accuracy[label])] if error_bounds else [])
            for name, part in parts:
                if grouped:
                    keys = list(part)
                    columns[name] = [float(part[k]) for k in keys]
                else:
                    columns[name] = [float(part)]
        frame = pd.DataFrame(columns, index=pd.Index(keys, name="group") if grouped else None)
        frame.attrs.update(self.public())
        return frame

    def _repr_html_(self) -> str:
        """A notebook rendering: the noisy values with their 95 % error bounds, and the public parameters."""
        frame = self.to_pandas(error_bounds=True)
        caption = html.escape(
            f"DP answer: epsilon {self.epsilon:g}, delta {self.delta:g}, rho {self.rho:.4g}, {self.mechanism}; "
            "noisy values with 95 % error bounds"
        )
        body = frame.to_html(float_format=lambda x: f"{x:.6g}", escape=True)
        return f"<div class='complai-answer'><p><b>{caption}</b></p>{body}</div>"


def bound_contributions(
    frame: pd.DataFrame, subject_column: str, max_rows: int, seed: int | None = None
) -> pd.DataFrame:
    """Keep at most `max_rows` rows per subject, chosen at random."""
    if max_rows < 1:
        raise InvalidInput("max rows per subject must be at least 1")
    counts = frame[subject_column].value_counts()
    if counts.empty or counts.max() <= max_rows:
        return frame
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(frame))
    shuffled = frame.iloc[order]
    keep = shuffled.groupby(subject_column, sort=False).cumcount() < max_rows
    return shuffled[keep.to_numpy()].sort_index()


class _Noise:
    """One mechanism per released number, budgeted by splitting epsilon (or rho) evenly. Built from
    public parameters only; refuses any that would not give finite noise scales."""

    def __init__(self, releases: int, epsilon: float, delta: float | None) -> None:
        if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
            raise InvalidInput("epsilon must be a positive number")
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise InvalidInput("epsilon must be a positive number")
        if epsilon < MIN_EPSILON:
            raise InvalidInput(f"epsilon must be a positive number of at least {MIN_EPSILON:g}")
        if delta is not None and (
            isinstance(delta, bool) or not isinstance(delta, int | float) or not MIN_DELTA <= delta < 1
        ):
            raise InvalidInput(f"delta must be in (0, 1) and at least {MIN_DELTA:g}")
        self.gaussian = delta is not None
        self.eps_each = epsilon / releases
        self.rho_each = rho_for(epsilon, delta) / releases if delta is not None else rho_of_laplace(self.eps_each)
        if not (math.isfinite(self.rho_each) and self.rho_each > 0):
            raise InvalidInput("epsilon and delta give no usable privacy cost; choose a larger epsilon")
        self.releases = releases
        self._made: dict[tuple[float, bool], tuple[Any, type, Public]] = {}

    def prepare(self, sensitivity: float, integer: bool) -> None:
        """Build (and check against OpenDP's privacy map) the measurement for this sensitivity."""
        key = (float(sensitivity), integer)
        if key in self._made:
            return
        if self.gaussian:
            make, budget = dp.m.make_gaussian, self.rho_each
            scale = sensitivity / math.sqrt(2 * budget)
        else:
            make, budget = dp.m.make_laplace, self.eps_each
            scale = sensitivity / budget
        if not math.isfinite(scale):
            raise InvalidInput("the noise this query needs is too large (epsilon too small for the declared bounds)")
        want = key
        integer = integer and scale < 2.0**52  # beyond that, the continuous mechanism (integers are floats too)
        if self.gaussian:
            acc = dp.gaussian_scale_to_accuracy(scale, ALPHA)
        elif integer:
            acc = dp.discrete_laplacian_scale_to_accuracy(scale, ALPHA)
        else:
            acc = dp.laplacian_scale_to_accuracy(scale, ALPHA)
        if not math.isfinite(acc):
            raise InvalidInput("the noise this query needs is too large (epsilon too small for the declared bounds)")
        kind: type = int if integer else float
        domain = dp.atom_domain(T="i64") if integer else dp.atom_domain(T=float, nan=False)
        m = make(domain, dp.absolute_distance(T="i64" if integer else float), scale=scale)
        d_in = math.ceil(sensitivity) if integer else float(sensitivity)
        if m.map(d_in) > budget * (1 + 1e-9):  # type: ignore[no-untyped-call]  # opendp leaves Measurement.map unannotated
            raise AssertionError("noise calibration disagrees with OpenDP's privacy map")
        self._made[want] = (m, kind, Public(acc))

    def release(self, value: float, sensitivity: float, integer: bool) -> tuple[Noisy, Public]:
        """Noisy value and its 95 % error bound (from the scale: public)."""
        self.prepare(sensitivity, integer)
        m, kind, acc = self._made[(float(sensitivity), integer)]
        if kind is int:  # clamping is 1-Lipschitz (sensitivity unchanged) and keeps the value an i64
            value = int(min(max(value, -(2**62)), 2**62))
        return Noisy(m(kind(value))), acc


def _grid(magnitude: float, is_int: bool) -> float:
    """The fixed-point grid (values are multiplied by it and rounded) for exact sums of up to
    ROW_CAPACITY values of at most `magnitude`: every partial sum is an integer below 2^52. It depends on
    the declared bounds and the public capacity only, never on how many rows there are."""
    largest = 2.0**52 / ROW_CAPACITY
    if is_int and magnitude <= largest:
        return 1.0
    scale = 2.0 ** math.floor(math.log2(largest / max(magnitude, 2.0**-1000)))
    return scale if is_int else min(2.0**20, scale)


def _sum_sensitivity(magnitude: float, is_int: bool) -> float:
    """Per-value sensitivity of a sum on the grid: rounding moves a value by at most half a step."""
    scale = _grid(magnitude, is_int)
    return magnitude + (0.0 if is_int and scale == 1.0 else 0.5 / scale)


def _exact_sums(
    values: np.ndarray, codes: np.ndarray | None, n_groups: int, magnitude: float, is_int: bool
) -> list[float]:
    """Per-group sums computed exactly (see _grid): np.bincount accumulates chunks of at most
    ROW_CAPACITY grid values in float64 without rounding error; chunks add up as Python integers."""
    scale = _grid(magnitude, is_int)
    totals = [0] * n_groups
    for start in range(0, len(values), ROW_CAPACITY):
        # `values` is the caller's scratch copy: scaled and rounded in place
        part = values[start : start + ROW_CAPACITY]
        grid = part if is_int and scale == 1.0 else np.round(np.multiply(part, scale, out=part), out=part)
        if codes is None:
            sums = np.array([grid.sum()])
        else:
            sums = np.bincount(codes[start : start + ROW_CAPACITY], weights=grid, minlength=n_groups)
        totals = [t + int(x) for t, x in zip(totals, sums, strict=True)]
    return [t if scale == 1.0 else t / scale for t in totals]


def _releases(aggs: list[Aggregate]) -> int:
    return sum({"count": 1, "sum": 1, "mean": 2, "variance": 3, "quantile": 1}[a.fn] for a in aggs)


def _quantile_measurement(noise: _Noise, q: float, lo: float, hi: float, is_int: bool, k: int) -> tuple[Any, Public]:
    """OpenDP's private quantile (exponential mechanism over candidates spread over the declared
    bounds) and a 95 % bound on its error in rank (rows), from the mechanism's utility guarantee:
    within 2 * scale * ln(candidates / 0.05) of the best score."""
    if is_int and hi - lo <= 2000:
        candidates = [float(x) for x in range(int(lo), int(hi) + 1)]
    else:
        candidates = [float(x) for x in np.linspace(lo, hi, 1001)]
    measure = dp.zero_concentrated_divergence() if noise.gaussian else dp.max_divergence()
    d_out = noise.rho_each if noise.gaussian else noise.eps_each

    def make(scale: float) -> Any:
        return dp.m.make_private_quantile(
            dp.vector_domain(dp.atom_domain(T=float, nan=False)),
            dp.symmetric_distance(),
            measure,
            candidates=candidates,
            alpha=q,
            scale=scale,
        )

    try:
        scale = dp.binary_search_param(make, d_in=k, d_out=d_out)
    except Exception:  # OpenDP cannot calibrate (parameters only: no data is involved yet)
        raise InvalidInput("this quantile cannot be calibrated at this epsilon; choose a larger epsilon") from None
    m = make(scale)
    if m.map(k) > d_out * (1 + 1e-9):
        raise AssertionError("quantile calibration disagrees with OpenDP's privacy map")
    return m, Public(2 * scale * math.log(len(candidates) / ALPHA))


@dataclass(frozen=True)
class Cost:
    """What a plan spends, stated from public parameters before any data is read: the mechanism family
    (`gaussian`: zCDP, charged as rho; `laplace`: pure DP, charged as epsilon), the epsilon and delta
    asked for (delta 0 for pure DP) and the zCDP rho of the whole release."""

    kind: Literal["gaussian", "laplace"]
    epsilon: float
    delta: float
    rho: float

    @property
    def pure_epsilon(self) -> float:
        """The epsilon a budget is charged under basic composition (Laplace), else 0."""
        return self.epsilon if self.kind == "laplace" else 0.0

    @property
    def zcdp_rho(self) -> float:
        """The rho a budget is charged under zCDP composition (Gaussian), else 0."""
        return self.rho if self.kind == "gaussian" else 0.0


RowMask = Callable[[pd.DataFrame], np.ndarray]


class QuerySpec(Protocol):
    """A statement's syntax (dp.sql.Query): the dataset, statistics and columns it names, not yet
    checked against the dataset's schema."""

    dataset: str
    aggregates: list[Aggregate]
    group_by: str | None
    columns: set[str]

    def predicate(self, schema: DatasetSchema) -> RowMask | None: ...


class Plan:
    """A DP query checked and calibrated from public parameters alone: statistics, declared bounds
    and group keys, epsilon, delta and rows per subject. Everything that can be refused is refused
    here, before any data is read; `cost` says what it spends, and `release` then only runs the
    prepared mechanisms. Built by `plan` from a parsed statement and its dataset's schema, or directly
    from the parameters (`where`: the row predicate; `reads`: the columns the release needs)."""

    def __init__(
        self,
        aggregates: list[Aggregate],
        bounds: dict[str, tuple[float, float]],
        integer_columns: set[str],
        epsilon: float,
        delta: float | None = None,
        *,
        group_by: str | None = None,
        group_keys: list[Any] | None = None,
        max_rows: int = 1,
        subject_column: str | None = None,
        where: RowMask | None = None,
        reads: tuple[str, ...] = (),
        days: frozenset[str] = frozenset(),
    ) -> None:
        if not aggregates:
            raise InvalidInput("ask for at least one statistic")
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or not 1 <= max_rows <= MAX_ROWS_PER_SUBJECT:
            raise InvalidInput(f"max rows per subject must be between 1 and {MAX_ROWS_PER_SUBJECT}")
        for a in aggregates:
            if a.fn not in ("count", "sum", "mean", "variance", "quantile"):
                raise InvalidInput(f"unsupported statistic {a.fn}")
            if a.fn != "count":
                if a.column is None:
                    raise InvalidInput(f"{a.fn} needs a column")
                if a.column not in bounds:
                    raise InvalidInput(f"{a.label} needs declared bounds (min and max of {a.column} in the schema)")
                lo, hi = bounds[a.column]
                if not (math.isfinite(lo) and math.isfinite(hi) and -BOUND_LIMIT <= lo <= hi <= BOUND_LIMIT):
                    raise InvalidInput(f"{a.column}: declared bounds must be finite, ordered and within ±2^53")
        if group_by is not None and not group_keys:
            raise InvalidInput(f"GROUP BY {group_by} needs its values declared in the schema")
        self.aggregates = aggregates
        self.bounds = bounds
        self.integer_columns = integer_columns
        self.epsilon = float(epsilon)
        self.delta = delta
        self.group_by = group_by
        self.groups: list[Any] = list(group_keys) if group_by is not None and group_keys else [None]
        self.group_keys = group_keys
        self.max_rows = max_rows
        self.subject_column = subject_column
        self.where = where
        self.reads = reads
        self.days = days  # date columns: values and bounds in days since 1970-01-01
        self.noise = _Noise(_releases(aggregates), epsilon, delta)
        self.quantiles: dict[Aggregate, tuple[Any, Public]] = {}
        k = max_rows
        for a in aggregates:
            if a.fn == "count":
                self.noise.prepare(k, True)
            elif a.fn == "quantile":
                lo, hi = self._bounds(a)
                if a.q is None:
                    raise InvalidInput(f"quantile of {a.column} needs its level (between 0 and 1)")
                self.quantiles[a] = _quantile_measurement(self.noise, a.q, lo, hi, a.column in integer_columns, k)
            else:
                mag, is_int = self._magnitude(a)
                self.noise.prepare(k * _sum_sensitivity(mag, is_int), is_int)
                if a.fn in ("mean", "variance"):
                    self.noise.prepare(k, True)
                if a.fn == "variance":
                    self.noise.prepare(k * _sum_sensitivity(mag * mag, is_int), is_int)

    @property
    def rho(self) -> float:
        return self.noise.rho_each * self.noise.releases

    @property
    def mechanism(self) -> str:
        return "gaussian (zCDP)" if self.noise.gaussian else "laplace (pure DP)"

    @property
    def cost(self) -> Cost:
        """What releasing this plan spends (the same on every dataset: public)."""
        kind: Literal["gaussian", "laplace"] = "gaussian" if self.noise.gaussian else "laplace"
        return Cost(kind, self.epsilon, float(self.delta or 0.0), self.rho)

    @property
    def statistics(self) -> list[str]:
        return [self._label(a) for a in self.aggregates]

    def _label(self, a: Aggregate) -> str:
        """The statistic's name, with its unit when it is over a date column."""
        if a.fn == "count" or a.column not in self.days:
            return a.label
        return a.label + (DAYS_SQUARED if a.fn == "variance" else DAYS)

    def _bounds(self, a: Aggregate) -> tuple[float, float]:
        if a.column is None:
            raise AssertionError("a statistic over values names its column")
        return self.bounds[a.column]

    def _magnitude(self, a: Aggregate) -> tuple[float, bool]:
        """The largest |value| after clamping, and whether values are integers (from the schema)."""
        lo, hi = self._bounds(a)
        is_int = a.column in self.integer_columns and float(lo).is_integer() and float(hi).is_integer()
        return max(abs(lo), abs(hi)), is_int

    def release(self, frame: pd.DataFrame) -> Answer:
        """The DP answer over `frame` (the rows read, before the plan's row predicate). Only prepared
        mechanisms run; a failure here (none is expected) passes on no message, which could describe
        the data."""
        try:
            rows = frame if self.where is None else frame[self.where(frame)]
            return self._answer(rows)
        except ComplaiError:
            raise
        except Exception:
            raise ComplaiError("the DP query failed while computing its answer; nothing was spent") from None

    def _answer(self, frame: pd.DataFrame) -> Answer:
        """Answer over `frame` (already filtered by the row predicate) with the prepared mechanisms."""
        noise, k, groups = self.noise, self.max_rows, self.groups
        if self.subject_column is not None:
            frame = bound_contributions(frame, self.subject_column, k)
        values: dict[str, Any] = {}
        accuracy: dict[str, Any] = {}
        n_groups = len(groups)
        codes: np.ndarray | None = None
        if self.group_by is None:
            rows_per_group = np.array([len(frame)])
        else:
            cats = pd.Categorical(frame[self.group_by], categories=self.group_keys)
            codes = np.asarray(cats.codes, dtype=np.int64)  # -1: not a declared key
            rows_per_group = np.bincount(codes[codes >= 0], minlength=n_groups)
        for agg in self.aggregates:
            per_group_v: dict[Any, Any] = {}
            per_group_a: dict[Any, Any] = {}
            if agg.fn == "count":
                if agg.column is None:
                    counts = rows_per_group
                else:
                    present = frame[agg.column].notna().to_numpy(dtype=bool)
                    if codes is None:
                        counts = np.array([int(present.sum())])
                    else:
                        counts = np.bincount(codes[present & (codes >= 0)], minlength=n_groups)
                for i, g in enumerate(groups):
                    v, a = noise.release(int(counts[i]), k, True)
                    per_group_v[g], per_group_a[g] = Noisy(max(0.0, v)), a
            else:
                lo, hi = self._bounds(agg)
                series = frame[agg.column]
                if agg.column in self.days:
                    raw = as_days(series)
                elif series.dtype == np.float64:
                    raw = series.to_numpy(copy=False)
                else:
                    raw = pd.to_numeric(series).to_numpy(dtype="float64", na_value=np.nan)
                keep = ~np.isnan(raw)
                if codes is not None:
                    keep &= codes >= 0
                if keep.all():
                    vals, c = np.clip(raw, lo, hi), codes
                else:
                    vals, c = np.clip(raw[keep], lo, hi), (codes[keep] if codes is not None else None)
                if agg.fn == "quantile":
                    m, acc_q = self.quantiles[agg]
                    for i, g in enumerate(groups):
                        part = vals if c is None else vals[c == i]
                        per_group_v[g], per_group_a[g] = Noisy(m(part.astype(float).tolist())), acc_q
                else:
                    self._moments(agg, vals, c, per_group_v, per_group_a)
            label = self._label(agg)
            if self.group_by is None:
                values[label], accuracy[label] = per_group_v[None], per_group_a[None]
            else:
                values[label] = {str(g): v for g, v in per_group_v.items()}
                accuracy[label] = {str(g): a for g, a in per_group_a.items()}
        return Answer(
            values=values,
            accuracy=accuracy,
            epsilon=self.epsilon,
            delta=float(self.delta or 0.0),
            rho=self.rho,
            mechanism=self.mechanism,
        )

    def _moments(
        self, agg: Aggregate, vals: np.ndarray, c: np.ndarray | None, out_v: dict[Any, Any], out_a: dict[Any, Any]
    ) -> None:
        """sum, mean or variance per group from noisy sums (of x, x^2) and noisy counts."""
        noise, k, groups = self.noise, self.max_rows, self.groups
        lo, hi = self._bounds(agg)
        n_groups = len(groups)
        mag, is_int = self._magnitude(agg)
        counts = np.array([len(vals)]) if c is None else np.bincount(c, minlength=n_groups)
        squares = _exact_sums(vals * vals, c, n_groups, mag * mag, is_int) if agg.fn == "variance" else []
        sums = _exact_sums(vals, c, n_groups, mag, is_int)
        sens, sens_sq = _sum_sensitivity(mag, is_int), _sum_sensitivity(mag * mag, is_int)
        for i, g in enumerate(groups):
            noisy_sum, acc_sum = noise.release(sums[i], k * sens, is_int)
            if agg.fn == "sum":
                out_v[g], out_a[g] = noisy_sum, acc_sum
                continue
            noisy_count, acc_n = noise.release(int(counts[i]), k, True)
            noisy_n = max(float(noisy_count), 1.0)
            mean = min(max(noisy_sum / noisy_n, lo), hi)
            # interval arithmetic: the mean's error if both noisy parts are off by their 95 % bounds
            lo_n = max(noisy_n - acc_n, 1.0)
            acc_mean = min(hi - lo, (abs(noisy_sum) + acc_sum) / lo_n - abs(noisy_sum) / (noisy_n + acc_n))
            if agg.fn == "mean":
                out_v[g], out_a[g] = Noisy(mean), Noisy(acc_mean)
                continue
            noisy_sq, acc_sq = noise.release(squares[i], k * sens_sq, is_int)
            var = max(0.0, noisy_sq / noisy_n - mean * mean)
            out_v[g] = Noisy(min(var, (hi - lo) ** 2 / 4))
            acc_second = (abs(noisy_sq) + acc_sq) / lo_n - abs(noisy_sq) / (noisy_n + acc_n)
            out_a[g] = Noisy(min((hi - lo) ** 2 / 4, acc_second + 2 * abs(mean) * acc_mean + acc_mean**2))


def plan(
    query: QuerySpec,
    schema: DatasetSchema,
    *,
    epsilon: float,
    delta: float | None = None,
    max_rows: int = 1,
    purpose: str,
) -> Plan:
    """The plan of a parsed statement on its dataset: the statement checked against the schema (its
    columns, WHERE literals and GROUP BY keys), bounds and keys taken from the schema's declarations,
    the parameters checked and the mechanisms calibrated, and the purpose's lawful basis confirmed.
    Nothing is read: a refusal here depends on public information only, and a plan states its cost.
    Call it once the principal is authorised for the dataset (the schema is consulted here)."""
    if query.dataset != schema.name:
        raise InvalidInput(f"the query reads {query.dataset!r}, not {schema.name!r}")
    unknown = sorted(query.columns - {f.name for f in schema.fields})
    if unknown:
        raise InvalidInput(f"unknown column(s) {unknown} in dataset {query.dataset}")
    bounds = {
        f.name: (lo, hi) for f in schema.fields for lo, hi in [f.numeric_bounds] if lo is not None and hi is not None
    }
    integer = {f.name for f in schema.fields if f.type in ("integer", "date")}  # a date is a whole number of days
    keys: list[Any] | None = None
    if query.group_by:
        spec = schema.field(query.group_by)
        keys = spec.values or ([False, True] if spec.type == "boolean" else None)
    where = query.predicate(schema)
    made = Plan(
        query.aggregates,
        bounds,
        integer,
        epsilon,
        delta,
        group_by=query.group_by,
        group_keys=keys,
        max_rows=max_rows,
        subject_column=schema.subject_column,
        where=where,
        reads=tuple(sorted(query.columns | {schema.subject_column})),
        days=frozenset(f.name for f in schema.fields if f.type in ("date", "datetime")),
    )
    schema.basis(purpose)
    return made


def run(
    frame: pd.DataFrame,
    aggregates: list[Aggregate],
    bounds: dict[str, tuple[float, float]],
    integer_columns: set[str],
    epsilon: float,
    delta: float | None = None,
    group_by: str | None = None,
    group_keys: list[Any] | None = None,
    max_rows: int = 1,
    subject_column: str | None = None,
) -> Answer:
    """Answer `aggregates` over `frame` (already filtered by row predicates) with DP: a Plan released."""
    return Plan(
        aggregates,
        bounds,
        integer_columns,
        epsilon,
        delta,
        group_by=group_by,
        group_keys=group_keys,
        max_rows=max_rows,
        subject_column=subject_column,
    ).release(frame)
