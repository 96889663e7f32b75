"""Dataset schemas: fields with types, taxonomy categories and identifier flags; purposes, retention
(ISO 8601 duration) and jurisdiction. Validated against the taxonomy; unknown keys are refused."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from dateutil.relativedelta import relativedelta
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from complai.crypto.digest import digest_text
from complai.errors import InvalidInput
from complai.inputs import parse_yaml, read_text_input
from complai.taxonomy import Taxonomy

FieldType = Literal["integer", "float", "string", "category", "boolean", "date", "datetime", "text"]
BOUND_LIMIT = 2.0**53  # declared min/max: finite and within +-2^53 (what DP noise calibration accepts)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DURATION = re.compile(r"^P(?:(\d{1,9})Y)?(?:(\d{1,9})M)?(?:(\d{1,9})W)?(?:(\d{1,9})D)?$")
# The longest duration anything takes (retention, token and agreement expiry): a century. Longer ones are
# refused rather than overflowing a date, or quietly meaning "forever".
MAX_DURATION_YEARS = 100
_MAX_DURATION_DAYS = MAX_DURATION_YEARS * 366


def parse_retention(text: str, what: str = "duration") -> relativedelta:
    """ISO 8601 date duration (PnYnMnWnD) of at most MAX_DURATION_YEARS; calendar-aware when added to a
    date. `what` names it in the error (e.g. "--expires")."""
    m = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if not m or text == "P" or not any(m.groups()):
        raise InvalidInput(f"{what} {text!r} is not an ISO 8601 duration such as P365D, P6M or P7Y")
    years, months, weeks, days = (int(g) if g else 0 for g in m.groups())
    if (years * 12 + months) / 12 * 365.25 + weeks * 7 + days > _MAX_DURATION_DAYS:
        raise InvalidInput(f"{what} {text!r} is longer than {MAX_DURATION_YEARS} years")
    return relativedelta(years=years, months=months, days=days + 7 * weeks)


def retention_deadline(start: datetime, retention: str, what: str = "duration") -> datetime:
    return start + parse_retention(retention, what)


EPOCH = date(1970, 1, 1)  # dates enter DP queries and bounds checks as days since this day
_ISO_BOUND = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ].+)?$")


def date_bound(value: Any, ftype: str) -> str:
    """A date or datetime field's declared bound as ISO 8601 text: YYYY-MM-DD for a date, and for a
    datetime YYYY-MM-DDTHH:MM:SSZ (UTC; a value without an offset is read as UTC). ValueError otherwise."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and _ISO_BOUND.match(value.strip()):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" else text)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 {ftype}") from None
    else:
        raise ValueError(f"bounds of a {ftype} field are ISO 8601 dates such as 1900-01-01, not {value!r}")
    if ftype == "date":
        if isinstance(value, datetime) or (isinstance(value, str) and len(value.strip()) > 10):
            raise ValueError(f"bounds of a date field are dates without a time, not {value!r}")
        return moment.date().isoformat()
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds" if not moment.microsecond else "microseconds") + "Z"


def days_since_epoch(text: str) -> float:
    """An ISO 8601 date or UTC datetime (as the vault stores them, or as date_bound writes them) as days
    since 1970-01-01: whole days for a date, fractional for a time of day."""
    if len(text) == 10:
        return float((date.fromisoformat(text) - EPOCH).days)
    moment = datetime.fromisoformat(text[:-1] if text.endswith("Z") else text).replace(tzinfo=None)
    return (moment - datetime(1970, 1, 1)).total_seconds() / 86400.0


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: FieldType
    category: str
    identifier: Literal["direct", "quasi"] | None = None
    sensitive: bool = False
    nullable: bool = True
    # numbers for integer and float fields; ISO 8601 text for date and datetime fields
    min: float | str | None = Field(default=None, union_mode="left_to_right")
    max: float | str | None = Field(default=None, union_mode="left_to_right")
    values: list[str] | None = None
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _date_bounds(cls, data: Any) -> Any:
        """Date and datetime bounds in their one written form (YAML reads 1900-01-01 as a date)."""
        if isinstance(data, dict) and data.get("type") in ("date", "datetime"):
            data = dict(data)
            for which in ("min", "max"):
                if data.get(which) is not None:
                    try:
                        data[which] = date_bound(data[which], str(data["type"]))
                    except ValueError as exc:
                        raise ValueError(f"field {data.get('name')}: {which}: {exc}") from None
        return data

    @property
    def numeric_bounds(self) -> tuple[float | None, float | None]:
        """The declared bounds as numbers: as given for numeric fields, days since 1970-01-01 for dates."""
        return (
            None if self.min is None else self._number(self.min),
            None if self.max is None else self._number(self.max),
        )

    @staticmethod
    def _number(bound: float | str) -> float:
        return days_since_epoch(bound) if isinstance(bound, str) else float(bound)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("field names are lower-case letters, digits and _ (max 63)")
        return v

    @model_validator(mode="after")
    def _bounds(self) -> FieldSpec:
        numeric = self.type in ("integer", "float")
        if (self.min is not None or self.max is not None) and not numeric and self.type not in ("date", "datetime"):
            raise ValueError(f"field {self.name}: min/max apply to numeric fields only (integer, float) and to dates")
        for which, bound in (("min", self.min), ("max", self.max)):
            if numeric and isinstance(bound, str):
                raise ValueError(f"field {self.name}: {which} of a numeric field is a number, not {bound!r}")
            # DP noise is calibrated to these bounds: a NaN or infinite one calibrates nothing
            if isinstance(bound, float) and not (math.isfinite(bound) and abs(bound) <= BOUND_LIMIT):
                raise ValueError(f"field {self.name}: {which} must be a finite number within ±2^53")
        lo, hi = self.numeric_bounds
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"field {self.name}: min is greater than max")
        if self.values is not None:
            if not self.values:
                raise ValueError(f"field {self.name}: values, when given, lists at least one value")
            if len(set(self.values)) != len(self.values):
                raise ValueError(f"field {self.name}: values are listed more than once")
        return self


DeidOperator = Literal["redact", "replace", "mask", "hash", "tokenize", "date_shift", "generalize"]


class DeidSpec(BaseModel):
    """The de-identification a purpose requires of a governed read (data minimisation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drop_direct_identifiers: bool = False
    pseudonymize: list[str] = []
    text: dict[str, DeidOperator] = {}
    k: int | None = None

    def merged(self, other: DeidSpec | None, direct: Collection[str] = ()) -> DeidSpec:
        """Both specs' protections (a caller can add to what the dataset requires, never remove). `direct`
        names the dataset's direct identifiers: where this (the declared) spec drops them, a caller's
        `pseudonymize` cannot spare one from the drop (a pseudonym is the same in every dataset and
        purpose, so a dropped e-mail address brought back as one would be a key to join on); only the
        declared spec's own `pseudonymize` keeps a direct identifier."""
        if other is None:
            return self
        ks = [x for x in (self.k, other.k) if x is not None]
        asked = set(other.pseudonymize)
        if self.drop_direct_identifiers:
            asked -= set(direct) - set(self.pseudonymize)
        return DeidSpec(
            drop_direct_identifiers=self.drop_direct_identifiers or other.drop_direct_identifiers,
            pseudonymize=sorted(set(self.pseudonymize) | asked),
            text={**other.text, **self.text},
            k=max(ks) if ks else None,
        )

    def is_empty(self) -> bool:
        return not (self.drop_direct_identifiers or self.pseudonymize or self.text or self.k)


class DatasetSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str | None = None
    subject_type: str = "customer"
    subject_column: str
    jurisdiction: str
    retention: str
    # purpose -> lawful basis (taxonomy legal_bases); a plain list takes the jurisdiction's default basis
    purposes: dict[str, str | None]
    fields: list[FieldSpec]
    # purpose -> de-identification every governed read for that purpose gets
    deidentify: dict[str, DeidSpec] = {}
    # the field(s) whose values name one record (an order id): an ingest stores a keyed digest of them
    # per record and refuses, skips, or supersedes a record whose key is already stored (vault/ingest.py)
    record_key: list[str] | None = None

    @field_validator("record_key", mode="before")
    @classmethod
    def _one_key_field(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @field_validator("purposes", mode="before")
    @classmethod
    def _purpose_list(cls, v: object) -> object:
        if isinstance(v, list):
            return {p: None for p in v}
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("dataset names are lower-case letters, digits and _ (max 63)")
        return v

    @model_validator(mode="after")
    def _structure(self) -> DatasetSchema:
        names = [f.name for f in self.fields]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate field(s) {sorted(dupes)}")
        if self.subject_column not in names:
            raise ValueError(f"subject_column {self.subject_column!r} is not one of the fields")
        if not self.purposes:
            raise ValueError("a dataset needs at least one allowed purpose")
        parse_retention(self.retention, "retention")
        for purpose, spec in self.deidentify.items():
            if purpose not in self.purposes:
                raise ValueError(f"deidentify names purpose {purpose!r}, which the dataset does not allow")
            for col in [*spec.pseudonymize, *spec.text]:
                if col not in names:
                    raise ValueError(f"deidentify for {purpose}: no field {col!r}")
            if spec.k is not None and spec.k < 2:
                raise ValueError(f"deidentify for {purpose}: k must be at least 2")
        if self.record_key is not None:
            if not self.record_key or len(set(self.record_key)) != len(self.record_key):
                raise ValueError("record_key names one or more distinct fields")
            by_name = {f.name: f for f in self.fields}
            for name in self.record_key:
                if name not in by_name:
                    raise ValueError(f"record_key: no field {name!r}")
                if by_name[name].nullable and name != self.subject_column:
                    raise ValueError(f"record_key: field {name!r} must be declared nullable: false")
        return self

    def direct_identifiers(self) -> list[str]:
        """The fields declared direct identifiers."""
        return [f.name for f in self.fields if f.identifier == "direct"]

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise InvalidInput(f"dataset {self.name} has no field {name!r}")

    def basis(self, purpose: str) -> str:
        """The lawful basis declared for a purpose (after load_schema filled the defaults)."""
        if purpose not in self.purposes:
            raise InvalidInput(f"purpose {purpose!r} is not allowed for dataset {self.name}")
        basis = self.purposes[purpose]
        assert basis is not None
        return basis

    def check_taxonomy(self, taxonomy: Taxonomy) -> None:
        taxonomy.jurisdiction(self.jurisdiction)
        taxonomy.get("data_subjects", self.subject_type)
        for p, basis in self.purposes.items():
            taxonomy.purpose(p)
            if basis is not None:
                try:
                    taxonomy.legal_basis(basis)
                except InvalidInput as exc:
                    raise InvalidInput(f"purpose {p}: {exc}") from None
        for f in self.fields:
            try:
                taxonomy.category(f.category)
            except InvalidInput as exc:
                raise InvalidInput(f"field {f.name}: {exc}") from None

    def canonical_json(self) -> str:
        data = self.model_dump(mode="json")
        if data.get("record_key") is None:  # schemas without one keep the digest they always had
            data.pop("record_key", None)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return digest_text(self.canonical_json())


# what a drafted schema (`complai deid scan --schema-out`) holds where only its author can decide
PLACEHOLDER = "FILL-IN"


def _holds_placeholder(value: object) -> bool:
    if isinstance(value, dict):
        return any(_holds_placeholder(k) or _holds_placeholder(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_placeholder(v) for v in value)
    return value == PLACEHOLDER


def load_schema(source: Path | str | dict[str, object], taxonomy: Taxonomy) -> DatasetSchema:
    """Parse a schema from a YAML file, YAML text or a dict, and check it against the taxonomy."""
    if isinstance(source, Path):
        raw = parse_yaml(read_text_input(source, "schema file"), f"schema file {source.name}")
    elif isinstance(source, str):
        raw = parse_yaml(source, "schema")
    else:
        raw = source
    unfilled = [str(k) for k, v in raw.items() if _holds_placeholder(v)] if isinstance(raw, dict) else []
    if unfilled:
        raise InvalidInput(
            f"the schema still has {PLACEHOLDER} in {', '.join(unfilled)}: replace each with your own "
            "declaration (docs/schema.md; the vocabulary: complai taxonomy list)"
        )
    try:
        schema = DatasetSchema.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(f"invalid dataset schema: {where + ': ' if where else ''}{err['msg']}") from None
    schema.check_taxonomy(taxonomy)
    if any(b is None for b in schema.purposes.values()):
        default = DEFAULT_BASIS[str(taxonomy.jurisdiction(schema.jurisdiction).attrs.get("regime", "none"))]
        schema = schema.model_copy(update={"purposes": {p: b or default for p, b in schema.purposes.items()}})
    return schema


# The basis a purpose listed without one gets: consent where the regime is opt-in, notice where opt-out.
DEFAULT_BASIS = {
    "gdpr": "gdpr.consent",
    "pipl": "pipl.consent",
    "ccpa": "ccpa.notice_at_collection",
    "none": "gdpr.consent",
}
