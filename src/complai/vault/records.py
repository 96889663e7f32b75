"""Validate incoming rows against a dataset schema and encode/decode them for encryption.

A record's plaintext is the compact JSON array of its field values in schema order, without the
subject column (the subject's identity lives, encrypted, in the subjects table). Its ciphertext is
bound (associated data) to the dataset, the record id, the schema digest, the record's version (a counter
each rectification increments), its creation time and its expiry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Row

from complai.clock import to_us
from complai.crypto.aead import DataKey
from complai.errors import IntegrityError, InvalidInput
from complai.inputs import INT64_MAX, INT64_MIN, MAX_REPORTED, summarise
from complai.vault.schema import DatasetSchema, FieldSpec, days_since_epoch


def record_ad(dataset: str, rid: bytes, schema_digest: str, version: int, created_us: int, expires_us: int) -> bytes:
    """A record's associated data: the ciphertext opens only with the row's dataset, id, schema, version
    (rectifications), creation time and expiry as stored, so a rolled-back ciphertext or an edited
    expiry fails authentication on read."""
    return b"complai/record/v2|%s|%s|%s|%d|%d|%d" % (
        dataset.encode(),
        rid.hex().encode(),
        schema_digest.encode(),
        int(version),
        int(created_us),
        int(expires_us),
    )


def open_record(
    key: DataKey, dataset: str, schema_digest: str, row: Row[*tuple[Any, ...]], values: bool = True
) -> list[Any]:
    """Decrypt a stored record (a row with rid, version, created_us, expires_us, data) under its data key;
    IntegrityError, naming the record, if the ciphertext or anything bound to it was changed. With
    `values` false, only authenticate it (returns [])."""
    rid = bytes(row.rid)
    if row.version is None:
        raise IntegrityError(f"record {rid.hex()} in {dataset} has no version (it was never re-sealed)")
    ad = record_ad(dataset, rid, schema_digest, int(row.version), int(row.created_us), int(row.expires_us))
    try:
        plain = key.open(bytes(row.data), ad)
    except IntegrityError:
        raise IntegrityError(
            f"record {rid.hex()} in {dataset} fails authentication: its ciphertext, version, creation time or "
            "expiry was changed at rest"
        ) from None
    return decode(plain) if values else []


def legacy_record_ad(dataset: str, rid: bytes, schema_digest: str) -> bytes:
    """Associated data of records sealed before versions and times were bound (re-sealed on upgrade)."""
    return b"complai/record/v1|" + dataset.encode() + b"|" + rid + b"|" + schema_digest.encode()


_SET_MOD = 1 << 256
SET_PREFIX = "msh256:"


class RecordSet:
    """A multiset hash (sum modulo 2^256 of SHA-256 per element) of (dataset, subject pseudonym, record id)
    triples. Sums compose: what ingests added, less what erasures and retention sweeps deleted, must
    equal the hash of the records stored, so the ledger can account for every stored record without
    listing them. Elements are pseudonymous (keyed pseudonym, random record id)."""

    def __init__(self, value: int = 0) -> None:
        self.value = value % _SET_MOD

    def add(self, dataset: str, pseudonym: str, rid: bytes) -> None:
        self.add_element(b"complai/record-set/v1|%s|%s|%s" % (dataset.encode(), pseudonym.encode(), rid.hex().encode()))

    def add_element(self, element: bytes) -> None:
        """Any element (consents use this too: consent_element, withdrawal_element)."""
        h = hashlib.sha256(element)
        self.value = (self.value + int.from_bytes(h.digest(), "big")) % _SET_MOD

    def __add__(self, other: RecordSet) -> RecordSet:
        return RecordSet(self.value + other.value)

    def __sub__(self, other: RecordSet) -> RecordSet:
        return RecordSet(self.value - other.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RecordSet) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def digest(self) -> str:
        return SET_PREFIX + self.value.to_bytes(32, "big").hex()

    @classmethod
    def parse(cls, text: str) -> RecordSet:
        if not isinstance(text, str) or not text.startswith(SET_PREFIX) or len(text) != len(SET_PREFIX) + 64:
            raise ValueError("not a record-set digest")
        return cls(int(text[len(SET_PREFIX) :], 16))


def consent_element(pseudonym: str, purpose: str, basis: str, granted_us: int, notice: str, source: str) -> bytes:
    """A consent row as a set element (without its withdrawal, which withdrawal_element covers)."""
    return json.dumps(["consent/v1", pseudonym, purpose, basis, int(granted_us), notice, source]).encode()


def withdrawal_element(pseudonym: str, purpose: str, granted_us: int, withdrawn_us: int) -> bytes:
    return json.dumps(["withdrawal/v1", pseudonym, purpose, int(granted_us), int(withdrawn_us)]).encode()


def add_consent(given: RecordSet, withdrawn: RecordSet, pseudonym: str, c: Mapping[Any, Any]) -> None:
    """A consent row (mapping with purpose, basis, granted_at, withdrawn_at, notice_version, source) into
    the multiset hashes of consents and of withdrawals the ledger records."""
    granted = to_us(c["granted_at"])
    given.add_element(consent_element(pseudonym, c["purpose"], c["basis"], granted, c["notice_version"], c["source"]))
    if c["withdrawn_at"] is not None:
        withdrawn.add_element(withdrawal_element(pseudonym, c["purpose"], granted, to_us(c["withdrawn_at"])))


def subject_ad(pseudonym: str) -> bytes:
    return b"complai/subject/v1|" + pseudonym.encode()


def value_fields(schema: DatasetSchema) -> list[FieldSpec]:
    return [f for f in schema.fields if f.name != schema.subject_column]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Problems:
    """Bad values found while checking a frame, reported together (the first MAX_REPORTED, then a count).

    Positions are data rows from 0; `lines` (a CSV's line per row), when known, names file lines instead."""

    def __init__(self, lines: Sequence[int] | None = None) -> None:
        self.lines = list(lines) if lines is not None else None
        self.items: list[tuple[int, int, str, str]] = []
        self.count = 0
        self._order = 0

    def where(self, pos: int) -> str:
        if self.lines is not None and pos < len(self.lines):
            return f"line {self.lines[pos]}"
        return f"row {pos + 1}"

    def add(self, pos: int, head: str, tail: str) -> None:
        """One problem: `head`, where the row is, `tail`."""
        self.count += 1
        self._order += 1
        self.items.append((pos, self._order, head, tail))
        if len(self.items) > 4 * MAX_REPORTED:
            self.items = sorted(self.items)[:MAX_REPORTED]

    def value(self, spec: FieldSpec, pos: int, value: Any, what: str) -> None:
        self.add(pos, f"column {spec.name}: ", f": {_show(value)} {what}")

    def mask(self, spec: FieldSpec, col: pd.Series, bad: np.ndarray, what: str) -> None:
        """Every position where `bad` is true."""
        n = int(bad.sum())
        if not n:
            return
        for i in np.flatnonzero(bad)[:MAX_REPORTED].tolist():
            self.value(spec, i, col.iloc[i], what)
        self.count += n - min(n, MAX_REPORTED)

    def raise_if_any(self) -> None:
        if not self.count:
            return
        texts = [head + self.where(pos) + tail for pos, _, head, tail in sorted(self.items)[:MAX_REPORTED]]
        if self.count == 1:
            raise InvalidInput(texts[0])
        raise InvalidInput(f"{self.count} invalid values: " + summarise(texts, self.count))


_DIGITS = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,6})?")


def _parse_int(v: Any) -> int | str:
    """An exact integer within the 64-bit signed range, or why not (never through a float)."""
    if isinstance(v, bool | np.bool_):
        return "is not an integer"
    if isinstance(v, int | np.integer):
        n = int(v)
    elif isinstance(v, float | np.floating):
        if not math.isfinite(v) or not float(v).is_integer():
            return "is not an integer"
        n = int(v)
    else:
        s = str(v).strip()
        if _DIGITS.fullmatch(s) and len(s) <= 40:
            n = int(s)
        else:
            if not _DECIMAL.fullmatch(s):
                return "is not an integer"
            try:
                d = Decimal(s)
            except (InvalidOperation, ValueError):
                return "is not an integer"
            if not d.is_finite() or d != d.to_integral_value():
                return "is not an integer"
            if d.adjusted() > 30:
                return "is outside the 64-bit integer range"
            n = int(d)
    if not INT64_MIN <= n <= INT64_MAX:
        return "is outside the 64-bit integer range"
    return n


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_date(v: Any) -> str | None:
    """A calendar date as YYYY-MM-DD, or None: text must be exactly an ISO 8601 date (no time, no words
    such as `today`, no locale order such as 06/05/1990); a date or timestamp object keeps its own
    calendar date (never moved by a time zone conversion)."""
    if isinstance(v, dt.datetime | pd.Timestamp):
        return v.date().isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, np.datetime64):
        return None if np.isnat(v) else _iso_date(pd.Timestamp(v))
    if not isinstance(v, str) or not _ISO_DATE.fullmatch(s := v.strip()):
        return None
    try:
        return dt.date.fromisoformat(s).isoformat()
    except ValueError:
        return None


def _iso_datetime(v: Any) -> str | None:
    """An instant as YYYY-MM-DDTHH:MM:SS.ffffffZ (UTC; a value without an offset is read as UTC), or None:
    text must be an ISO 8601 date or date and time, never a word (`now`) or a locale's order."""
    if isinstance(v, np.datetime64):
        if np.isnat(v):
            return None
        v = pd.Timestamp(v)
    if isinstance(v, pd.Timestamp):
        v = v.to_pydatetime()
    if isinstance(v, str):
        s = v.strip()
        if not _ISO_DATE.fullmatch(s[:10]):
            return None
        if s.endswith(("z", "Z")):
            s = s[:-1] + "+00:00"
        try:
            v = dt.datetime.fromisoformat(s)
        except ValueError:
            return None
    elif isinstance(v, dt.date) and not isinstance(v, dt.datetime):
        v = dt.datetime(v.year, v.month, v.day)
    if not isinstance(v, dt.datetime):
        return None
    if v.tzinfo is not None:
        try:
            v = v.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:  # an offset that moves the instant out of years 1-9999
            return None
    text: str = v.isoformat(timespec="microseconds")
    return text + "Z"


def _integers(spec: FieldSpec, col: pd.Series, missing: np.ndarray, problems: Problems) -> list[int | None]:
    """Exact integers: up to 18 digits (always within 64 bits) parsed in bulk, anything else one by one."""
    if col.dtype.kind == "i" and not missing.any():
        return [int(v) for v in col.to_numpy().tolist()]
    values: list[int | None] = [None] * len(col)
    text = col.astype("string").str.strip()
    fast = text.str.fullmatch(r"[+-]?[0-9]{1,18}").fillna(False).to_numpy(dtype=bool) & ~missing
    if fast.any():
        for i, n in zip(np.flatnonzero(fast).tolist(), text[fast].astype("int64").tolist(), strict=True):
            values[i] = n
    raw = col.to_numpy(dtype=object)
    for i in np.flatnonzero(~fast & ~missing).tolist():
        n = _parse_int(raw[i])
        if isinstance(n, str):
            problems.value(spec, i, raw[i], n)
        else:
            values[i] = n
    return values


def _convert(spec: FieldSpec, col: pd.Series, problems: Problems) -> list[Any]:
    """One column to Python values (None for missing), checked against the field's type and bounds; every
    bad value is added to `problems`."""
    missing = col.isna().to_numpy()
    values: list[Any]
    if spec.type == "integer":
        values = _integers(spec, col, missing, problems)
        lo, hi = spec.numeric_bounds
        if lo is not None or hi is not None:
            for i, n in enumerate(values):
                if n is None:
                    continue
                if lo is not None and n < lo:
                    problems.value(spec, i, col.iloc[i], f"is below the declared min {lo:g}")
                elif hi is not None and n > hi:
                    problems.value(spec, i, col.iloc[i], f"is above the declared max {hi:g}")
    elif spec.type == "float":
        num = pd.to_numeric(col, errors="coerce")
        arr = num.to_numpy(dtype="float64", na_value=np.nan)
        problems.mask(spec, col, np.isnan(arr) & ~missing, "is not a number")
        problems.mask(spec, col, np.isinf(arr) & ~missing, "is not a finite number")
        finite = np.isfinite(arr)
        lo, hi = spec.numeric_bounds
        for bound, cmp, word in ((lo, np.less, "below"), (hi, np.greater, "above")):
            if bound is not None:
                problems.mask(
                    spec,
                    col,
                    finite & cmp(arr, bound),
                    f"is {word} the declared {'min' if word == 'below' else 'max'} {bound:g}",
                )
        values = [float(v) if f else None for v, f in zip(arr.tolist(), finite, strict=True)]
    elif spec.type == "boolean":
        mapping = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
        values = []
        for i, (v, m) in enumerate(zip(col.tolist(), missing, strict=True)):
            if m:
                values.append(None)
            elif isinstance(v, bool | np.bool_):
                values.append(bool(v))
            elif str(v).strip().lower() in mapping:
                values.append(mapping[str(v).strip().lower()])
            else:
                problems.value(spec, i, v, "is not a boolean")
                values.append(None)
    elif spec.type in ("date", "datetime"):
        values = []
        lo, hi = spec.numeric_bounds
        for i, (v, m) in enumerate(zip(col.tolist(), missing, strict=True)):
            text = None if m else (_iso_date(v) if spec.type == "date" else _iso_datetime(v))
            if text is None and not m:
                problems.value(spec, i, v, f"is not an ISO 8601 {spec.type}")
            elif text is not None and (lo is not None or hi is not None):
                days = days_since_epoch(text)  # bounds compare as days, whatever their written precision
                if lo is not None and days < lo:
                    problems.value(spec, i, v, f"is before the declared min {spec.min}")
                elif hi is not None and days > hi:
                    problems.value(spec, i, v, f"is after the declared max {spec.max}")
            values.append(text)
    else:  # string, category, text
        values = [None if m else str(v) for v, m in zip(col.tolist(), missing, strict=True)]
        if spec.values is not None:
            allowed = set(spec.values)
            for i, v in enumerate(values):
                if v is not None and v not in allowed:
                    problems.value(spec, i, v, f"is not one of {spec.values}")
    if not spec.nullable:
        problems.mask(spec, col, missing, "is missing (the field is not nullable)")
    return values


def prepare(schema: DatasetSchema, df: pd.DataFrame) -> tuple[list[str], list[list[Any]]]:
    """Validate a frame; return (subject ids, rows of values in schema order). Raises InvalidInput naming
    every bad value (the first MAX_REPORTED, with a count), by file line when the frame came from a CSV."""
    problems = Problems(df.attrs.get("lines"))
    subjects, rows = convert_rows(schema, df, problems)
    problems.raise_if_any()
    return subjects, rows


def convert_rows(schema: DatasetSchema, df: pd.DataFrame, problems: Problems) -> tuple[list[str], list[list[Any]]]:
    """`prepare` for one chunk of a file: bad values go to `problems` (the rows stay, with None where a
    value was bad) so that every chunk's are reported together; a bad header still raises at once."""
    names = [f.name for f in schema.fields]
    unknown = [c for c in df.columns if c not in names]
    if unknown:
        raise InvalidInput(f"unknown column(s) {unknown} for dataset {schema.name} (schema fields: {names})")
    if schema.subject_column not in df.columns:
        raise InvalidInput(f"the subject column {schema.subject_column!r} is missing")
    for spec in value_fields(schema):
        if spec.name not in df.columns and not spec.nullable:
            raise InvalidInput(f"column {spec.name!r} is missing and the field is not nullable")
    subj = df[schema.subject_column]
    missing = subj.isna().to_numpy() | (subj.astype("string").str.strip() == "").fillna(True).to_numpy()
    for i in np.flatnonzero(missing)[:MAX_REPORTED].tolist():
        problems.add(i, "", f": missing subject id in {schema.subject_column!r}")
    problems.count += max(0, int(missing.sum()) - MAX_REPORTED)
    subjects = [str(s).strip() for s in subj.tolist()]
    columns = []
    for spec in value_fields(schema):
        if spec.name in df.columns:
            columns.append(_convert(spec, df[spec.name], problems))
        else:
            columns.append([None] * len(df))
    rows = [list(r) for r in zip(*columns, strict=True)] if columns else [[] for _ in range(len(df))]
    return subjects, rows


def encode(values: Sequence[Any]) -> bytes:
    text = json.dumps(values, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate (JSON's \ud800 escape read as text): not Unicode text
        raise InvalidInput("a text value is not Unicode text (it holds a lone surrogate)") from None


def decode(data: bytes) -> list[Any]:
    values: list[Any] = json.loads(data)
    return values


def check_value(spec: FieldSpec, value: Any) -> Any:
    """Validate one value for a field (rectification); returns it converted."""
    problems = Problems()
    converted = _convert(spec, pd.Series([value], dtype="object"), problems)[0]
    problems.raise_if_any()
    return converted


def column_array(spec: FieldSpec, vals: list[Any]) -> Any:
    """One column's decoded values as the typed array a frame holds for the field's type."""
    if spec.type == "integer":
        return pd.array(vals, dtype="Int64") if None in vals else np.array(vals, dtype="int64")
    if spec.type == "float":
        return np.array([np.nan if v is None else v for v in vals], dtype="float64")
    if spec.type == "boolean":
        return pd.array(vals, dtype="boolean")
    if spec.type == "category":
        cats = spec.values
        return pd.Categorical(vals, categories=cats) if cats else pd.Categorical(vals)
    if spec.type in ("date", "datetime"):
        return pd.to_datetime(pd.Series(vals, dtype="object"), utc=True, format="ISO8601").array
    return pd.array(vals, dtype="string")


def to_frame(schema: DatasetSchema, columns: list[str], subjects: list[str], rows: list[list[Any]]) -> pd.DataFrame:
    """Decoded rows back to a typed DataFrame with the requested columns."""
    specs = {f.name: f for f in schema.fields}
    index = {f.name: i for i, f in enumerate(value_fields(schema))}
    data: dict[str, Any] = {}
    for name in columns:
        if name == schema.subject_column:
            data[name] = pd.array(subjects, dtype="string")
            continue
        i = index[name]
        data[name] = column_array(specs[name], [r[i] for r in rows])
    return pd.DataFrame(data, columns=columns)
