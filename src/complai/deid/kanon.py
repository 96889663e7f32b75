"""Multidimensional Mondrian k-anonymity (LeFevre, DeWitt, Ramakrishnan, ICDE 2006) with distinct or
entropy l-diversity (Machanavajjhala et al. 2007) and t-closeness (Li, Li, Venkatasubramanian 2007) as
extra split constraints. Pure: numpy arrays in, partitions out; no I/O.

Every quasi-identifier is encoded as integer codes: numeric columns by their values' rank, categorical
ones by a caller-given order (a hierarchy's leaf order, or sorted values). A partition is split on the
quasi-identifier with the widest normalised span, at the median code, only if both halves still
satisfy k, l and t; otherwise the next widest is tried; a partition no dimension can split is final.
Because the whole table is checked first and splits keep every constraint, every final partition
satisfies them all, and every input row stays in the output (one row per row).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from complai.errors import InvalidInput


@dataclass(frozen=True)
class Constraints:
    k: int
    l: int | None = None  # noqa: E741 - the model's own name
    l_kind: str = "distinct"  # distinct | entropy
    t: float | None = None
    sensitive_ordered: bool = False  # EMD with ordered distance (numeric sensitive) instead of equal distance

    def __post_init__(self) -> None:
        if self.k < 1:
            raise InvalidInput("k must be at least 1")
        if self.l is not None and self.l < 1:
            raise InvalidInput("l must be at least 1")
        if self.l_kind not in ("distinct", "entropy"):
            raise InvalidInput("l-diversity is 'distinct' or 'entropy'")
        if self.t is not None and not 0 <= self.t <= 1:
            raise InvalidInput("t must be between 0 and 1")


@dataclass
class Result:
    partitions: list[np.ndarray]  # row indices of each equivalence class
    splits: int = 0
    notes: list[str] = field(default_factory=list)


def emd(counts: np.ndarray, global_p: np.ndarray, ordered: bool) -> float:
    """Earth mover's distance between a partition's sensitive distribution and the table's."""
    p = counts / counts.sum()
    diff = p - global_p
    if ordered:
        m = len(diff)
        return float(np.abs(np.cumsum(diff)[:-1]).sum() / (m - 1)) if m > 1 else 0.0
    return float(0.5 * np.abs(diff).sum())


class _Checker:
    def __init__(self, sensitive: np.ndarray | None, n_values: int, c: Constraints) -> None:
        self.s = sensitive
        self.c = c
        self.m = n_values
        if sensitive is not None:
            counts = np.bincount(sensitive, minlength=n_values)
            self.global_p = counts / counts.sum()

    def ok(self, rows: np.ndarray) -> bool:
        if len(rows) < self.c.k:
            return False
        if self.s is None or (self.c.l is None and self.c.t is None):
            return True
        counts = np.bincount(self.s[rows], minlength=self.m)
        if self.c.l is not None:
            if self.c.l_kind == "distinct":
                if np.count_nonzero(counts) < self.c.l:
                    return False
            else:
                p = counts[counts > 0] / len(rows)
                # conservative by a hair: a class whose entropy is log(l) exactly in theory can land a
                # rounding error below it, and checkers that truncate e^H would then report l - 1
                if -(p * np.log(p)).sum() < math.log(self.c.l) + 1e-9:
                    return False
        return not (self.c.t is not None and emd(counts, self.global_p, self.c.sensitive_ordered) > self.c.t + 1e-12)


def mondrian(
    codes: np.ndarray,
    spans: Sequence[float],
    c: Constraints,
    sensitive: np.ndarray | None = None,
    n_sensitive: int = 0,
    categorical: Sequence[bool] | None = None,
) -> Result:
    """Partition rows. `codes` is (rows, quasi-identifiers) of integer codes; `spans[j]` the table-wide
    width of dimension j used to normalise (max code - min code, at least 1). A categorical dimension's
    width in a partition is its number of distinct values less one (what generalising it costs), a
    numeric one's its value range."""
    n = codes.shape[0]
    check = _Checker(sensitive, n_sensitive, c)
    everything = np.arange(n)
    if n < c.k:
        raise InvalidInput(f"k={c.k} is larger than the table ({n} rows)")
    if not check.ok(everything):
        what = []
        if c.l is not None:
            what.append(f"{c.l_kind} l={c.l}")
        if c.t is not None:
            what.append(f"t={c.t}")
        raise InvalidInput(f"the whole table does not satisfy {' and '.join(what)}: no partition can")
    result = Result([])
    stack = [everything]
    norm = np.array([max(float(s), 1.0) for s in spans])
    cat_dims = [j for j, is_cat in enumerate(categorical or []) if is_cat]
    while stack:
        rows = stack.pop()
        block = codes[rows]
        lo, hi = block.min(axis=0), block.max(axis=0)
        width = hi - lo
        for j in cat_dims:
            if width[j] > 0:
                width[j] = len(np.unique(block[:, j])) - 1
        order = np.argsort(-width / norm, kind="stable")
        done = False
        if len(rows) >= 2 * c.k:
            for j in order:
                if hi[j] == lo[j]:
                    break
                col = block[:, j]
                median = np.median(col)
                left = col <= median
                if left.all():
                    left = col < median
                n_left = int(left.sum())
                if n_left < c.k or len(rows) - n_left < c.k:
                    continue
                lrows, rrows = rows[left], rows[~left]
                if check.ok(lrows) and check.ok(rrows):
                    stack.append(lrows)
                    stack.append(rrows)
                    result.splits += 1
                    done = True
                    break
        if not done:
            result.partitions.append(rows)
    return result
