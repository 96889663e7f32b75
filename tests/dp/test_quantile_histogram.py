"""Quantiles from a histogram: the exact half counts, per candidate, the values below it and equal to
it (what an engine that cannot return the values themselves computes); the release scores the
candidates from those counts as OpenDP's `make_quantile_score_candidates` scores the values, and
selects one with OpenDP's noisy max at the scale OpenDP's private quantile uses. Checked: the scores
equal OpenDP's on the values, and the released candidate is distributed as `make_private_quantile`'s
(a two-sample chi-square test of 4,000 draws each; OpenDP takes no seed, so the test fails by chance
with probability 1e-6, its significance level)."""

from __future__ import annotations

import math

import numpy as np
import opendp.prelude as dp
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2_contingency

from complai.dp.queries import Aggregate, Plan

LEVELS = (0.1, 0.25, 0.5, 0.9, 0.333)


def quantile_plan(q: float, lo: float, hi: float, integer: bool, epsilon: float = 1.0) -> Plan:
    return Plan([Aggregate("quantile", "v", q)], {"v": (lo, hi)}, {"v"} if integer else set(), epsilon)


def opendp_scores(values: list[float], candidates: tuple[float, ...], q: float) -> list[int]:
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    score = dp.t.make_quantile_score_candidates(domain, dp.symmetric_distance(), list(candidates), alpha=q)
    return [int(s) for s in score(values)]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    q=st.sampled_from(LEVELS),
    integer=st.booleans(),
    values=st.lists(st.one_of(st.integers(-30, 130), st.floats(-30, 130, allow_nan=False)), max_size=60),
    missing=st.integers(0, 3),
)
def test_scores_from_the_histogram_are_opendps(q: float, integer: bool, values: list[float], missing: int) -> None:
    """Integer bounds give integer candidates, float ones 1,001 spread over the bounds; values fall on
    candidates, between them and outside the bounds (clamped first)."""
    lo, hi = (0.0, 100.0) if integer else (-0.5, 99.5)
    p = quantile_plan(q, lo, hi, integer)
    column = [float(v) for v in values] + [math.nan] * missing
    exact = p.exact(pd.DataFrame({"v": column}))
    (agg,) = p.aggregates
    quantile = p.quantiles[agg]
    candidates = p.needs.quantiles["v"]
    assert candidates == quantile.candidates and len(candidates) == (101 if integer else 1001)
    n = int(exact.present["v"][0])
    assert n == len(values)
    ours = quantile.scores(n, exact.below["v"][0], exact.equal["v"][0])
    clamped = [min(max(float(v), lo), hi) for v in values]
    assert ours == opendp_scores(clamped, candidates, q)


def test_the_released_candidate_is_distributed_as_opendps_private_quantile() -> None:
    q, lo, hi = 0.25, 0.0, 20.0
    # epsilon 0.2: the selection is spread over several candidates (a sharp one would test little)
    p = quantile_plan(q, lo, hi, True, epsilon=0.2)
    rng = np.random.default_rng(5)
    values = [float(v) for v in rng.integers(0, 21, 40)]
    exact = p.exact(pd.DataFrame({"v": values}))
    (agg,) = p.aggregates
    quantile = p.quantiles[agg]
    scale = dp.binary_search_param(
        lambda s: dp.m.make_private_quantile(
            dp.vector_domain(dp.atom_domain(T=float, nan=False)),
            dp.symmetric_distance(),
            dp.max_divergence(),
            candidates=list(quantile.candidates),
            alpha=q,
            scale=s,
        ),
        d_in=1,
        d_out=0.2,
    )
    reference = dp.m.make_private_quantile(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)),
        dp.symmetric_distance(),
        dp.max_divergence(),
        candidates=list(quantile.candidates),
        alpha=q,
        scale=scale,
    )
    draws = 4000
    ours = [p.release_exact(exact).values["quantile(v, 0.25)"] for _ in range(draws)]
    theirs = [reference(values) for _ in range(draws)]
    bins = sorted(set(ours) | set(theirs))
    table = np.array([[ours.count(b) for b in bins], [theirs.count(b) for b in bins]])
    # pool sparse bins (expected counts below 5) into one
    dense = table.sum(axis=0) >= 10
    pooled = np.column_stack([table[:, dense], table[:, ~dense].sum(axis=1)]) if (~dense).any() else table
    assert pooled.shape[1] >= 4  # spread over several candidates
    _, p_value, _, _ = chi2_contingency(pooled)
    assert p_value > 1e-6
    # and a different level would be told apart: the test has power
    other = quantile_plan(0.5, lo, hi, True, epsilon=0.2)
    other_exact = other.exact(pd.DataFrame({"v": values}))
    shifted = [other.release_exact(other_exact).values["median(v)"] for _ in range(draws)]
    every = sorted(set(ours) | set(shifted))
    table2 = np.array([[ours.count(b) for b in every], [shifted.count(b) for b in every]])
    assert chi2_contingency(table2)[1] < 1e-6
