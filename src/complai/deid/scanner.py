"""Column scanner: for each column of a table, a proposed taxonomy category and whether it is a direct
identifier, a quasi-identifier or sensitive, from its name and from sampling its values through the
analyzer. A proposal to review, not a decision: the evidence is returned with it."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from complai.deid.analyzer import TextAnalyzer

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
