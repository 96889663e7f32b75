"""Column scanner: for each column of a table, a proposed taxonomy category and whether it is a direct
identifier, a quasi-identifier or sensitive, from its name and from sampling its values through the
analyzer. A proposal to review, not a decision: the evidence is returned with it."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class ColumnProposal:
    column: str
    category: str | None
    identifier: str | None
    sensitive: bool
    evidence: list[str] = field(default_factory=list)
    entities: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def scan(frame: pd.DataFrame, sample: int = 200, regex_only: bool = False, seed: int = 0) -> list[ColumnProposal]:
    analyzer = TextAnalyzer(regex_only=regex_only)
    out = []
    for col in frame.columns:
        proposal = ColumnProposal(str(col), None, None, False)
        name = _norm(str(col))
        for pattern, category, identifier, sensitive in NAME_RULES:
            if re.search(pattern, name):
                proposal.category, proposal.identifier, proposal.sensitive = category, identifier, sensitive
                proposal.evidence.append(f"name matches {pattern!r}")
                break
        values = frame[col].dropna()
        if len(values) and not pd.api.types.is_numeric_dtype(values):
            picked = values.sample(min(sample, len(values)), random_state=seed).astype(str).tolist()
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
                    if proposal.category is None or proposal.identifier is None:
                        proposal.category, proposal.identifier = category, identifier
                    proposal.evidence.append(f"{n / len(picked):.0%} of sampled values are {entity}")
            contains = sum(hits.values())
            if proposal.category is None and contains and sum(1 for fs in found if fs) / len(picked) >= 0.1:
                proposal.category = "user.content.message"
                proposal.evidence.append("free text that contains personal data")
            if proposal.category == "user.content.message" and hits:
                proposal.sensitive = True
                proposal.evidence.append(f"contains {', '.join(sorted(hits))}")
        out.append(proposal)
    return out
