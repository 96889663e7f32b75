"""Column scanner: for each column of a table, a proposed taxonomy category and whether it is a direct
identifier, a quasi-identifier or sensitive, from its name and from sampling its values through the
analyzer. A proposal to review, not a decision: the evidence is returned with it."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import yaml

from complai.deid.analyzer import TextAnalyzer
from complai.vault.schema import PLACEHOLDER  # load_schema refuses a schema that still holds it

# (name pattern, category, identifier, sensitive)
NAME_RULES: list[tuple[str, str, str | None, bool]] = [
    (r"e[-_]?mail", "user.contact.email", "direct", False),
    (r"phone|mobile|cell|tel(ephone)?$|fax", "user.contact.phone_number", "direct", False),
    (r"^(first|last|middle|full|given|family|sur)?_?name$|surname|forename", "user.name", "direct", False),
    (
        r"ssn|social_?security|national_?id|passport|resident_?id|tax_?id|nino",
        "user.government_id.national_identification_number",
        "direct",
        False,
    ),
    (r"iban|account_?(no|number|num)?$|acct|bank_?account", "user.financial.account", "direct", False),
    (r"card|cc_?num|^pan$", "user.financial.credit_card", "direct", False),
    (r"^ip(_?addr(ess)?)?$|ip_address", "user.device.ip_address", "direct", False),
    (r"zip|postal|postcode", "user.contact.address.postal_code", "quasi", False),
    (r"address|street|city|town|^state$|county|region", "user.contact.address", "quasi", False),
    (r"dob|birth", "user.demographic.date_of_birth", "quasi", False),
    (r"^age$|age_?(years|group)", "user.demographic.age", "quasi", False),
    (r"^sex$|gender", "user.demographic.gender", "quasi", False),
    (r"race|ethnic", "user.demographic.race_ethnicity", "quasi", True),
    (r"religio", "user.demographic.religious_belief", None, True),
    (r"diagnos|condition|icd|disease|medical|health", "user.health.diagnosis", None, True),
    (r"income|salary|wage|earning", "user.financial.income", None, True),
    (r"capital|assets|balance", "user.financial.capital", None, False),
    (r"marital|spouse", "user.demographic.marital_status", "quasi", False),
    (r"occupation|job|profession|title", "user.workplace.occupation", "quasi", False),
    (r"education|degree", "user.education", "quasi", False),
    (r"country|nationality|native|citizenship", "user.demographic.nationality", "quasi", False),
    (r"(^|_)id$|customer|client|subject|patient_?id|member", "user.unique_id", "direct", False),
    (r"message|comment|note|text|description|body", "user.content.message", None, False),
]
ENTITY_RULES: dict[str, tuple[str, str | None]] = {
    "EMAIL_ADDRESS": ("user.contact.email", "direct"),
    "PHONE_NUMBER": ("user.contact.phone_number", "direct"),
    "CN_MOBILE": ("user.contact.phone_number", "direct"),
    "CREDIT_CARD": ("user.financial.credit_card", "direct"),
    "IBAN_CODE": ("user.financial.account", "direct"),
    "US_SSN": ("user.government_id.national_identification_number", "direct"),
    "CN_RESIDENT_ID": ("user.government_id.national_identification_number", "direct"),
    "IP_ADDRESS": ("user.device.ip_address", "direct"),
    "PERSON": ("user.name", "direct"),
    "LOCATION": ("user.contact.address", "quasi"),
    "DATE_TIME": ("user.demographic.date_of_birth", "quasi"),
    "URL": ("user.behavior", None),
}
# entities whose patterns are checked (checksums, RFC syntax), so their evidence outweighs a column's
# name: a column called `city` that holds email addresses holds direct identifiers. Phone numbers are
# not among them (a ZIP+4 code parses as one), so a name that says otherwise wins over them.
PRECISE_ENTITIES = {"EMAIL_ADDRESS", "IBAN_CODE", "CREDIT_CARD", "US_SSN", "CN_RESIDENT_ID", "IP_ADDRESS"}
# a personal name as written in a table: two to four capitalised words (initials, particles, hyphens and
# apostrophes allowed), or "Family, Given"
_NAME_WORD = r"(?:[^\W\d_][.]|[^\W\d_][^\W\d_'’.-]*(?:['’-][^\W\d_]+)*\.?)"
_PERSON_NAME = re.compile(
    rf"(?:(?:{_NAME_WORD}) ){{1,3}}{_NAME_WORD}|{_NAME_WORD}(?: {_NAME_WORD})?, {_NAME_WORD}(?: {_NAME_WORD})?"
)
_PARTICLES = {"van", "von", "de", "der", "den", "da", "di", "del", "la", "le", "du", "dos", "bin", "al", "el"}


def _name_shaped(text: str) -> bool:
    text = " ".join(text.split())
    if not _PERSON_NAME.fullmatch(text):
        return False
    words = [w for w in re.split(r"[ ,]+", text) if w]
    return all(w[0].isupper() or w in _PARTICLES for w in words) and sum(w[0].isupper() for w in words) >= 2


@dataclass
class ColumnProposal:
    column: str
    category: str | None
    identifier: str | None
    sensitive: bool
    evidence: list[str] = field(default_factory=list)
    entities: dict[str, float] = field(default_factory=dict)
    # what the sampled values alone show: "direct" when a checked pattern (or, for a column whose name
    # says nothing, any direct identifier's pattern or the shape of personal names) covers most of them
    values_identifier: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def value_texts(values: pd.Series) -> pd.Series | None:
    """The present values as text: strings as they are, integers as digits (and floats that all hold
    integers, as a column of card numbers with one missing value reads), so identifiers read as numbers
    are scanned too; None for other numbers and for booleans."""
    values = values.dropna()
    if pd.api.types.is_bool_dtype(values):
        return None
    if pd.api.types.is_integer_dtype(values):
        return values.astype(str)
    if pd.api.types.is_float_dtype(values):
        arr = values.to_numpy(dtype="float64")
        if np.isfinite(arr).all() and (arr == np.floor(arr)).all():
            return pd.Series([str(int(v)) for v in arr], index=values.index, dtype="object")
        return None
    if pd.api.types.is_numeric_dtype(values):
        return None
    return values.astype(str)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def scan(frame: pd.DataFrame, sample: int = 200, regex_only: bool = False, seed: int = 0) -> list[ColumnProposal]:
    analyzer = TextAnalyzer(regex_only=regex_only)
    out = []
    for col in frame.columns:
        proposal = ColumnProposal(str(col), None, None, False)
        name = _norm(str(col))
        named = False
        for pattern, category, identifier, sensitive in NAME_RULES:
            if re.search(pattern, name):
                proposal.category, proposal.identifier, proposal.sensitive = category, identifier, sensitive
                proposal.evidence.append(f"name matches {pattern!r}")
                named = True
                break
        values = value_texts(frame[col])
        if values is not None and len(values):
            picked = values.sample(min(sample, len(values)), random_state=seed).tolist()
            found = analyzer.analyze_batch(picked)
            hits: Counter[str] = Counter()
            whole: Counter[str] = Counter()
            for text, fs in zip(picked, found, strict=True):
                for entity in {f.entity for f in fs}:
                    hits[entity] += 1
                for f in fs:
                    if f.end - f.start >= 0.8 * len(text.strip()):
                        whole[f.entity] += 1
            proposal.entities = {e: round(n / len(picked), 3) for e, n in hits.most_common()}
            if whole:
                entity, n = whole.most_common(1)[0]
                if n / len(picked) >= 0.5 and entity in ENTITY_RULES:
                    category, identifier = ENTITY_RULES[entity]
                    overrules = identifier == "direct" and (entity in PRECISE_ENTITIES or not named)
                    if overrules:
                        proposal.values_identifier = "direct"
                    if proposal.category is None or proposal.identifier is None or overrules:
                        if proposal.identifier != "direct":
                            proposal.category, proposal.identifier = category, identifier
                    proposal.evidence.append(f"{n / len(picked):.0%} of sampled values are {entity}")
            if not named and proposal.values_identifier is None and "PERSON" not in whole:
                shaped = sum(1 for text in picked if _name_shaped(text))
                distinct = len(set(picked))
                if shaped >= 0.8 * len(picked) and distinct >= 0.5 * len(picked):
                    proposal.category, proposal.identifier = "user.name", "direct"
                    proposal.values_identifier = "direct"
                    proposal.evidence.append(
                        f"{shaped / len(picked):.0%} of sampled values are shaped like personal names "
                        f"({distinct / len(picked):.0%} distinct)"
                    )
            contains = sum(hits.values())
            if proposal.category is None and contains and sum(1 for fs in found if fs) / len(picked) >= 0.1:
                proposal.category = "user.content.message"
                proposal.evidence.append("free text that contains personal data")
            if proposal.category == "user.content.message" and hits:
                proposal.sensitive = True
                proposal.evidence.append(f"contains {', '.join(sorted(hits))}")
        out.append(proposal)
    return out


# --- drafting a dataset schema from a table ---------------------------------------------------------

GENERIC_CATEGORY = "user"  # the taxonomy's root for data about a person, when nothing more specific showed
MIN_VALUE_COUNT = 10  # a category's values are listed only when each occurs at least this often
MAX_CATEGORY_VALUES = 50
_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME_TEXT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?"
)
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass
class FieldDraft:
    """One field of a drafted schema: the proposal, its type, and bounds and values safe to declare."""

    proposal: ColumnProposal
    type: str
    nullable: bool
    bounds: tuple[Any, Any] | None = None
    values: list[str] | None = None
    notes: list[str] = field(default_factory=list)


def infer_type(values: pd.Series) -> str:
    """integer, float, boolean, date, datetime, category, text or string, from the present values."""
    present = values.dropna()
    if present.empty:
        return "string"
    if pd.api.types.is_bool_dtype(present):
        return "boolean"
    if pd.api.types.is_integer_dtype(present):
        return "integer"
    if pd.api.types.is_float_dtype(present):
        arr = present.to_numpy(dtype="float64")
        return "integer" if (np.isfinite(arr).all() and (arr == np.floor(arr)).all()) else "float"
    text = present.astype(str).str.strip()
    if text.str.lower().isin({"true", "false", "yes", "no"}).all():
        return "boolean"
    if text.str.fullmatch(_DATE_TEXT.pattern).all() and pd.to_datetime(text, errors="coerce").notna().all():
        return "date"
    if text.str.fullmatch(_DATETIME_TEXT.pattern).all():
        return "datetime"
    distinct = text.nunique()
    if distinct <= MAX_CATEGORY_VALUES and distinct <= 0.5 * len(text):
        return "category"
    if text.str.len().mean() > 40:
        return "text"
    return "string"


def coarse_bounds(lo: float, hi: float) -> tuple[float, float]:
    """Bounds around [lo, hi] on a coarse public grid: 0 below non-negative data, otherwise the grid step
    (the power of ten below the larger magnitude) at or below lo; the next step strictly above hi. What
    they reveal of the data is which grid cells its extremes fall in, never the extremes."""
    magnitude = max(abs(lo), abs(hi))
    step = 10.0 ** math.floor(math.log10(magnitude)) if magnitude > 0 else 1.0
    low = 0.0 if lo >= 0 else math.floor(lo / step) * step
    return low, (math.floor(hi / step) + 1) * step


def decade_bounds(first: pd.Timestamp, last: pd.Timestamp) -> tuple[str, str]:
    """Dates rounded outward to whole decades: the first day of the decade of `first`, and the first
    day of the decade after that of `last`."""
    return f"{first.year // 10 * 10:04d}-01-01", f"{min(9990, last.year // 10 * 10 + 10):04d}-01-01"


def draft_fields(frame: pd.DataFrame, proposals: list[ColumnProposal], k: int = MIN_VALUE_COUNT) -> list[FieldDraft]:
    """Per column: its type, nullability, coarse bounds for numbers and dates, and the values of a
    category when every one of them occurs at least `k` times."""
    drafts = []
    for proposal in proposals:
        col = frame[proposal.column]
        kind = "text" if proposal.category == "user.content.message" else infer_type(col)
        if proposal.identifier == "direct" and kind in ("integer", "float"):
            kind = "string"  # an identifier written in digits is not a quantity (and keeps its leading zeros)
        d = FieldDraft(proposal, kind, nullable=bool(col.isna().any()))
        present = col.dropna()
        if kind in ("integer", "float") and not present.empty:
            arr = pd.to_numeric(present, errors="coerce").to_numpy(dtype="float64")
            if np.isfinite(arr).all():
                lo, hi = coarse_bounds(float(arr.min()), float(arr.max()))
                d.bounds = (
                    (int(lo), int(hi)) if kind == "integer" or (lo.is_integer() and hi.is_integer()) else (lo, hi)
                )
                d.notes.append("bounds: the data's range rounded outward to a coarse grid; widen to the public range")
        elif kind in ("date", "datetime") and not present.empty:
            stamps = pd.to_datetime(present.astype(str).str.strip(), utc=True, errors="coerce", format="ISO8601")
            if stamps.notna().all():
                d.bounds = decade_bounds(stamps.min(), stamps.max())
                d.notes.append("bounds: whole decades around the data's dates; widen to the public range")
        elif kind == "category":
            counts = present.astype(str).str.strip().value_counts()
            if (counts >= k).all():
                d.values = sorted(counts.index.tolist())
            else:
                d.notes.append(
                    f"values: not listed, as some occur fewer than {k} times (a rare value can identify "
                    "someone); declare the public set of values yourself (GROUP BY and features need them)"
                )
        if not _FIELD_NAME.match(proposal.column):
            d.notes.append("rename: field names are lower-case letters, digits and _ (the CSV header too)")
        drafts.append(d)
    return drafts


def _scalar(value: Any) -> str:
    """A YAML scalar: plain where YAML reads it back as the same string, else quoted (JSON's quoting is
    valid YAML), so a value such as `yes`, `1` or `null` stays a string."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*", value):
        if yaml.safe_load(value) == value:
            return value
    return json.dumps(value)


def draft_schema_yaml(name: str, drafts: list[FieldDraft], source: str, k: int = MIN_VALUE_COUNT) -> str:
    """A dataset schema as commented YAML: fields proposed from the data; subject column, jurisdiction,
    retention and purposes left as FILL-IN placeholders that `complai dataset create` refuses."""
    ids = [d.proposal.column for d in drafts if d.proposal.category == "user.unique_id"]
    out = [
        f"# Dataset schema drafted from {source} by `complai deid scan --schema-out`: a proposal to review.",
        "# Reference: docs/schema.md. The vocabulary: `complai taxonomy list`.",
        f"# Replace every {PLACEHOLDER}: `complai dataset create` refuses this file until then.",
        "#",
        "# Privacy: bounds and value lists are declarations, not facts copied from the data (the exact",
        "# minimum or maximum of a column can single someone out). Bounds here are the data's range rounded",
        "# outward to a coarse grid (0 or a power-of-ten step for numbers, whole decades for dates), and a",
        f"# category lists its values only if each occurs at least {k} times. Prefer the public range",
        "# (an age from 0 to 120) to the data's.",
        f"name: {_scalar(name)}",
        "# the kind of person a row is about: `complai taxonomy list subjects`",
        "subject_type: customer",
        "# the field naming the person each row is about"
        + (f" (proposed: {', '.join(ids)})" if ids else "")
        + "; its values are kept as keyed pseudonyms",
        f"subject_column: {PLACEHOLDER}",
        "# where the subjects' data is governed: `complai taxonomy list jurisdictions` (EU, UK, US-CA, US, CN)",
        f"jurisdiction: {PLACEHOLDER}",
        "# how long a record is kept, an ISO 8601 duration: P30D, P6M, P7Y",
        f"retention: {PLACEHOLDER}",
        "# what the data may be used for, each with its lawful basis, e.g. `analytics: gdpr.legitimate_interests`:",
        "# `complai taxonomy list purposes` and `complai taxonomy list bases`",
        "purposes:",
        f"  {PLACEHOLDER}: {PLACEHOLDER}",
        "fields:",
    ]
    for d in drafts:
        p = d.proposal
        out.append(f"  # {p.column}: " + ("; ".join(p.evidence) if p.evidence else "no evidence; review the category"))
        out.extend(f"  # {note}" for note in d.notes)
        out.append(f"  - name: {_scalar(p.column)}")
        out.append(f"    type: {d.type}")
        out.append(f"    category: {p.category or GENERIC_CATEGORY}")
        if p.identifier:
            out.append(f"    identifier: {p.identifier}")
        if p.sensitive:
            out.append("    sensitive: true")
        if not d.nullable:
            out.append("    nullable: false")
        if d.bounds is not None:  # dates plain (YAML reads 1950-01-01 as a date, which the schema takes)
            show = str if d.type in ("date", "datetime") else _scalar
            out.append(f"    min: {show(d.bounds[0])}")
            out.append(f"    max: {show(d.bounds[1])}")
        if d.values is not None:
            out.append(f"    values: [{', '.join(_scalar(v) for v in d.values)}]")
    return "\n".join(out) + "\n"
