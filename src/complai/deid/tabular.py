"""Tabular k-anonymity for DataFrames: Mondrian partitions, generalised quasi-identifiers, utility and
re-identification risk. One output row per input row; every column that is not a quasi-identifier is
kept as it was (anonypy drops columns and aggregates rows: users of it complain).

Measures (ARX's definitions where it has them):
- discernibility: sum over classes of |E|^2 (suppressed rows count n each);
- average class size: C_avg = (rows / classes) / k;
- normalised information loss (NCP / GCP): per row and quasi-identifier, the generalised interval's
  width over the column's range (numeric) or (values in the class - 1) / (values in the column - 1)
  (categorical), averaged;
- prosecutor risk: highest 1/|E| and average (classes / rows), share of records whose risk exceeds
  the threshold; journalist risk equals prosecutor risk here, because no population table is given
  (the dataset is taken as its own population); marketer risk: classes / rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from complai.deid.kanon import Constraints, emd, mondrian
from complai.errors import InvalidInput

SUPPRESSED = "*"


@dataclass
class Report:
    rows: int
    quasi_identifiers: list[str]
    sensitive: str | None
    k: int
    l: int | None  # noqa: E741
    l_kind: str
    t: float | None
    achieved: dict[str, Any]
    classes: int
    suppressed_rows: int
    utility: dict[str, Any]
    risk: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _common_ancestor(values: list[str], tree: dict[str, list[str]], universe: list[str]) -> tuple[str, int]:
    """The lowest ancestor all `values` share, and how many values of the column it covers."""
    paths = [tree.get(v, [SUPPRESSED]) for v in values]
    for label in paths[0]:
        if all(label in p for p in paths[1:]):
            covered = sum(1 for v in universe if label in tree.get(v, []))
            return label, max(covered, len(values))
    return SUPPRESSED, len(universe)


def anonymize(
    df: pd.DataFrame,
    quasi: Sequence[str],
    k: int,
    sensitive: str | None = None,
    l: int | None = None,  # noqa: E741
    l_kind: str = "distinct",
    t: float | None = None,
    numeric: Sequence[str] | None = None,
    hierarchies: dict[str, dict[str, list[str]]] | None = None,
    suppress: float = 0.0,
    risk_threshold: float = 0.2,
) -> tuple[pd.DataFrame, Report]:
    """k-anonymise `df` over `quasi`; optionally l-diverse and t-close in `sensitive`.

    `hierarchies[col]` maps each value of a categorical quasi-identifier to its ancestors, most specific
    first (e.g. "Bachelors": ["Undergraduate", "Higher education", "*"]): values are ordered along the
    tree so splits follow it, and a class is labelled by its values' lowest common ancestor.
    """
    hierarchies = hierarchies or {}
    for col, tree in hierarchies.items():
        if col not in quasi or col in (numeric or []):
            raise InvalidInput(f"a hierarchy is given for {col!r}, which is not a categorical quasi-identifier")
        present = {str(v) for v in df[col].dropna().unique()}
        missing_values = sorted(present - set(tree))
        if missing_values:
            raise InvalidInput(f"value(s) {missing_values[:3]} of column {col!r} are not in its hierarchy")
    quasi = list(quasi)
    if not quasi:
        raise InvalidInput("name at least one quasi-identifier")
    missing = [c for c in [*quasi, *([sensitive] if sensitive else [])] if c not in df.columns]
    if missing:
        raise InvalidInput(f"unknown column(s) {missing} (columns: {list(df.columns)})")
    if sensitive in quasi:
        raise InvalidInput(f"{sensitive!r} cannot be both quasi-identifier and sensitive")
    if (l is not None or t is not None) and sensitive is None:
        raise InvalidInput("l-diversity and t-closeness need a sensitive column")
    if not 0 <= suppress < 1:
        raise InvalidInput("suppression limit must be in [0, 1)")
    c = Constraints(k=k, l=l, l_kind=l_kind, t=t)
    n = len(df)
    if k > n:
        raise InvalidInput(f"k={k} is larger than the table ({n} rows)")
    numeric = list(numeric) if numeric is not None else [q for q in quasi if pd.api.types.is_numeric_dtype(df[q])]
    for q in numeric:
        if q not in quasi:
            raise InvalidInput(f"numeric column {q!r} is not a quasi-identifier")
        if not pd.api.types.is_numeric_dtype(df[q]):
            converted = pd.to_numeric(df[q], errors="coerce")
            if converted.isna().any() and not df[q].isna().all():
                raise InvalidInput(f"column {q!r} is not numeric: it cannot be generalised to ranges")
        if df[q].isna().any():
            raise InvalidInput(f"numeric quasi-identifier {q!r} has missing values")
    # encode
    cols, spans, cats = [], [], {}
    for q in quasi:
        if q in numeric:
            v = pd.to_numeric(df[q]).to_numpy(dtype="float64")
            cols.append(v)
            spans.append(float(v.max() - v.min()))
        else:
            values = df[q].astype("object").where(df[q].notna(), None)
            # frequency order: median splits then separate the common values from the rare ones, which
            # keeps more classes to a single value than alphabetical order (measured in benchmarks/deid.py)
            labels = [str(v) for v in values.dropna().astype(str).value_counts().index]
            if q in hierarchies:  # siblings adjacent: sort by the path from the root down to the value
                tree = hierarchies[q]
                labels = sorted(labels, key=lambda v: ([*reversed(tree[v])], v))
            has_na = values.isna().any()
            order = (["(missing)"] if has_na else []) + labels
            index = {lab: i for i, lab in enumerate(order)}
            cats[q] = order
            cols.append(np.array([index["(missing)" if x is None else str(x)] for x in values], dtype="float64"))
            spans.append(float(len(order) - 1))
    codes = np.column_stack(cols)
    s_codes, s_levels, ordered = None, 0, False
    if sensitive is not None:
        sv = df[sensitive]
        ordered = bool(pd.api.types.is_numeric_dtype(sv))
        uniq, inv = np.unique(
            sv.astype("object").where(sv.notna(), "(missing)").astype(str).to_numpy(), return_inverse=True
        )
        if ordered:
            uniq, inv = np.unique(pd.to_numeric(sv).to_numpy(), return_inverse=True)
        s_codes, s_levels = inv.astype("int64"), len(uniq)
        c = Constraints(k=k, l=l, l_kind=l_kind, t=t, sensitive_ordered=ordered)
    # optional suppression of outliers in numeric quasi-identifiers
    keep = np.ones(n, dtype=bool)
    notes: list[str] = []
    if suppress > 0 and numeric:
        outlier = np.zeros(n, dtype=bool)
        for j, q in enumerate(quasi):
            if q in numeric:
                lo, hi = np.quantile(codes[:, j], [0.005, 0.995])
                outlier |= (codes[:, j] < lo) | (codes[:, j] > hi)
        limit = int(suppress * n)
        idx = np.flatnonzero(outlier)
        if len(idx) > limit:
            notes.append(f"{len(idx)} outlier rows exceed the suppression limit of {limit}; none suppressed")
        elif len(idx) >= k:
            keep[idx] = False
        elif len(idx):
            notes.append(f"only {len(idx)} outlier rows (< k): none suppressed")
    kept = np.flatnonzero(keep)
    part = mondrian(
        codes[kept],
        spans,
        c,
        s_codes[kept] if s_codes is not None else None,
        s_levels,
        [q not in numeric for q in quasi],
    )
    classes = [kept[p] for p in part.partitions]
    suppressed = np.flatnonzero(~keep)
    if len(suppressed):
        classes.append(suppressed)
    # generalise
    out = df.copy()
    gen = {q: np.empty(n, dtype=object) for q in quasi}
    loss = np.zeros((n, len(quasi)))
    for cls in classes:
        is_suppressed = len(suppressed) and cls is suppressed
        for j, q in enumerate(quasi):
            if is_suppressed:
                gen[q][cls] = SUPPRESSED
                loss[cls, j] = 1.0
                continue
            vals = codes[cls, j]
            lo, hi = vals.min(), vals.max()
            if q in numeric:
                gen[q][cls] = _fmt(lo) if lo == hi else f"[{_fmt(lo)}-{_fmt(hi)}]"
                loss[cls, j] = (hi - lo) / spans[j] if spans[j] > 0 else 0.0
            else:
                present = sorted({cats[q][int(v)] for v in np.unique(vals)})
                total = len(cats[q])
                covered = len(present)
                if len(present) == 1:
                    label = present[0]
                elif q in hierarchies:
                    label, covered = _common_ancestor(present, hierarchies[q], cats[q])
                elif len(present) == total:
                    label = SUPPRESSED
                else:
                    label = "{" + "|".join(present) + "}"
                gen[q][cls] = label
                loss[cls, j] = (covered - 1) / (total - 1) if total > 1 else 0.0
    for q in quasi:
        out[q] = pd.Series(gen[q], index=df.index, dtype="object")
    sizes = np.array([len(cl) for cl in classes])
    achieved: dict[str, Any] = {"k": int(sizes.min())}
    if s_codes is not None:
        glob = np.bincount(s_codes, minlength=s_levels) / n
        ls, ents, ts = [], [], []
        for cl in classes:
            counts = np.bincount(s_codes[cl], minlength=s_levels)
            ls.append(int(np.count_nonzero(counts)))
            p = counts[counts > 0] / len(cl)
            ents.append(float(math.exp(-(p * np.log(p)).sum())))
            ts.append(emd(counts, glob, ordered))
        achieved.update({"l_distinct": min(ls), "l_entropy": round(min(ents), 6), "t": round(max(ts), 6)})
    class_of = np.empty(n, dtype=np.int64)
    for i, cl in enumerate(classes):
        class_of[cl] = i
    row_risk = 1.0 / sizes[class_of]
    prosecutor = {
        "highest": float(row_risk.max()),
        "average": float(len(classes) / n),
        "records_at_risk": float((row_risk > risk_threshold).mean()),
        "threshold": risk_threshold,
    }
    report = Report(
        rows=n,
        quasi_identifiers=quasi,
        sensitive=sensitive,
        k=k,
        l=l,
        l_kind=l_kind,
        t=t,
        achieved=achieved,
        classes=len(classes),
        suppressed_rows=len(suppressed),
        utility={
            "discernibility": int((sizes.astype(np.int64) ** 2).sum() - len(suppressed) ** 2 + len(suppressed) * n),
            "average_class_size": float(n / len(classes) / k),
            "information_loss": float(loss.mean()),
            "information_loss_by_column": {q: float(loss[:, j].mean()) for j, q in enumerate(quasi)},
        },
        risk={
            "prosecutor": prosecutor,
            "journalist": {**prosecutor, "note": "no population table: equals prosecutor"},
            "marketer": float(len(classes) / n),
        },
        notes=notes + part.notes,
    )
    return out, report
