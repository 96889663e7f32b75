"""Validate incoming rows against a dataset schema and encode/decode them for encryption.

A record's plaintext is the compact JSON array of its field values in schema order, without the
subject column (the subject's identity lives, encrypted, in the subjects table). Its ciphertext is
bound (associated data) to the dataset, the record id, the schema digest, the record's version (a counter
each rectification increments), its creation time and its expiry.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from complai.errors import IntegrityError, InvalidInput
from complai.vault.schema import DatasetSchema, FieldSpec


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


def open_record(key: Any, dataset: str, schema_digest: str, row: Any, values: bool = True) -> list[Any]:
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
        element = b"complai/record-set/v1|%s|%s|%s" % (dataset.encode(), pseudonym.encode(), rid.hex().encode())
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


def subject_ad(pseudonym: str) -> bytes:
    return b"complai/subject/v1|" + pseudonym.encode()


def value_fields(schema: DatasetSchema) -> list[FieldSpec]:
    return [f for f in schema.fields if f.name != schema.subject_column]


def _fail(field: str, pos: int, value: Any, what: str) -> InvalidInput:
    return InvalidInput(f"column {field}: row {pos + 1}: {value!r} {what}")


def _convert(spec: FieldSpec, col: pd.Series) -> list[Any]:
    """One column to Python values (None for missing), checked against the field's type and bounds."""
    missing = col.isna().to_numpy()
    if spec.type in ("integer", "float"):
        num = pd.to_numeric(col, errors="coerce")
        bad = num.isna().to_numpy() & ~missing
        if bad.any():
            i = int(np.argmax(bad))
            raise _fail(spec.name, i, col.iloc[i], f"is not {'an integer' if spec.type == 'integer' else 'a number'}")
        arr = num.to_numpy(dtype="float64", na_value=np.nan)
        finite = ~np.isnan(arr)
        if spec.type == "integer":
            frac = finite & (np.floor(arr) != arr)
            if frac.any():
                i = int(np.argmax(frac))
                raise _fail(spec.name, i, col.iloc[i], "is not an integer")
        for bound, cmp, word in ((spec.min, np.less, "below"), (spec.max, np.greater, "above")):
            if bound is not None:
                out = finite & cmp(arr, bound)
                if out.any():
                    i = int(np.argmax(out))
                    raise _fail(
                        spec.name,
                        i,
                        col.iloc[i],
                        f"is {word} the declared {'min' if word == 'below' else 'max'} {bound:g}",
                    )
        if spec.type == "integer":
            values = [None if m else int(v) for v, m in zip(arr.tolist(), missing, strict=True)]
        else:
            values = [None if m else float(v) for v, m in zip(arr.tolist(), missing, strict=True)]
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
                raise _fail(spec.name, i, v, "is not a boolean")
    elif spec.type in ("date", "datetime"):
        parsed = pd.to_datetime(col, errors="coerce", utc=True)
        bad = parsed.isna().to_numpy() & ~missing
        if bad.any():
            i = int(np.argmax(bad))
            raise _fail(spec.name, i, col.iloc[i], f"is not a {spec.type}")
        fmt = "%Y-%m-%d" if spec.type == "date" else "%Y-%m-%dT%H:%M:%S.%fZ"
        values = [None if m else ts.strftime(fmt) for ts, m in zip(parsed, missing, strict=True)]
    else:  # string, category, text
        values = [None if m else str(v) for v, m in zip(col.tolist(), missing, strict=True)]
        if spec.values is not None:
            allowed = set(spec.values)
            for i, v in enumerate(values):
                if v is not None and v not in allowed:
                    raise _fail(spec.name, i, v, f"is not one of {spec.values}")
    if not spec.nullable and missing.any():
        raise _fail(spec.name, int(np.argmax(missing)), None, "is missing (the field is not nullable)")
    return values


def prepare(schema: DatasetSchema, df: pd.DataFrame) -> tuple[list[str], list[list[Any]]]:
    """Validate a frame; return (subject ids, rows of values in schema order). Raises InvalidInput."""
    names = [f.name for f in schema.fields]
    unknown = [c for c in df.columns if c not in names]
    if unknown:
        raise InvalidInput(f"unknown column(s) {unknown} for dataset {schema.name} (schema fields: {names})")
    if schema.subject_column not in df.columns:
        raise InvalidInput(f"the subject column {schema.subject_column!r} is missing")
    subj = df[schema.subject_column]
    missing = subj.isna().to_numpy() | (subj.astype("string").str.strip() == "").fillna(True).to_numpy()
    if missing.any():
        raise InvalidInput(f"row {int(np.argmax(missing)) + 1}: missing subject id in {schema.subject_column!r}")
    subjects = [str(s).strip() for s in subj.tolist()]
    columns = []
    for spec in value_fields(schema):
        if spec.name in df.columns:
            columns.append(_convert(spec, df[spec.name]))
        elif spec.nullable:
            columns.append([None] * len(df))
        else:
            raise InvalidInput(f"column {spec.name!r} is missing and the field is not nullable")
    rows = [list(r) for r in zip(*columns, strict=True)] if columns else [[] for _ in range(len(df))]
    return subjects, rows


def encode(values: Sequence[Any]) -> bytes:
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def decode(data: bytes) -> list[Any]:
    return json.loads(data)


def check_value(spec: FieldSpec, value: Any) -> Any:
    """Validate one value for a field (rectification); returns it converted."""
    converted = _convert(spec, pd.Series([value], dtype="object"))[0]
    if isinstance(converted, float) and not math.isfinite(converted):
        raise InvalidInput(f"column {spec.name}: {value!r} is not a finite number")
    return converted


def to_frame(schema: DatasetSchema, columns: list[str], subjects: list[str], rows: list[list[Any]]) -> pd.DataFrame:
    """Decoded rows back to a typed DataFrame with the requested columns."""
    specs = {f.name: f for f in schema.fields}
    index = {f.name: i for i, f in enumerate(value_fields(schema))}
    data: dict[str, Any] = {}
    for name in columns:
        spec = specs[name]
        if name == schema.subject_column:
            data[name] = pd.array(subjects, dtype="string")
            continue
        i = index[name]
        vals = [r[i] for r in rows]
        if spec.type == "integer":
            data[name] = pd.array(vals, dtype="Int64") if None in vals else np.array(vals, dtype="int64")
        elif spec.type == "float":
            data[name] = np.array([np.nan if v is None else v for v in vals], dtype="float64")
        elif spec.type == "boolean":
            data[name] = pd.array(vals, dtype="boolean")
        elif spec.type == "category":
            cats = spec.values
            data[name] = pd.Categorical(vals, categories=cats) if cats else pd.Categorical(vals)
        elif spec.type in ("date", "datetime"):
            data[name] = pd.to_datetime(pd.Series(vals, dtype="object"), utc=True)
        else:
            data[name] = pd.array(vals, dtype="string")
    return pd.DataFrame(data, columns=columns)
