"""The dataset catalogue: register a dataset's schema, list and show datasets, and keep every schema
version a dataset has had (a record opens under the digest of the version it was sealed with)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Connection, insert, select

from complai.clock import Clock
from complai.crypto.digest import digest_text
from complai.crypto.sealing import load_public
from complai.errors import AlreadyExists, IntegrityError, InvalidInput, NotFound
from complai.events import DatasetRegistered
from complai.ledger.log import Ledger
from complai.store import Store
from complai.store.tables import dataset_versions, datasets, external_sources
from complai.taxonomy import Taxonomy
from complai.vault.records import value_fields
from complai.vault.schema import DatasetSchema, load_schema


class ExternalSource(BaseModel):
    """Where an external dataset's rows live (they stay in the organisation's lake, read through Spark),
    the system that owns them and the X25519 public key its erasure requests are sealed to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["parquet", "table"]
    location: str = Field(min_length=1, max_length=4096)
    """a path or URI to a Parquet file or directory, or a catalogue table (db.table)"""
    owner: str = Field(min_length=1, max_length=128)
    owner_key: str = Field(min_length=1, max_length=80)
    """the owner system's X25519 public key (complai-x25519-public:...)"""
    erasure_days: int = Field(default=30, ge=1, le=3650)
    time_column: str | None = None
    """a date or datetime field: rows older than the dataset's retention are not read"""

    @field_validator("location", "owner")
    @classmethod
    def _stripped(cls, v: str) -> str:
        if v != v.strip() or not v:
            raise ValueError("must not be empty or have surrounding whitespace")
        return v

    @field_validator("owner_key")
    @classmethod
    def _key(cls, v: str) -> str:
        try:
            load_public(v)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
        return v.strip()

    def public(self) -> dict[str, str]:
        """What the registration event records of it."""
        return {"kind": self.kind, "location": self.location, "owner": self.owner}


@dataclass(frozen=True)
class DatasetInfo:
    schema: DatasetSchema
    created_at: str
    version: int = 1
    source: ExternalSource | None = None
    """set for an external dataset (its rows are in the lake, not in the vault)"""


def refuse_external(info: DatasetInfo, what: str) -> None:
    """InvalidInput for an external dataset, whose rows the vault does not hold: an in-process read of
    it would see an empty frame (and a DP query would spend budget on nothing)."""
    if info.source is not None:
        raise InvalidInput(
            f"dataset {info.schema.name} is external (its rows are in {info.source.owner}'s lake): it cannot be "
            f"{what}; it is read through Spark"
        )


@dataclass(frozen=True)
class SchemaVersion:
    """One stored schema version of a dataset, its digest checked against its text."""

    version: int
    schema: DatasetSchema
    digest: str
    created_at: datetime


def stored_schema(dataset: str, schema_json: str, schema_digest: str, what: str) -> DatasetSchema:
    """A stored schema whose text still has the digest stored beside it (the digest records bind);
    IntegrityError if either was edited at rest."""
    if digest_text(str(schema_json)) != schema_digest:
        raise IntegrityError(f"dataset {dataset}: the stored schema of {what} does not match its digest")
    try:
        return DatasetSchema.model_validate_json(schema_json)
    except ValueError:
        raise IntegrityError(f"dataset {dataset}: the stored schema of {what} is unreadable") from None


def layout(sealed: DatasetSchema, current: DatasetSchema) -> list[int | None] | None:
    """Where each of the current schema's value fields sits in a record sealed under `sealed` (None for a
    field added since); None when the value fields are the same, in the same order."""
    old = [f.name for f in value_fields(sealed)]
    new = [f.name for f in value_fields(current)]
    if old == new:
        return None
    where = {n: i for i, n in enumerate(old)}
    return [where.get(n) for n in new]


@functools.lru_cache(maxsize=256)
def _parsed(schema_json: str) -> DatasetSchema:
    """A stored schema's text, parsed once per process (a DatasetSchema is frozen): every governed read
    and DP answer reads the current schema, and parsing it cost more than reading its row."""
    return DatasetSchema.model_validate_json(schema_json)


@functools.lru_cache(maxsize=256)
def _source(
    kind: str, location: str, owner: str, owner_key: str, erasure_days: int, time_column: str | None
) -> ExternalSource:
    """An external dataset's stored source, validated once per process (it is frozen)."""
    return ExternalSource.model_validate(
        {
            "kind": kind,
            "location": location,
            "owner": owner,
            "owner_key": owner_key,
            "erasure_days": erasure_days,
            "time_column": time_column,
        }
    )


def present(values: list[Any], where: list[int | None] | None) -> list[Any]:
    """A record's values, decoded in the layout of its schema version, in the current schema's order."""
    if where is None:
        return values
    return [None if i is None else values[i] for i in where]


class Catalog:
    def __init__(self, store: Store, ledger: Ledger, taxonomy: Taxonomy, clock: Clock) -> None:
        self.store, self.ledger, self.taxonomy, self.clock = store, ledger, taxonomy, clock

    def register(
        self,
        schema: DatasetSchema,
        actor: str,
        source: ExternalSource | None = None,
        physical: Mapping[str, str] | None = None,
    ) -> DatasetSchema:
        """Add a dataset to the catalogue (its schema version 1); one DatasetRegistered event in the same
        transaction. A dropped dataset's name stays taken, so nothing of it can come back. With `source`,
        an external dataset: its source row (and the `physical` types it was checked against) is written
        in the same transaction."""
        schema = load_schema(schema.model_dump(mode="json"), self.taxonomy)
        now = self.clock.now()
        text, sdig = schema.canonical_json(), schema.digest()
        with self.store.write() as conn:
            row = conn.execute(select(datasets.c.dropped_at).where(datasets.c.name == schema.name)).first()
            if row is not None and row.dropped_at is not None:
                raise AlreadyExists(f"dataset {schema.name!r} was dropped; its name cannot be used again")
            if row is not None:
                raise AlreadyExists(f"dataset {schema.name!r} already exists")
            conn.execute(
                insert(datasets).values(
                    name=schema.name,
                    schema_json=text,
                    schema_digest=sdig,
                    purposes_json=json.dumps(schema.purposes, sort_keys=True),
                    retention=schema.retention,
                    jurisdiction=schema.jurisdiction,
                    created_at=now,
                    version=1,
                )
            )
            conn.execute(
                insert(dataset_versions).values(
                    dataset=schema.name, version=1, schema_json=text, schema_digest=sdig, created_at=now
                )
            )
            if source is not None:
                conn.execute(
                    insert(external_sources).values(
                        dataset=schema.name,
                        kind=source.kind,
                        location=source.location,
                        owner=source.owner,
                        owner_key=source.owner_key,
                        erasure_days=source.erasure_days,
                        time_column=source.time_column,
                        physical_json=json.dumps(dict(physical or {}), sort_keys=True),
                        created_at=now,
                    )
                )
            self.ledger.emit(
                conn,
                DatasetRegistered,
                time=now,
                actor=actor,
                purpose="administration",
                dataset=schema.name,
                schema_digest=sdig,
                fields=len(schema.fields),
                purposes=dict(schema.purposes),
                retention=schema.retention,
                jurisdiction=schema.jurisdiction,
                source=source.public() if source is not None else None,
            )
        return schema

    def get(self, name: str) -> DatasetInfo:
        """A live dataset's current schema; NotFound if there is no such dataset or it was dropped. (An
        edit of the stored schema at rest is RECON-1's to report; records open under the digests of
        `versions`, which are checked here.)"""
        with self.store.read() as conn:
            return self.current(conn, name)

    def current(self, conn: Connection, name: str, lock: bool = False) -> DatasetInfo:
        """`get` inside a transaction; with `lock`, the dataset's row is held (shared) to the end of the
        transaction, so that no schema change commits between reading the version and writing under it."""
        d, x = datasets.c, external_sources.c
        query = (
            select(
                d.schema_json,
                d.created_at,
                d.version,
                d.dropped_at,
                *(x.kind, x.location, x.owner, x.owner_key, x.erasure_days, x.time_column),
            )
            .select_from(datasets.outerjoin(external_sources, x.dataset == d.name))
            .where(d.name == name)
        )
        if lock:
            query = query.with_for_update(read=True, of=datasets)
        row = conn.execute(query).first()
        if row is None or row.dropped_at is not None:
            raise NotFound(f"no dataset named {name!r}")
        source = None
        if row.kind is not None:
            source = _source(row.kind, row.location, row.owner, row.owner_key, int(row.erasure_days), row.time_column)
        return DatasetInfo(_parsed(row.schema_json), row.created_at.isoformat(), int(row.version), source)

    def check_version(self, conn: Connection, name: str, version: int) -> None:
        """Inside a write transaction: the dataset still has schema `version` (held until commit), or
        InvalidInput asking the caller to retry against the changed schema."""
        now = self.current(conn, name, lock=True).version
        if now != version:
            raise InvalidInput(f"dataset {name} changed to schema version {now} meanwhile; run it again")

    def versions(self, conn: Connection, name: str) -> dict[int, SchemaVersion]:
        """Every schema version of a dataset, each checked against its stored digest."""
        rows = conn.execute(
            select(dataset_versions).where(dataset_versions.c.dataset == name).order_by(dataset_versions.c.version)
        ).all()
        return {
            int(r.version): SchemaVersion(
                int(r.version),
                stored_schema(name, r.schema_json, r.schema_digest, f"version {r.version}"),
                str(r.schema_digest),
                r.created_at,
            )
            for r in rows
        }

    def names(self) -> list[str]:
        """The live datasets (dropped ones are tombstones, not listed)."""
        with self.store.read() as conn:
            return list(
                conn.execute(
                    select(datasets.c.name).where(datasets.c.dropped_at.is_(None)).order_by(datasets.c.name)
                ).scalars()
            )
