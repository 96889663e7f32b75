"""Tabular k-anonymity for DataFrames: Mondrian partitions, generalised quasi-identifiers, utility and
re-identification risk. One output row per input row; every column that is not a quasi-identifier is
kept as it was (anonypy drops columns and aggregates rows: users of it complain), except direct
identifiers: a release that claims k-anonymity cannot carry names, emails or customer numbers, so the
columns the schema or the column scanner marks as direct identifiers are dropped (or replaced by keyed
pseudonyms) unless the caller keeps them by name, and the report says which and warns of kept ones.

Dates (ISO `YYYY-MM-DD`, with or without a time, or datetime values) are detected and generalised as
ranges, never as sets of exact dates: a class's label is its date when all its records share it,
else the calendar month (`1952-11`), year (`1952`), span of years (`1952-1955`) or span of months
(`[1952-11-01, 1955-08-31]`) that holds all of them. Information loss is the label's span in days over
the column's.

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

import calendar
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from complai.deid.kanon import Constraints, emd, mondrian
from complai.deid.recognizers import find_patterns
from complai.deid.scanner import scan, value_texts
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
    # what was done with direct identifiers: dropped, pseudonymized, kept (by request) and why each
    # column counts as one (the schema, or the scanner's evidence)
    direct_identifiers: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ][0-9:.,]+(?: ?(?:Z|[A-Z]{2,5}|[+-]\d{2}(?::?\d{2})?))?)?")
# dates written otherwise: three numbers with - / or . between them (any order of year, month and day),
# or a compact year-month-day, each followed by anything (a time, a zone)
_NUMERIC_DATE = re.compile(r"(\d{1,4})[-/.](\d{1,2})[-/.](\d{1,4})(?:[T ,].*)?")
_COMPACT_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})(T\d{2}.*)?")
_PSEUDONYM = re.compile(r"<[A-Z_]+_[0-9a-f]{12}>")


def date_days(values: pd.Series) -> np.ndarray | None:
    """Each value's date as a day number (proleptic Gregorian ordinal) when every present value is an
    ISO date (`YYYY-MM-DD`, optionally with a time: the date as written counts) or a date/datetime;
    None otherwise. Missing values become NaN."""
    present = values.dropna()
    if present.empty or pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return None
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT:
            continue
        if isinstance(v, datetime | pd.Timestamp):
            out[i] = v.date().toordinal()
        elif isinstance(v, date):
            out[i] = v.toordinal()
        elif isinstance(v, str) and _ISO_DATE.fullmatch(v.strip()):
            try:
                out[i] = date.fromisoformat(v.strip()[:10]).toordinal()
            except ValueError:
                return None
        else:
            return None
    return out


def _valid_date(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def _date_like(text: str) -> bool:
    """`text` is a date in some format: ISO, numbers with separators in any order of year, month and
    day, compact `YYYYMMDD` (with a time, or a year from 1800 to 2199), or any date the date recognizer
    finds over most of it."""
    text = text.strip()
    if _ISO_DATE.fullmatch(text):
        return True
    m = _NUMERIC_DATE.fullmatch(text)
    if m:
        a, b, c = m.group(1, 2, 3)
        orders = [(int(a), int(b), int(c))] if len(a) == 4 else []
        if len(c) in (2, 4):
            year = int(c) + (1900 if len(c) == 2 else 0)
            orders += [(year, int(b), int(a)), (year, int(a), int(b))]
        if any(_valid_date(*o) for o in orders):
            return True
    m = _COMPACT_DATE.fullmatch(text)
    if m and _valid_date(int(m[1]), int(m[2]), int(m[3])) and (m[4] or 1800 <= int(m[1]) < 2200):
        return True
    return any(f.end - f.start >= 0.8 * len(text) for f in find_patterns(text, ["DATE_TIME"]))


def _looks_like_dates(values: pd.Series) -> bool:
    """Any present value is a date in some format (`_date_like`): one is enough, since a set label would
    publish it exactly."""
    present = values.dropna().astype(str).str.strip().unique()
    return any(_date_like(v) for v in present)


def date_label(lo: int, hi: int) -> tuple[str, int, int]:
    """The label for a class whose dates run from day `lo` to day `hi`, and the first and last day it
    denotes: the date itself, else the month, year, years or months that hold both."""
    a, b = date.fromordinal(lo), date.fromordinal(hi)
    if a == b:
        return a.isoformat(), lo, hi
    start = a.replace(day=1)
    end = b.replace(day=calendar.monthrange(b.year, b.month)[1])
    if (a.year, a.month) == (b.year, b.month):
        return f"{a.year:04d}-{a.month:02d}", start.toordinal(), end.toordinal()
    if start.month == 1 and end.month == 12:
        label = f"{a.year:04d}" if a.year == b.year else f"{a.year:04d}-{b.year:04d}"
        return label, start.toordinal(), end.toordinal()
    return f"[{start.isoformat()}, {end.isoformat()}]", start.toordinal(), end.toordinal()


def date_range(label: str) -> tuple[date, date]:
    """The first and last day a released date label denotes (the inverse of `date_label`)."""
    label = label.strip()
    if label.startswith("["):
        first, last = (x.strip() for x in label[1:-1].split(","))
        return date.fromisoformat(first), date.fromisoformat(last)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", label):
        d = date.fromisoformat(label)
        return d, d
    if re.fullmatch(r"\d{4}-\d{2}", label):
        y, m = int(label[:4]), int(label[5:])
        return date(y, m, 1), date(y, m, calendar.monthrange(y, m)[1])
    if re.fullmatch(r"\d{4}(?:-\d{4})?", label):
        return date(int(label[:4]), 1, 1), date(int(label[-4:]), 12, 31)
    raise InvalidInput(f"{label!r} is not a date label")


# entities whose patterns are checked (RFC syntax, checksums): one in any value makes the column hold
# direct identifiers, whatever the other values are (placeholders, free text)
_CONTAINED = ("EMAIL_ADDRESS", "IBAN_CODE", "CREDIT_CARD", "US_SSN", "CN_RESIDENT_ID")


def _contains_direct(values: pd.Series) -> str | None:
    """Why `values` hold direct identifiers when any distinct value contains an email address, an
    IBAN, a payment card or a national id (every value is checked, not a sample); None otherwise."""
    present = value_texts(values)
    if present is None:
        return None
    counts = present.value_counts()
    hits: Counter[str] = Counter()
    rows = 0
    for text, n in counts.items():
        found = {f.entity for f in find_patterns(str(text), _CONTAINED)}
        for entity in found:
            hits[entity] += int(n)
        rows += int(n) if found else 0
    if not rows:
        return None
    return f"{rows} of {len(present)} values contain {', '.join(sorted(hits))}"


def find_direct_identifiers(
    df: pd.DataFrame,
    exclude: Sequence[str] = (),
    schema: Mapping[str, str | None] | None = None,
    free_text: dict[str, str] | None = None,
) -> dict[str, str]:
    """Columns that are direct identifiers, each with the reason: the schema's declaration (`schema`
    maps declared field names to their identifier kind) for the columns it declares, the column
    scanner's classification (names, and sampled values through the pattern recognizers) for the rest.
    Columns in `exclude` (the quasi-identifiers and the sensitive attribute) and columns already made of
    keyed pseudonyms are left out. `free_text`, when given, receives the other undeclared columns the
    scanner finds to be free text holding personal data (names, phone numbers...), with what it found."""
    schema = schema or {}
    found: dict[str, str] = {}
    undeclared = [c for c in df.columns if str(c) not in schema and c not in exclude]
    for col in df.columns:
        if col in exclude or str(col) not in schema:
            continue
        if schema[str(col)] == "direct":
            found[col] = "declared a direct identifier by the schema"
    if undeclared:
        for col, proposal in zip(undeclared, scan(df[undeclared], regex_only=True), strict=True):
            if proposal.identifier == "direct":
                found[col] = "scanner: " + "; ".join(proposal.evidence)
            elif (contained := _contains_direct(df[col])) is not None:
                found[col] = "scanner: " + contained
            elif free_text is not None and proposal.category == "user.content.message" and proposal.entities:
                free_text[col] = ", ".join(sorted(proposal.entities))
    for col in list(found):
        present = df[col].dropna()
        if len(present) and present.astype(str).map(_PSEUDONYM.fullmatch).notna().all():
            del found[col]  # already keyed pseudonyms (a governed read's pseudonymisation)
    return found


def _named_direct_identifiers(
    df: pd.DataFrame, named: Sequence[str], schema: Mapping[str, str | None], dates: Sequence[str] = ()
) -> dict[str, str]:
    """Among the quasi-identifiers and the sensitive attribute, those the schema declares direct and,
    among the ones it does not declare, those whose sampled values the scanner finds to be direct
    identifiers (checked patterns such as emails and IBANs, or the shape of personal names). Date
    columns (`dates`, generalised as ranges) are not scanned: the phone pattern matches ISO dates."""
    found = {c: "declared a direct identifier by the schema" for c in named if schema.get(str(c)) == "direct"}
    undeclared = [c for c in dict.fromkeys(named) if str(c) not in schema and c not in dates]
    if undeclared:
        for col, proposal in zip(undeclared, scan(df[undeclared], regex_only=True), strict=True):
            if proposal.values_identifier == "direct":
                found[col] = "scanner: " + "; ".join(proposal.evidence)
            elif (contained := _contains_direct(df[col])) is not None:
                found[col] = "scanner: " + contained
    return found


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
    schema: Mapping[str, str | None] | None = None,
    keep: Sequence[str] = (),
    direct_identifiers: str = "drop",
    pseudonymize: Callable[[str], str] | None = None,
) -> tuple[pd.DataFrame, Report]:
    """k-anonymise `df` over `quasi`; optionally l-diverse and t-close in `sensitive`.

    Direct identifiers (`find_direct_identifiers`: `schema` maps field names to their declared
    identifier kind; the scanner classifies the columns it does not declare) are dropped, or with
    `direct_identifiers="pseudonymize"` replaced by `pseudonymize(value)` (a keyed pseudonym), unless
    named in `keep`: kept ones are named in the report with a warning.

    `hierarchies[col]` maps each value of a categorical quasi-identifier to its ancestors, most specific
    first (e.g. "Bachelors": ["Undergraduate", "Higher education", "*"]): values are ordered along the
    tree so splits follow it, and a class is labelled by its values' lowest common ancestor.
    """
    hierarchies = hierarchies or {}
    for col, tree in hierarchies.items():
        if col not in quasi or col in (numeric or []):
            raise InvalidInput(f"a hierarchy is given for {col!r}, which is not a categorical quasi-identifier")
        missing_values = sorted({str(v) for v in df[col].dropna().unique()} - set(tree))
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
    unknown_keep = [c for c in keep if c not in df.columns]
    if unknown_keep:
        raise InvalidInput(f"unknown column(s) to keep {unknown_keep} (columns: {list(df.columns)})")
    if direct_identifiers not in ("drop", "pseudonymize"):
        raise InvalidInput("direct identifiers are dropped ('drop') or pseudonymised ('pseudonymize')")
    if direct_identifiers == "pseudonymize" and pseudonymize is None:
        raise InvalidInput("pseudonymising direct identifiers needs a keyed pseudonym function (a session's)")
    named = [*quasi, *([sensitive] if sensitive else [])]
    declared_direct = [c for c in named if (schema or {}).get(str(c)) == "direct" and c not in keep]
    if declared_direct:
        raise InvalidInput(
            f"column(s) {declared_direct} are declared direct identifiers by the schema: they cannot be "
            "released as quasi-identifiers or sensitive attribute unless kept explicitly"
        )
    free_text: dict[str, str] = {}
    direct = find_direct_identifiers(df, exclude=named, schema=schema, free_text=free_text)
    kept_direct = [c for c in direct if c in keep]
    handled = [c for c in direct if c not in keep]
    if (l is not None or t is not None) and sensitive is None:
        raise InvalidInput("l-diversity and t-closeness need a sensitive column")
    if not 0 <= suppress < 1:
        raise InvalidInput("suppression limit must be in [0, 1)")
    c = Constraints(k=k, l=l, l_kind=l_kind, t=t)
    n = len(df)
    if k > n:
        raise InvalidInput(f"k={k} is larger than the table ({n} rows)")
    # dates generalise as ranges, never as sets of exact dates (which would publish every one)
    dates = {}
    for q in quasi:
        if q not in hierarchies and not pd.api.types.is_numeric_dtype(df[q]):
            days = date_days(df[q])
            if days is None and _looks_like_dates(df[q]):
                raise InvalidInput(
                    f"column {q!r} holds dates but not every value is an ISO date (YYYY-MM-DD): convert it "
                    "(dates generalise as ranges only then), or give it a hierarchy"
                )
            if days is not None:
                if np.isnan(days).any():
                    raise InvalidInput(f"date quasi-identifier {q!r} has missing values")
                dates[q] = days
    # a named column whose values are direct identifiers would be released as sets of them, or as they
    # are: refused unless kept by name
    named_direct = _named_direct_identifiers(df, named, schema or {}, dates=list(dates))
    refused = [c for c in named_direct if c not in keep]
    if refused:
        raise InvalidInput(
            f"column(s) {refused} hold direct identifiers ({'; '.join(named_direct[c] for c in refused)}): "
            "they cannot be released as quasi-identifiers or sensitive attribute unless kept explicitly"
        )
    direct = {**named_direct, **direct}
    kept_direct = [c for c in direct if c in keep]
    numeric = list(numeric) if numeric is not None else [q for q in quasi if pd.api.types.is_numeric_dtype(df[q])]
    numeric = [*[q for q in numeric if q not in dates], *dates]
    for q in [q for q in numeric if q not in dates]:
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
        if q in dates:
            v = dates[q]
            cols.append(v)
            spans.append(float(v.max() - v.min()))
        elif q in numeric:
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
    retained = np.ones(n, dtype=bool)
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
            retained[idx] = False
        elif len(idx):
            notes.append(f"only {len(idx)} outlier rows (< k): none suppressed")
    kept = np.flatnonzero(retained)
    part = mondrian(
        codes[kept],
        spans,
        c,
        s_codes[kept] if s_codes is not None else None,
        s_levels,
        [q not in numeric for q in quasi],
    )
    classes = [kept[p] for p in part.partitions]
    suppressed = np.flatnonzero(~retained)
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
            if q in dates:
                label, first, last = date_label(int(lo), int(hi))
                gen[q][cls] = label
                loss[cls, j] = min(1.0, (last - first) / spans[j]) if spans[j] > 0 else 0.0
            elif q in numeric:
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
    # direct identifiers: dropped or pseudonymised; kept only by name, and then the report warns
    pseudonymized = []
    if direct_identifiers == "pseudonymize" and pseudonymize is not None:
        for col in handled:
            out[col] = [None if pd.isna(v) else pseudonymize(str(v)) for v in df[col]]
            pseudonymized.append(col)
        dropped = []
    else:
        dropped = list(handled)
        out = out.drop(columns=dropped)
    loose = [
        c
        for c in out.columns
        if c not in named
        and c not in direct
        and (
            (schema or {}).get(str(c)) == "quasi"
            or (not pd.api.types.is_numeric_dtype(df[c]) and _looks_like_dates(df[c]))
        )
    ]
    if loose:
        notes.append(
            f"WARNING: column(s) {', '.join(map(str, loose))} hold dates or are declared quasi-identifiers and are "
            f"released as they are: k={k} holds over the named quasi-identifiers only; name them among the "
            "quasi-identifiers, or drop them first"
        )
    if free_text:
        notes.append(
            "WARNING: free text released as it is holds personal data: "
            + "; ".join(f"{c} ({found})" for c, found in free_text.items())
            + ": de-identify it first (`complai deid file`, `deid text`) or drop it"
        )
    if kept_direct:
        notes.append(
            f"WARNING: direct identifier(s) {', '.join(map(str, kept_direct))} kept by request: the release "
            "identifies people directly and is not anonymous, whatever k it achieves"
        )
    sizes = np.array([len(cl) for cl in classes])
    achieved: dict[str, Any] = {"k": int(sizes.min())}
    if s_codes is not None:
        achieved.update(_diversity(s_codes, s_levels, classes, ordered))
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
        direct_identifiers={
            "dropped": dropped,
            "pseudonymized": pseudonymized,
            "kept": kept_direct,
            "reasons": {str(c): direct[c] for c in direct},
        },
    )
    return out, report


def _diversity(codes: np.ndarray, levels: int, classes: Sequence[np.ndarray], ordered: bool) -> dict[str, Any]:
    """l (distinct and entropy, the least over the classes) and t (the greatest distance of a class's
    distribution of the sensitive codes from the whole table's) of `classes` (row indices into `codes`)."""
    glob = np.bincount(codes, minlength=levels) / len(codes)
    ls, ents, ts = [], [], []
    for cl in classes:
        counts = np.bincount(codes[cl], minlength=levels)
        ls.append(int(np.count_nonzero(counts)))
        p = counts[counts > 0] / len(cl)
        ents.append(float(math.exp(-(p * np.log(p)).sum())))
        ts.append(emd(counts, glob, ordered))
    return {"l_distinct": min(ls), "l_entropy": round(min(ents), 6), "t": round(max(ts), 6)}


def check_measured(columns: Sequence[Any], quasi: Sequence[str], sensitive: str | None) -> None:
    """InvalidInput unless `quasi` (at least one) and `sensitive` (not among them) are columns of the table."""
    unknown = [c for c in [*quasi, *([sensitive] if sensitive else [])] if c not in columns]
    if unknown:
        raise InvalidInput(f"unknown column(s): {', '.join(map(str, unknown))}")
    if not quasi:
        raise InvalidInput("name at least one quasi-identifier")
    if sensitive in quasi:
        raise InvalidInput("the sensitive column cannot be a quasi-identifier")


def measure(
    df: pd.DataFrame, quasi: Sequence[str], sensitive: str | None = None, ordered: bool = False
) -> dict[str, Any]:
    """What a table achieves as it is (no generalisation): the equivalence classes of its `quasi` values
    (a missing value is a value of its own) and, with `sensitive`, the diversity and closeness of its
    values in each class. {"rows", "classes", "k"} and with `sensitive` {"l_distinct", "l_entropy",
    "t"}: the least class size, the least number of distinct sensitive values in a class, the least
    exp(entropy) of a class, and the greatest earth mover's distance between a class's sensitive
    distribution and the table's, as `anonymize` reports them (6 decimals). `ordered` measures t
    along the sensitive values' order (missing last); otherwise every two values are one apart."""
    quasi = list(quasi)
    check_measured(df.columns, quasi, sensitive)
    if len(df) == 0:
        raise InvalidInput("the table has no rows to measure")
    n = len(df)
    groups = df.groupby(quasi, dropna=False, sort=False, observed=True).indices
    classes = [np.asarray(ix) for ix in groups.values()]
    out: dict[str, Any] = {"rows": n, "classes": len(classes), "k": int(min(len(c) for c in classes))}
    if sensitive is None:
        return out
    sv = df[sensitive]
    present = sv[sv.notna()]
    levels = sorted(set(present.tolist()))
    index = {v: i for i, v in enumerate(levels)}
    codes = np.array([index[v] if pd.notna(v) else len(levels) for v in sv.tolist()], dtype=np.int64)
    m = len(levels) + int(bool(sv.isna().any()))
    out.update(_diversity(codes, m, classes, ordered))
    return out
