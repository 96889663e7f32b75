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

With a delta the queries use the Gaussian mechanism (zCDP), otherwise Laplace (pure epsilon-DP). Every
answer carries the epsilon (and delta) it cost, its zCDP rho and a 95 % error bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import opendp.prelude as dp
import pandas as pd

from complai.dp.accounting import rho_for, rho_of_laplace
from complai.errors import InvalidInput

dp.enable_features("contrib")
ALPHA = 0.05


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


@dataclass
class Answer:
    values: dict[str, Any]  # label -> value, or label -> {group: value}
    accuracy: dict[str, Any]  # same shape: 95 % absolute error bound
    epsilon: float
    delta: float
    rho: float
    mechanism: str
    rows_used: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
    """One mechanism per released number, budgeted by splitting epsilon (or rho) evenly."""

    def __init__(self, releases: int, epsilon: float, delta: float | None) -> None:
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise InvalidInput("epsilon must be a positive number")
        if delta is not None and not 0 < delta < 1:
            raise InvalidInput("delta must be in (0, 1)")
        self.gaussian = delta is not None
        self.eps_each = epsilon / releases
        self.rho_each = rho_for(epsilon, delta) / releases if delta is not None else rho_of_laplace(self.eps_each)
        self.releases = releases

    def release(self, value: float, sensitivity: float, integer: bool) -> tuple[float, float]:
        """Noisy value and its 95 % error bound, checked against OpenDP's privacy map."""
        if self.gaussian:
            make, budget = dp.m.make_gaussian, self.rho_each
            scale = sensitivity / math.sqrt(2 * budget)
            acc = dp.gaussian_scale_to_accuracy(scale, ALPHA)
        else:
            make, budget = dp.m.make_laplace, self.eps_each
            scale = sensitivity / budget
            accuracy = dp.discrete_laplacian_scale_to_accuracy if integer else dp.laplacian_scale_to_accuracy
            acc = accuracy(scale, ALPHA)
        kind = int if integer else float
        domain = dp.atom_domain(T=int) if integer else dp.atom_domain(T=float, nan=False)
        m = make(domain, dp.absolute_distance(T=kind), scale=scale)
        if m.map(math.ceil(sensitivity) if integer else float(sensitivity)) > budget * (1 + 1e-9):
            raise AssertionError("noise calibration disagrees with OpenDP's privacy map")
        return float(m(kind(value))), float(acc)


def _exact_sums(
    values: np.ndarray, codes: np.ndarray | None, n_groups: int, magnitude: float, is_int: bool
) -> tuple[np.ndarray, float]:
    """Per-group sums computed exactly, and the per-value sensitivity they imply.

    Values go onto a fixed-point grid fine enough that every partial sum is an integer below 2^52, so
    float64 accumulation (np.bincount) makes no rounding error. Rounding to the grid is a fixed
    per-value transform that moves a value by at most half a step: the sensitivity grows by that much.
    """
    if len(values) == 0:
        return np.zeros(n_groups), magnitude
    if is_int:
        scale = 1.0
        if len(values) * magnitude >= 2.0**52:
            scale = 2.0 ** math.floor(math.log2(2.0**52 / (len(values) * magnitude)))
    else:
        scale = min(2.0**20, 2.0 ** math.floor(math.log2(2.0**52 / max(1.0, len(values) * magnitude))))
    # `values` is the caller's scratch copy: scaled and rounded in place (no further 8-bytes-per-row copies)
    grid = values if is_int and scale == 1.0 else np.round(np.multiply(values, scale, out=values), out=values)
    if codes is None:
        sums = np.array([grid.sum()]) / scale  # partial sums are integers below 2^52: exact
    else:
        sums = np.bincount(codes, weights=grid, minlength=n_groups) / scale
    return sums, magnitude + (0.0 if is_int and scale == 1.0 else 0.5 / scale)


def _releases(aggs: list[Aggregate]) -> int:
    return sum({"count": 1, "sum": 1, "mean": 2, "variance": 3, "quantile": 1}[a.fn] for a in aggs)


def _quantile(
    noise: _Noise, values: np.ndarray, q: float, lo: float, hi: float, is_int: bool, k: int
) -> tuple[float, float]:
    """OpenDP's private quantile (exponential mechanism over candidates spread over the declared
    bounds); returns the value and a 95 % bound on its error in rank (rows), from the mechanism's
    utility guarantee: within 2 * scale * ln(candidates / 0.05) of the best score."""
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

    scale = dp.binary_search_param(make, d_in=k, d_out=d_out)
    m = make(scale)
    if m.map(k) > d_out * (1 + 1e-9):
        raise AssertionError("quantile calibration disagrees with OpenDP's privacy map")
    value = float(m(values.astype(float).tolist())) if len(values) else float("nan")
    return value, 2 * scale * math.log(len(candidates) / ALPHA)


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
    """Answer `aggregates` over `frame` (already filtered by row predicates) with DP."""
    if not aggregates:
        raise InvalidInput("ask for at least one statistic")
    for a in aggregates:
        if a.fn not in ("count", "sum", "mean", "variance", "quantile"):
            raise InvalidInput(f"unsupported statistic {a.fn}")
        if a.fn != "count":
            if a.column is None:
                raise InvalidInput(f"{a.fn} needs a column")
            if a.column not in bounds:
                raise InvalidInput(f"{a.fn}({a.column}) needs declared bounds (min and max in the dataset schema)")
    if group_by is not None and not group_keys:
        raise InvalidInput(f"GROUP BY {group_by} needs declared group keys (the field's values in the schema)")
    if subject_column is not None:
        frame = bound_contributions(frame, subject_column, max_rows)
    noise = _Noise(_releases(aggregates), epsilon, delta)
    groups: list[Any] = list(group_keys) if group_by is not None else [None]
    values: dict[str, Any] = {}
    accuracy: dict[str, Any] = {}
    k = max_rows
    n_groups = len(groups)
    codes: np.ndarray | None = None
    if group_by is None:
        in_group = None
        rows_per_group = np.array([len(frame)])
    else:
        codes = pd.Categorical(frame[group_by], categories=group_keys).codes.astype(np.int64)  # -1: undeclared
        in_group = codes >= 0
        rows_per_group = np.bincount(codes[in_group], minlength=n_groups)
    for agg in aggregates:
        per_group_v: dict[Any, Any] = {}
        per_group_a: dict[Any, Any] = {}
        if agg.fn == "count":
            if agg.column is None:
                counts = rows_per_group
            else:
                present = frame[agg.column].notna().to_numpy()
                if codes is None:
                    counts = np.array([int(present.sum())])
                else:
                    counts = np.bincount(codes[present & in_group], minlength=n_groups)  # type: ignore[operator]
            for i, g in enumerate(groups):
                v, a = noise.release(int(counts[i]), k, True)
                per_group_v[g], per_group_a[g] = max(0.0, v), a
        else:
            lo, hi = bounds[agg.column]  # type: ignore[index]
            series = frame[agg.column]  # type: ignore[index]
            if series.dtype == np.float64:
                raw = series.to_numpy(copy=False)
            else:
                raw = pd.to_numeric(series).to_numpy(dtype="float64", na_value=np.nan)
            keep = ~np.isnan(raw)
            if codes is not None:
                keep &= in_group  # type: ignore[operator]
            if keep.all():
                vals, c = np.clip(raw, lo, hi), codes
            else:
                vals, c = np.clip(raw[keep], lo, hi), (codes[keep] if codes is not None else None)
            counts = np.array([len(vals)]) if c is None else np.bincount(c, minlength=n_groups)
            if agg.fn == "quantile":
                is_int_q = agg.column in integer_columns
                for i, g in enumerate(groups):
                    part = vals if c is None else vals[c == i]
                    per_group_v[g], per_group_a[g] = _quantile(noise, part, float(agg.q), lo, hi, is_int_q, k)  # type: ignore[arg-type]
                if group_by is None:
                    values[agg.label], accuracy[agg.label] = per_group_v[None], per_group_a[None]
                else:
                    values[agg.label] = {str(g): v for g, v in per_group_v.items()}
                    accuracy[agg.label] = {str(g): a for g, a in per_group_a.items()}
                continue
            mag = max(abs(lo), abs(hi))
            is_int = agg.column in integer_columns and float(lo).is_integer() and float(hi).is_integer()
            sums, sens = _exact_sums(vals, c, n_groups, mag, is_int)
            squares, sens_sq = (
                _exact_sums(vals * vals, c, n_groups, mag * mag, is_int) if agg.fn == "variance" else (None, 0)
            )
            for i, g in enumerate(groups):
                noisy_sum, acc_sum = noise.release(float(sums[i]), k * sens, is_int)
                if agg.fn == "sum":
                    per_group_v[g], per_group_a[g] = noisy_sum, acc_sum
                    continue
                noisy_n, acc_n = noise.release(int(counts[i]), k, True)
                noisy_n = max(noisy_n, 1.0)
                mean = min(max(noisy_sum / noisy_n, lo), hi)
                # interval arithmetic: the mean's error if both noisy parts are off by their 95 % bounds
                lo_n = max(noisy_n - acc_n, 1.0)
                acc_mean = min(hi - lo, (abs(noisy_sum) + acc_sum) / lo_n - abs(noisy_sum) / (noisy_n + acc_n))
                if agg.fn == "mean":
                    per_group_v[g], per_group_a[g] = mean, acc_mean
                    continue
                noisy_sq, acc_sq = noise.release(float(squares[i]), k * sens_sq, is_int)  # type: ignore[index]
                var = max(0.0, noisy_sq / noisy_n - mean * mean)
                per_group_v[g] = min(var, (hi - lo) ** 2 / 4)
                acc_second = (abs(noisy_sq) + acc_sq) / lo_n - abs(noisy_sq) / (noisy_n + acc_n)
                per_group_a[g] = min((hi - lo) ** 2 / 4, acc_second + 2 * abs(mean) * acc_mean + acc_mean**2)
        if group_by is None:
            values[agg.label], accuracy[agg.label] = per_group_v[None], per_group_a[None]
        else:
            values[agg.label] = {str(g): v for g, v in per_group_v.items()}
            accuracy[agg.label] = {str(g): a for g, a in per_group_a.items()}
    rho = noise.rho_each * noise.releases
    return Answer(
        values=values,
        accuracy=accuracy,
        epsilon=epsilon,
        delta=delta or 0.0,
        rho=rho,
        mechanism="gaussian (zCDP)" if noise.gaussian else "laplace (pure DP)",
        rows_used=len(frame),
    )
