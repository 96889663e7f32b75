"""DP queries over a table: count, sum, mean, variance, histograms and their group-by versions.

Each subject contributes at most `max_rows` rows (more are dropped at random before anything is
computed), values are clamped to the bounds declared in the dataset schema, group keys are the
declared values: nothing about the data's range or categories is read from the data. A GROUP BY column
without declared values has its keys selected by DP partition selection (OpenDP's Gaussian threshold:
a key is released, with its noisy count, when that count reaches a threshold set by a selection delta
taken from delta), so a key appears only through a mechanism too. The aggregates
are computed exactly (values on a fixed-point grid fine enough that float64 accumulation is exact; see
_grid_sums), which is also why OpenDP's float-sum truncation above 2^20 rows cannot bite. OpenDP
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

A query runs in two halves: `Plan.exact` computes, from the rows, the exact aggregates the plan's public
`Needs` name (an `Exact`: rows, non-missing values, grid-integer sums per key, and a histogram over
each quantile's candidates); `Plan.release_exact` draws the noise. Another engine (dp.spark) computes
the same `Exact` where the data lives; the noise and the grids stay here.

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
PUBLIC_FIELDS = frozenset({"epsilon", "delta", "rho", "mechanism", "selection"})


def _leaves(tree: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(tree, dict):
        return [leaf for k, v in tree.items() for leaf in _leaves(v, (*path, str(k)))]
    return [(path, tree)]


@dataclass(frozen=True)
class Answer:
    """A DP release: the only thing a DP query hands out. `values` are Noisy; `accuracy` (95 % absolute
    error bounds, same shape) are Public (from the noise scale) or Noisy (from noisy parts); the group
    keys are the declared ones, or those partition selection released; everything else is a public
    parameter. Construction refuses anything else."""

    values: dict[str, Any]  # label -> value, or label -> {group: value}
    accuracy: dict[str, Any]
    epsilon: float
    delta: float
    rho: float
    mechanism: str
    # partition selection (group keys not declared): its public parameters {"threshold", "delta"}
    selection: dict[str, float] | None = None

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
        """The public parameters of the release (what the ledger may record); `selection` only when keys
        were selected (as the ledger's event has it)."""
        out = {name: getattr(self, name) for name in sorted(PUBLIC_FIELDS)}
        if self.selection is None:
            del out["selection"]
        return out

    def as_dict(self) -> dict[str, Any]:
        """The fields (`selection` only when keys were selected); with `dates`, the ISO 8601 date of each
        noisy mean and quantile of a date column."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.selection is None:
            del out["selection"]
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


def _grid_sums(values: np.ndarray, codes: np.ndarray | None, n_groups: int, grid: float, is_int: bool) -> list[int]:
    """Per-group sums of `values` on the fixed-point grid (see _grid), as Python integers, computed
    exactly: np.bincount accumulates chunks of at most ROW_CAPACITY grid values in float64 without
    rounding error; chunks add up as Python integers. `values` is the caller's scratch copy: scaled and
    rounded in place (round half to even, as Spark's rint)."""
    totals = [0] * n_groups
    for start in range(0, len(values), ROW_CAPACITY):
        part = values[start : start + ROW_CAPACITY]
        scaled = part if is_int and grid == 1.0 else np.round(np.multiply(part, grid, out=part), out=part)
        if codes is None:
            sums = np.array([scaled.sum()])
        else:
            sums = np.bincount(codes[start : start + ROW_CAPACITY], weights=scaled, minlength=n_groups)
        totals = [t + int(x) for t, x in zip(totals, sums, strict=True)]
    return totals


def _from_grid(total: int, grid: float) -> float:
    """A grid-integer total as the value it stands for."""
    return total if grid == 1.0 else total / grid


def _selection_deltas(
    group_by: str | None, key_type: str | None, aggs: list[Aggregate], delta: float | None, selection: float | None
) -> tuple[float, float]:
    """Check a query whose GROUP BY keys are selected by DP partition selection (no declared values);
    (the delta left for the other releases, the selection's delta; by default half of delta)."""
    if key_type not in SELECTABLE_KEYS:
        hint = f" (a {key_type} key cannot be selected by DP partition selection)" if key_type else ""
        raise InvalidInput(f"GROUP BY {group_by} needs its values declared in the schema{hint}")
    if delta is None:
        raise InvalidInput(
            f"GROUP BY {group_by} needs its values declared in the schema, or a delta: without declared values "
            "its keys are selected by DP partition selection"
        )
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not MIN_DELTA <= delta < 1:
        raise InvalidInput(f"delta must be in (0, 1) and at least {MIN_DELTA:g}")
    if any(a.fn == "quantile" for a in aggs):
        raise InvalidInput(f"quantiles need the values of GROUP BY {group_by} declared in the schema")
    chosen = delta / 2 if selection is None else selection
    if (
        isinstance(chosen, bool)
        or not isinstance(chosen, int | float)
        or not MIN_DELTA <= chosen
        or not MIN_DELTA <= delta - chosen
    ):
        raise InvalidInput(f"the selection delta must be at least {MIN_DELTA:g} and leave at least that of delta")
    return delta - chosen, float(chosen)


def _releases(aggs: list[Aggregate]) -> int:
    return sum({"count": 1, "sum": 1, "mean": 2, "variance": 3, "quantile": 1}[a.fn] for a in aggs)


def _candidates(lo: float, hi: float, is_int: bool) -> tuple[float, ...]:
    """A quantile's candidates, spread over the declared bounds (public)."""
    if is_int and hi - lo <= 2000:
        return tuple(float(x) for x in range(int(lo), int(hi) + 1))
    return tuple(float(x) for x in np.linspace(lo, hi, 1001))


@dataclass(frozen=True)
class _Quantile:
    """OpenDP's private quantile split at its scores: the scores over the candidates come from a
    histogram of the values (#(x < c_j), #(x == c_j) and the value count: what either engine computes),
    scored as OpenDP's `make_quantile_score_candidates` scores them, |a * #(x < c) - b * #(x > c)| with a
    and b read from OpenDP, and selected by OpenDP's noisy max at the scale `make_private_quantile` uses
    (its scale times a + b, the denominator of its integer scores)."""

    candidates: tuple[float, ...]
    a: int
    b: int
    select: Any  # the noisy max measurement over the vector of scores
    accuracy: Public

    def scores(self, n: int, below: np.ndarray, equal: np.ndarray) -> list[int]:
        """The candidates' scores from a value count and the histogram (Python integers: exact)."""
        return [abs(self.a * int(lt) - self.b * (n - int(lt) - int(eq))) for lt, eq in zip(below, equal, strict=True)]

    def release(self, n: int, below: np.ndarray, equal: np.ndarray) -> Noisy:
        return Noisy(self.candidates[int(self.select(self.scores(n, below, equal)))])


def _quantile_measurement(noise: _Noise, q: float, lo: float, hi: float, is_int: bool, k: int) -> _Quantile:
    """OpenDP's private quantile (exponential mechanism over candidates spread over the declared
    bounds) and a 95 % bound on its error in rank (rows), from the mechanism's utility guarantee:
    within 2 * scale * ln(candidates / 0.05) of the best score."""
    candidates = _candidates(lo, hi, is_int)
    measure = dp.zero_concentrated_divergence() if noise.gaussian else dp.max_divergence()
    d_out = noise.rho_each if noise.gaussian else noise.eps_each
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))

    def make(scale: float) -> Any:
        return dp.m.make_private_quantile(
            domain, dp.symmetric_distance(), measure, candidates=list(candidates), alpha=q, scale=scale
        )

    try:
        scale = dp.binary_search_param(make, d_in=k, d_out=d_out)
    except Exception:  # OpenDP cannot calibrate (parameters only: no data is involved yet)
        raise InvalidInput("this quantile cannot be calibrated at this epsilon; choose a larger epsilon") from None
    if make(scale).map(k) > d_out * (1 + 1e-9):
        raise AssertionError("quantile calibration disagrees with OpenDP's privacy map")
    score = dp.t.make_quantile_score_candidates(domain, dp.symmetric_distance(), [candidates[0]], alpha=q)
    step = max(1.0, abs(candidates[0]))  # one value below the first candidate, one above
    a, b = int(score([candidates[0] - step])[0]), int(score([candidates[0] + step])[0])
    full = dp.t.make_quantile_score_candidates(domain, dp.symmetric_distance(), list(candidates), alpha=q)
    select = dp.m.make_noisy_max(full.output_domain, full.output_metric, measure, scale=scale * (a + b), negate=True)
    if select.map(full.map(k)) > d_out * (1 + 1e-9):  # type: ignore[no-untyped-call]  # as in _Noise.prepare
        raise AssertionError("quantile calibration disagrees with OpenDP's privacy map")
    return _Quantile(candidates, a, b, select, Public(2 * scale * math.log(len(candidates) / ALPHA)))


# GROUP BY key types whose keys may be selected by DP partition selection: their key text is the same
# on every engine (floats and datetimes are refused: engines render them differently)
SELECTABLE_KEYS = ("string", "category", "integer", "date")


def key_text(series: pd.Series, key_type: str) -> pd.Series:
    """The text of each key (None where missing): str(int) for integers, ISO 8601 dates, else the string."""
    out = np.full(len(series), None, dtype=object)
    present = series.notna().to_numpy(dtype=bool)
    values = series[present]
    if key_type == "integer":
        text = pd.to_numeric(values).astype("int64").astype(str)
    elif key_type == "date":
        text = pd.to_datetime(values).dt.strftime("%Y-%m-%d")
    else:
        text = values.astype(str)
    out[present] = text.to_numpy(dtype=object)
    return pd.Series(out, index=series.index, dtype=object)


@dataclass(frozen=True)
class _Selector:
    """OpenDP's Gaussian threshold over the rows per key: a key is released, with its noisy count, when
    that count is at least `threshold`; the least threshold whose privacy map (for a subject touching at
    most k keys by at most k rows: l0 = l2 = linf = k) states at most the selection delta."""

    measurement: Any
    threshold: int
    delta: float
    accuracy: Public


def _selector(k: int, rho: float, delta: float) -> _Selector:
    scale = k / math.sqrt(2 * rho)
    domain = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64"))
    metric = dp.l02inf_distance(dp.absolute_distance(T="i64"))

    def make(threshold: int) -> Any:
        return dp.m.make_gaussian_threshold(domain, metric, scale=scale, threshold=threshold)

    def within(threshold: int) -> bool:
        try:
            return bool(make(threshold).map((k, k, k))[1] <= delta)
        except dp.OpenDPException:  # a threshold OpenDP does not take (parameters only: no data yet)
            return False

    low, high = 0, max(k, 1)
    while not within(high):  # the map's delta falls as the threshold rises: double, then bisect
        low, high = high, high * 2
        if high > 2**62:
            raise InvalidInput("partition selection cannot be calibrated: choose a larger epsilon or selection delta")
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if within(mid) else (mid, high)
    m = make(high)
    rho_used, delta_used = m.map((k, k, k))
    if rho_used > rho * (1 + 1e-9) or delta_used > delta:
        raise AssertionError("partition selection disagrees with OpenDP's privacy map")
    acc = dp.gaussian_scale_to_accuracy(scale, ALPHA)
    if not math.isfinite(acc):
        raise InvalidInput("the noise this query needs is too large (epsilon too small for the declared bounds)")
    return _Selector(m, high, delta, Public(acc))


@dataclass(frozen=True)
class Cost:
    """What a plan spends, stated from public parameters before any data is read: the mechanism family
    (`gaussian`: zCDP, charged as rho; `laplace`: pure DP, charged as epsilon), the epsilon and delta
    asked for (delta 0 for pure DP), the zCDP rho of the whole release, and the part of delta that DP
    partition selection spends (0 when the group keys are declared)."""

    kind: Literal["gaussian", "laplace"]
    epsilon: float
    delta: float
    rho: float
    selection_delta: float = 0.0

    @property
    def approx(self) -> tuple[float, float] | None:
        """The (epsilon, delta) a budget is charged besides rho: partition selection's delta, else None."""
        return (0.0, self.selection_delta) if self.selection_delta > 0 else None

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


@dataclass(frozen=True)
class Moment:
    """A column under sum, mean or variance, as the exact aggregation needs it (public: from the plan).
    Values are dropped when missing, turned into days since 1970-01-01 when `days` says so ("date" or
    "datetime"), clamped to [lo, hi], then put on the grid: `rint(v * grid)`, and for a variance its
    squares `rint((v * v) * square_grid)` (None: no variance asks for them). With `is_int` and a grid
    of 1, values are whole numbers already and are summed as they are."""

    column: str
    lo: float
    hi: float
    is_int: bool
    days: Literal["", "date", "datetime"]
    grid: float
    square_grid: float | None


@dataclass(frozen=True)
class Needs:
    """What a plan needs of the rows, stated from the plan alone (public): every engine computes the
    same `Exact` from it. `where` is dp.sql's bound WHERE tree (a Condition or Junction: typed Any,
    because dp.sql imports this module) or None; `keys` the declared group keys, or None when GROUP BY
    keys are selected by DP partition selection; `key_type` the group field's type; `counts` the
    columns under count(col); `quantiles` each quantile column's candidates (the values are clamped to
    the column's bounds, `quantile_bounds`, first)."""

    where: Any
    subject_column: str | None
    max_rows: int
    group_by: str | None
    keys: list[Any] | None
    key_type: str | None
    counts: tuple[str, ...]
    moments: tuple[Moment, ...]
    quantiles: dict[str, tuple[float, ...]]
    quantile_bounds: dict[str, tuple[float, float]]
    days: dict[str, Literal["date", "datetime"]]


@dataclass(eq=False)
class Exact:
    """The exact aggregates a plan releases: they never leave dp/ and the operation that holds them.
    One entry per key: `keys` holds the key text of each declared key in order (no GROUP BY: one key,
    the empty string), or of every key seen (sorted) under partition selection. `rows`: rows per key
    after WHERE, bounding and the key filter; `present`: values neither null nor NaN per key of each
    column under count(col), a moment or a quantile; `sums` / `squares`: grid-integer totals (Python
    ints) per key; `below` / `equal`: int64[K, C], #(x < c_j) and #(x == c_j) over a quantile column's
    candidates after clamping. Its repr shows shapes only."""

    keys: list[str]
    rows: np.ndarray
    present: dict[str, np.ndarray]
    sums: dict[str, list[int]]
    squares: dict[str, list[int]]
    below: dict[str, np.ndarray]
    equal: dict[str, np.ndarray]

    def same_as(self, other: Exact) -> bool:
        """Whether both hold the same aggregates (the engine-equality tests use this)."""

        def arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
            return a.keys() == b.keys() and all(np.array_equal(a[c], b[c]) for c in a)

        return (
            self.keys == other.keys
            and np.array_equal(self.rows, other.rows)
            and arrays(self.present, other.present)
            and self.sums == other.sums
            and self.squares == other.squares
            and arrays(self.below, other.below)
            and arrays(self.equal, other.equal)
        )

    def __repr__(self) -> str:
        shapes = {name: sorted(getattr(self, name)) for name in ("present", "sums", "squares", "below")}
        return f"Exact(keys={len(self.keys)}, " + ", ".join(f"{n}={v}" for n, v in shapes.items()) + ")"


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
        where_tree: Any = None,
        key_type: str | None = None,
        selection_delta: float | None = None,
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
        selecting = group_by is not None and not group_keys
        noise_delta = delta
        if selecting:
            noise_delta, selection_delta = _selection_deltas(group_by, key_type, aggregates, delta, selection_delta)
        elif selection_delta is not None:
            raise InvalidInput("a selection delta applies only to GROUP BY keys without declared values")
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
        # under partition selection the selector is one more release, unless its noisy counts are count(*)
        self.counts_rows = Aggregate("count") in aggregates
        extra = 1 if selecting and not self.counts_rows else 0
        self.noise = _Noise(_releases(aggregates) + extra, epsilon, noise_delta)
        self.selector = _selector(max_rows, self.noise.rho_each, float(selection_delta or 0.0)) if selecting else None
        self.where_tree = where_tree  # the WHERE as dp.sql's bound tree (what other engines compile)
        self.key_type = key_type
        self.quantiles: dict[Aggregate, _Quantile] = {}
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
        self._needs = self._make_needs()

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
        selection = self.selector.delta if self.selector is not None else 0.0
        return Cost(kind, self.epsilon, float(self.delta or 0.0), self.rho, selection)

    @property
    def selection(self) -> dict[str, float] | None:
        """Partition selection's public parameters (threshold, delta), or None with declared keys."""
        if self.selector is None:
            return None
        return {"threshold": float(self.selector.threshold), "delta": self.selector.delta}

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

    @property
    def needs(self) -> Needs:
        """What the release needs of the rows (public: from the plan alone)."""
        return self._needs

    def _make_needs(self) -> Needs:
        counts: list[str] = []
        moments: dict[str, Moment] = {}
        quantiles: dict[str, tuple[float, ...]] = {}
        quantile_bounds: dict[str, tuple[float, float]] = {}
        for a in self.aggregates:
            if a.column is None:
                continue
            if a.fn == "count":
                if a.column not in counts:
                    counts.append(a.column)
            elif a.fn == "quantile":
                quantiles[a.column] = self.quantiles[a].candidates
                quantile_bounds[a.column] = self._bounds(a)
            else:
                lo, hi = self._bounds(a)
                mag, is_int = self._magnitude(a)
                was = moments.get(a.column)
                squares = _grid(mag * mag, is_int) if a.fn == "variance" else None
                moments[a.column] = Moment(
                    a.column,
                    lo,
                    hi,
                    is_int,
                    self._days_of(a.column),
                    _grid(mag, is_int),
                    squares if squares is not None else (was.square_grid if was else None),
                )
        value_columns = [*moments, *quantiles]
        days = {c: kind for c in value_columns if (kind := self._days_of(c))}
        return Needs(
            where=self.where_tree,
            subject_column=self.subject_column,
            max_rows=self.max_rows,
            group_by=self.group_by,
            keys=list(self.group_keys) if self.group_by is not None and self.group_keys else None,
            key_type=self.key_type,
            counts=tuple(counts),
            moments=tuple(moments.values()),
            quantiles=quantiles,
            quantile_bounds=quantile_bounds,
            days=days,
        )

    def _days_of(self, column: str) -> Literal["", "date", "datetime"]:
        """How a column enters statistics: as is, or as days (a date's are whole: it is an integer column)."""
        if column not in self.days:
            return ""
        return "date" if column in self.integer_columns else "datetime"

    def _guard(self, step: Callable[[], Any]) -> Any:
        """Run a step that touches data: a failure here (none is expected) passes on no message, which
        could describe the data."""
        try:
            return step()
        except ComplaiError:
            raise
        except Exception:
            raise ComplaiError("the DP query failed while computing its answer; nothing was spent") from None

    def exact(self, frame: pd.DataFrame, seed: int | None = None) -> Exact:
        """The exact aggregates of `frame` (the rows read, before the plan's row predicate) that the
        release needs: WHERE, at most max_rows rows per subject (chosen at random; `seed` fixes the
        choice), the key filter, then per column the non-missing values, as days for dates, clamped and
        on the grid. Nothing here is released."""
        result: Exact = self._guard(lambda: self._exact(self._where(frame), seed))
        return result

    def release_exact(self, exact: Exact) -> Answer:
        """The DP answer from exact aggregates (`exact`, from this plan's `Needs` by either engine): the
        only place where noise meets data; only prepared mechanisms run."""
        answer: Answer = self._guard(lambda: self._release(exact))
        return answer

    def release(self, frame: pd.DataFrame) -> Answer:
        """The DP answer over `frame` (the rows read, before the plan's row predicate):
        release_exact(exact(frame))."""
        answer: Answer = self._guard(lambda: self._answer(self._where(frame)))
        return answer

    def _where(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame if self.where is None else frame[self.where(frame)]

    def _answer(self, frame: pd.DataFrame) -> Answer:
        """Answer over `frame` (already filtered by the row predicate) with the prepared mechanisms."""
        return self._release(self._exact(frame, None))

    def _values(self, frame: pd.DataFrame, column: str) -> np.ndarray:
        """A value column as float64: days for dates, NaN where missing."""
        series = frame[column]
        if column in self.days:
            return as_days(series)
        if series.dtype == np.float64:
            out: np.ndarray = series.to_numpy(copy=True)
            return out
        numeric: np.ndarray = pd.to_numeric(series).to_numpy(dtype="float64", na_value=np.nan)
        return numeric

    def _exact(self, frame: pd.DataFrame, seed: int | None) -> Exact:
        """Exact over `frame` (already filtered by the row predicate)."""
        needs = self._needs
        if self.subject_column is not None:
            frame = bound_contributions(frame, self.subject_column, self.max_rows, seed)
        codes: np.ndarray | None = None
        if self.group_by is None:
            keys = [""]
            rows = np.array([len(frame)], dtype=np.int64)
        elif self.selector is not None:
            text = key_text(frame[self.group_by], str(self.key_type))
            found, uniques = pd.factorize(text, sort=True)  # -1: a missing key
            codes = np.asarray(found, dtype=np.int64)
            keys = [str(u) for u in uniques]
            rows = np.bincount(codes[codes >= 0], minlength=len(keys)).astype(np.int64)
        else:
            keys = [str(g) for g in self.groups]
            declared = pd.Index(self.group_keys)
            codes = np.asarray(declared.get_indexer(frame[self.group_by]), dtype=np.int64)  # -1: not declared
            rows = np.bincount(codes[codes >= 0], minlength=len(keys)).astype(np.int64)
        n_keys = len(keys)

        def per_key(mask: np.ndarray) -> np.ndarray:
            if codes is None:
                return np.array([int(mask.sum())], dtype=np.int64)
            return np.bincount(codes[mask & (codes >= 0)], minlength=n_keys).astype(np.int64)

        present: dict[str, np.ndarray] = {}
        for column in needs.counts:
            present[column] = per_key(frame[column].notna().to_numpy(dtype=bool))
        sums: dict[str, list[int]] = {}
        squares: dict[str, list[int]] = {}
        below: dict[str, np.ndarray] = {}
        equal: dict[str, np.ndarray] = {}
        columns: list[tuple[str, float, float, Moment | None]] = [(m.column, m.lo, m.hi, m) for m in needs.moments]
        columns += [(c, *needs.quantile_bounds[c], None) for c in needs.quantiles]
        for column, lo, hi, moment in columns:
            raw = self._values(frame, column)
            keep = ~np.isnan(raw)
            present[column] = per_key(keep)
            if codes is not None:
                keep &= codes >= 0
            if keep.all():
                vals, c = np.clip(raw, lo, hi), codes
            else:
                vals, c = np.clip(raw[keep], lo, hi), (codes[keep] if codes is not None else None)
            if moment is not None:
                if moment.square_grid is not None:
                    squares[column] = _grid_sums(vals * vals, c, n_keys, moment.square_grid, moment.is_int)
                sums[column] = _grid_sums(vals, c, n_keys, moment.grid, moment.is_int)
            else:
                cands = np.asarray(needs.quantiles[column], dtype=np.float64)
                lt = np.zeros((n_keys, len(cands)), dtype=np.int64)
                eq = np.zeros((n_keys, len(cands)), dtype=np.int64)
                for i in range(n_keys):
                    part = np.sort(vals if c is None else vals[c == i])
                    lt[i] = np.searchsorted(part, cands, side="left")
                    eq[i] = np.searchsorted(part, cands, side="right") - lt[i]
                below[column], equal[column] = lt, eq
        return Exact(keys, rows, present, sums, squares, below, equal)

    def _release(self, exact: Exact) -> Answer:
        """The answer from `exact` with the prepared mechanisms. Under partition selection the keys
        released are those the selector keeps (sorted by their text), count(*) is the selector's noisy
        count, and every other statistic is released for the kept keys only."""
        noise, k = self.noise, self.max_rows
        selected: dict[str, int] = {}
        if self.selector is not None:
            selected = self.selector.measurement({key: int(n) for key, n in zip(exact.keys, exact.rows, strict=True)})
            kept = [i for i, key in enumerate(exact.keys) if key in selected]
        else:
            kept = list(range(len(exact.keys)))
        values: dict[str, Any] = {}
        accuracy: dict[str, Any] = {}
        for agg in self.aggregates:
            per_key_v: list[Noisy] = []
            per_key_a: list[Noisy | Public] = []
            if agg.fn == "count" and agg.column is None and self.selector is not None:
                for i in kept:
                    per_key_v.append(Noisy(max(0.0, float(selected[exact.keys[i]]))))
                    per_key_a.append(self.selector.accuracy)
            elif agg.fn == "count":
                counts = exact.rows if agg.column is None else exact.present[agg.column]
                for i in kept:
                    v, a = noise.release(int(counts[i]), k, True)
                    per_key_v.append(Noisy(max(0.0, v)))
                    per_key_a.append(a)
            elif agg.fn == "quantile":
                column = self._column(agg)
                q = self.quantiles[agg]
                for i in kept:
                    n = int(exact.present[column][i])
                    per_key_v.append(q.release(n, exact.below[column][i], exact.equal[column][i]))
                    per_key_a.append(q.accuracy)
            else:
                self._moments(agg, exact, kept, per_key_v, per_key_a)
            label = self._label(agg)
            if self.group_by is None:
                values[label], accuracy[label] = per_key_v[0], per_key_a[0]
            else:
                keys = [exact.keys[i] for i in kept]
                values[label] = dict(zip(keys, per_key_v, strict=True))
                accuracy[label] = dict(zip(keys, per_key_a, strict=True))
        return Answer(
            values=values,
            accuracy=accuracy,
            epsilon=self.epsilon,
            delta=float(self.delta or 0.0),
            rho=self.rho,
            mechanism=self.mechanism,
            selection=self.selection,
        )

    def _column(self, a: Aggregate) -> str:
        if a.column is None:
            raise AssertionError("a statistic over values names its column")
        return a.column

    def _moments(
        self, agg: Aggregate, exact: Exact, kept: list[int], out_v: list[Noisy], out_a: list[Noisy | Public]
    ) -> None:
        """sum, mean or variance per key from noisy sums (of x, x^2) and noisy counts."""
        noise, k = self.noise, self.max_rows
        column = self._column(agg)
        lo, hi = self._bounds(agg)
        mag, is_int = self._magnitude(agg)
        grid, square_grid = _grid(mag, is_int), _grid(mag * mag, is_int)
        counts = exact.present[column]
        sens, sens_sq = _sum_sensitivity(mag, is_int), _sum_sensitivity(mag * mag, is_int)
        for i in kept:
            noisy_sum, acc_sum = noise.release(_from_grid(exact.sums[column][i], grid), k * sens, is_int)
            if agg.fn == "sum":
                out_v.append(noisy_sum)
                out_a.append(acc_sum)
                continue
            noisy_count, acc_n = noise.release(int(counts[i]), k, True)
            noisy_n = max(float(noisy_count), 1.0)
            mean = min(max(noisy_sum / noisy_n, lo), hi)
            # interval arithmetic: the mean's error if both noisy parts are off by their 95 % bounds
            lo_n = max(noisy_n - acc_n, 1.0)
            acc_mean = min(hi - lo, (abs(noisy_sum) + acc_sum) / lo_n - abs(noisy_sum) / (noisy_n + acc_n))
            if agg.fn == "mean":
                out_v.append(Noisy(mean))
                out_a.append(Noisy(acc_mean))
                continue
            noisy_sq, acc_sq = noise.release(_from_grid(exact.squares[column][i], square_grid), k * sens_sq, is_int)
            var = max(0.0, noisy_sq / noisy_n - mean * mean)
            out_v.append(Noisy(min(var, (hi - lo) ** 2 / 4)))
            acc_second = (abs(noisy_sq) + acc_sq) / lo_n - abs(noisy_sq) / (noisy_n + acc_n)
            out_a.append(Noisy(min((hi - lo) ** 2 / 4, acc_second + 2 * abs(mean) * acc_mean + acc_mean**2)))


def plan(
    query: QuerySpec,
    schema: DatasetSchema,
    *,
    epsilon: float,
    delta: float | None = None,
    max_rows: int = 1,
    purpose: str,
    selection_delta: float | None = None,
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
    # dp.sql.Query.bound(schema): the same WHERE as a tree, for engines that compile it (the Spark one)
    bind = getattr(query, "bound", None)
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
        where_tree=bind(schema) if bind is not None else None,
        key_type=schema.field(query.group_by).type if query.group_by else None,
        selection_delta=selection_delta,
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
