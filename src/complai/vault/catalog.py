"""The dataset catalogue: register a dataset's schema, list and show datasets."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import insert, select

from complai.clock import Clock
from complai.errors import AlreadyExists, NotFound
from complai.events import DatasetRegistered
from complai.ledger.log import Ledger
from complai.store import Store
from complai.store.tables import datasets
from complai.taxonomy import Taxonomy
from complai.vault.schema import DatasetSchema, load_schema


@dataclass(frozen=True)
class DatasetInfo:
    schema: DatasetSchema
    created_at: str


class Catalog:
    def __init__(self, store: Store, ledger: Ledger, taxonomy: Taxonomy, clock: Clock) -> None:
        self.store, self.ledger, self.taxonomy, self.clock = store, ledger, taxonomy, clock

    def register(self, schema: DatasetSchema, actor: str) -> DatasetSchema:
        """Add a dataset to the catalogue; one DatasetRegistered event in the same transaction."""
        schema = load_schema(schema.model_dump(mode="json"), self.taxonomy)
        now = self.clock.now()
        with self.store.write() as conn:
            exists = conn.execute(select(datasets.c.name).where(datasets.c.name == schema.name)).first()
            if exists:
                raise AlreadyExists(f"dataset {schema.name!r} already exists")
            conn.execute(
                insert(datasets).values(
                    name=schema.name,
                    schema_json=schema.canonical_json(),
                    schema_digest=schema.digest(),
                    purposes_json=json.dumps(schema.purposes, sort_keys=True),
                    retention=schema.retention,
                    jurisdiction=schema.jurisdiction,
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
                schema_digest=schema.digest(),
                fields=len(schema.fields),
                purposes=dict(schema.purposes),
                retention=schema.retention,
                jurisdiction=schema.jurisdiction,
            )
        return schema

    def get(self, name: str) -> DatasetInfo:
        with self.store.read() as conn:
            row = conn.execute(select(datasets).where(datasets.c.name == name)).first()
        if row is None:
            raise NotFound(f"no dataset named {name!r}")
        return DatasetInfo(DatasetSchema.model_validate_json(row.schema_json), row.created_at.isoformat())

    def names(self) -> list[str]:
        with self.store.read() as conn:
            return list(conn.execute(select(datasets.c.name).order_by(datasets.c.name)).scalars())
