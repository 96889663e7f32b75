"""The vault: encrypted ingest, governed reads, consent, subject-level rights primitives, retention.

`Vault` is the one facade over the vault's parts (subjects.py, ingest.py, reads.py, consent.py,
rights.py, retention.py). Every method that touches personal data or changes governance state appends
exactly one ledger event in the same transaction as its change. Subjects appear in events only as keyed
pseudonyms. The vault writes only its own tables: what other services must do when subjects are erased
or records expire, they do in handlers of the vault's notices (notices.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import ColumnElement, Connection

from complai.clock import Clock, to_us
from complai.crypto.keyring import Keyring
from complai.crypto.pseudonym import Pseudonymizer
from complai.errors import InvalidInput
from complai.ledger.log import Ledger
from complai.store import Store
from complai.taxonomy import Taxonomy
from complai.vault.catalog import Catalog, DatasetInfo
from complai.vault.consent import Consents
from complai.vault.external import EnrolResult, External, ExternalSource
from complai.vault.ingest import (
    CONSENT_COLUMNS,
    MODES,
    ConsentInput,
    DataInput,
    Ingest,
    IngestProgress,
    IngestResult,
    csv_frame,
    read_csv,
)
from complai.vault.lake import governed_frame, registered_physical
from complai.vault.lifecycle import AlterResult, DropResult, Lifecycle
from complai.vault.lifecycle import Progress as CheckProgress
from complai.vault.notices import Notices
from complai.vault.readcache import ReadCache
from complai.vault.reads import Fetched, Reads
from complai.vault.retention import Retention
from complai.vault.rights import Rights
from complai.vault.schema import DatasetSchema
from complai.vault.sources import SourceOptions
from complai.vault.subjects import CHUNK, Subject, Subjects, pack_ids, set_digest, unpack_ids

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "CHUNK",
    "CONSENT_COLUMNS",
    "MODES",
    "EnrolResult",
    "ExternalSource",
    "Fetched",
    "IngestProgress",
    "IngestResult",
    "SourceOptions",
    "Subject",
    "Vault",
    "csv_frame",
    "pack_ids",
    "read_csv",
    "set_digest",
    "unpack_ids",
]


class Vault:
    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        catalog: Catalog,
        keyring: Keyring,
        pseudonyms: Pseudonymizer,
        taxonomy: Taxonomy,
        clock: Clock,
        notices: Notices | None = None,
    ) -> None:
        self.store, self.ledger, self.catalog, self.keyring = store, ledger, catalog, keyring
        self.pseudonyms, self.taxonomy, self.clock = pseudonyms, taxonomy, clock
        self.notices = notices if notices is not None else Notices()
        self.subjects = Subjects(pseudonyms)
        self._ingest = Ingest(store, ledger, catalog, keyring, self.subjects, taxonomy, clock)
        self._reads = Reads(store, ledger, catalog, keyring, self.subjects, taxonomy, clock)
        self._consents = Consents(store, ledger, catalog, self.subjects, taxonomy, clock)
        self.external = External(
            store,
            ledger,
            catalog,
            self.subjects,
            keyring,
            pseudonyms,
            taxonomy,
            clock,
            prepare_consents=self._ingest.prepare_consents,
            subject_condition=self._reads.subject_condition,
        )
        self._rights = Rights(
            store, ledger, catalog, keyring, self.subjects, self._reads, self.notices, clock, self.external
        )
        self._retention = Retention(store, ledger, catalog, keyring, self.notices, clock)
        self._lifecycle = Lifecycle(store, ledger, catalog, keyring, self.notices, taxonomy, clock)

    # --- subjects --------------------------------------------------------------------------------

    def subject(self, conn: Connection, external_id: str) -> Subject:
        """Look up a live (not erased) subject by external id."""
        return self.subjects.get(conn, external_id)

    # --- ingest ----------------------------------------------------------------------------------

    def ingest(
        self,
        dataset: str,
        data: DataInput,
        actor: str,
        consents_data: ConsentInput | None = None,
        purpose: str = "administration",
        *,
        mode: str = "insert",
        options: SourceOptions | None = None,
        progress: IngestProgress | None = None,
    ) -> IngestResult:
        """Encrypt and store rows, with optional consent records, in one transaction (all or nothing);
        `mode` (insert, append, upsert, replace) says what becomes of rows whose record is stored."""
        try:
            return self._ingest.ingest(
                dataset, data, actor, consents_data, purpose, mode=mode, options=options, progress=progress
            )
        except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800" read as text) in a value or an id
            raise InvalidInput("a text in the data is not Unicode text (it holds a lone surrogate)") from None

    # --- governed reads --------------------------------------------------------------------------

    def keep_opened(self, max_records: int, idle_s: float = 300.0, max_age_s: float = 600.0) -> None:
        """Keep opened records between governed reads (vault/readcache.py: what is kept, for how long,
        and what empties it); for a long-running process. 0 keeps none (the default)."""
        self._reads.cache = ReadCache(max_records, idle_s, max_age_s) if max_records > 0 else None

    @property
    def read_cache(self) -> ReadCache | None:
        return self._reads.cache

    def look_for_changes(self) -> None:
        """Look at the ledger for changes now, as every read does first, and drop idle entries: a
        long-running process calls this every few seconds, so that an erasure empties its cache even
        when no read comes."""
        cache = self._reads.cache
        if cache is None:
            return
        start = cache.before_read()
        now_us = to_us(self.clock.now())
        with self.store.read() as conn:
            cache.look(conn, start, now_us)
        cache.sweep(now_us)

    def eligible_condition(self, schema: DatasetSchema, purpose: str, at: datetime) -> ColumnElement[bool]:
        """SQL condition on records for: live subject, unexpired, lawful basis live for the purpose."""
        return self._reads.eligible_condition(schema, purpose, at)

    def fetch(
        self,
        dataset: str,
        purpose: str,
        columns: list[str] | None = None,
        pseudonym_column: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        *,
        ordered: bool = False,
        window: tuple[int, int] | None = None,
        info: DatasetInfo | None = None,
    ) -> Fetched:
        """Decrypt what this purpose may see, without recording (callers record their own event);
        `progress(done, total)` is told the records decrypted; `ordered`, `window` and `info` as Reads.fetch."""
        return self._reads.fetch(
            dataset, purpose, columns, pseudonym_column, progress, ordered=ordered, window=window, info=info
        )

    def read(
        self, dataset: str, purpose: str, actor: str, columns: list[str] | None = None
    ) -> tuple[pd.DataFrame, int]:
        """Decrypt the rows this purpose may see; record the read. Returns (frame, ledger seq)."""
        got = self.fetch(dataset, purpose, columns)
        frame = got.frame
        return frame, self.record_read(
            dataset, purpose, actor, list(frame.columns), len(frame), got.subjects, got.total
        )

    def record_read(
        self,
        dataset: str,
        purpose: str,
        actor: str,
        columns: list[str],
        rows: int,
        pseudos: Mapping[str, int] | Collection[str],
        total: int,
        deidentification: dict[str, Any] | None = None,
    ) -> int:
        """Record a governed read: its ledger entry and the access log of the subjects it reached."""
        return self._reads.record_read(dataset, purpose, actor, columns, rows, pseudos, total, deidentification)

    # --- external datasets (rows in the lake, read through Spark) -------------------------------

    def register_external(
        self, schema: DatasetSchema, source: ExternalSource, physical: Mapping[str, str], actor: str
    ) -> DatasetSchema:
        """Register an external dataset, its schema checked against the source's physical types."""
        return self.external.register(schema, source, physical, actor)

    def enrol(
        self,
        dataset: str,
        ids: Iterable[str],
        actor: str,
        consents_data: pd.DataFrame | Path | str | None = None,
        *,
        any_subject: bool = True,
        purpose: str = "administration",
    ) -> EnrolResult:
        """Enrol the lake's subject ids in an external dataset (vault/external.py)."""
        return self.external.enrol(dataset, ids, actor, consents_data, any_subject=any_subject, purpose=purpose)

    def link_key(self, dataset: str) -> bytes:
        """The key of an external dataset's links (only this derived key reaches the executors)."""
        return self.pseudonyms.link_key(dataset)

    def eligible_links(self, dataset: str, purpose: str, at: datetime) -> list[bytes]:
        """The links of the subjects `purpose` may reach at `at`, by the vault reads' own definition."""
        return self.external.eligible_links(dataset, purpose, at)

    def lake_frame(
        self,
        dataset: str,
        purpose: str,
        columns: Sequence[str] | None,
        spark: SparkSession,
        *,
        at: datetime | None = None,
    ) -> DataFrame:
        """The lazy Spark frame of what `purpose` may see of an external dataset at `at` (now by default):
        `columns` (all when None) and the subject column, only the rows of eligible subjects, and with a
        time column only rows within retention. Not recorded (as `fetch` is not)."""
        info, source = self.external.info(dataset)
        when = self.clock.now() if at is None else at
        cols = list(columns) if columns else [f.name for f in info.schema.fields]
        links = self.external.eligible_links(dataset, purpose, when)
        registered = registered_physical(self.store, dataset)  # a source changed since registration is refused
        return governed_frame(
            spark, source, info.schema, cols, links, self.link_key(dataset), when, registered=registered
        )

    # --- consent and objections ----------------------------------------------------------------

    def grant_consent(
        self,
        external_id: str,
        purpose: str,
        actor: str,
        basis: str = "gdpr.consent",
        notice_version: str = "unspecified",
        source: str = "cli",
    ) -> int:
        return self._consents.grant(external_id, purpose, actor, basis, notice_version, source)

    def withdraw_consent(self, external_id: str, purpose: str, actor: str) -> int:
        return self._consents.withdraw(external_id, purpose, actor)

    def object(self, external_id: str, purpose: str, actor: str, kind: str = "objection") -> int:
        """Record an objection (GDPR Art. 21) or opt-out (CCPA) to a purpose, or to all ('*')."""
        return self._consents.object(external_id, purpose, actor, kind)

    # --- rights primitives -----------------------------------------------------------------------

    def restrict(self, external_id: str, actor: str, reason: str = "", lift: bool = False) -> int:
        return self._rights.restrict(external_id, actor, reason, lift)

    def rectify(self, external_id: str, dataset: str, field: str, value: Any, actor: str) -> int:
        """Set one field in all of a subject's records of a dataset; re-encrypts them."""
        return self._rights.rectify(external_id, dataset, field, value, actor)

    def export(self, external_id: str, actor: str) -> dict[str, Any]:
        """Everything held about a subject, machine-readable (GDPR Art. 15 / 20)."""
        return self._rights.export(external_id, actor)

    def erase(self, external_id: str, actor: str, reapplied_from: int | None = None) -> int:
        """Erasure (GDPR Art. 17): delete records and consents, destroy the data keys, keep a tombstone."""
        return self._rights.erase(external_id, actor, reapplied_from)

    def erase_pseudonym(self, conn: Connection, pseudonym: str, actor: str, reapplied_from: int | None) -> bool:
        """Erase by pseudonym (re-applying a tombstone after a restore). False if nothing to erase."""
        return self._rights.erase_pseudonym(conn, pseudonym, actor, reapplied_from)

    # --- datasets over time ----------------------------------------------------------------------

    def alter_dataset(
        self,
        name: str,
        schema: DatasetSchema,
        actor: str,
        dry_run: bool = False,
        progress: CheckProgress | None = None,
    ) -> AlterResult:
        """A new schema version, checked against every stored record (lifecycle.py)."""
        return self._lifecycle.alter(name, schema, actor, dry_run, progress)

    def drop_dataset(self, name: str, actor: str) -> DropResult:
        """Delete a dataset's records and crypto-shred the subjects left without any (lifecycle.py)."""
        return self._lifecycle.drop(name, actor)

    def drop_dataset_in(self, conn: Connection, name: str, actor: str, reapplied_from: int | None) -> DropResult:
        """`drop_dataset` in the caller's transaction (re-applying a drop after a restore)."""
        return self._lifecycle.drop_in(conn, name, actor, reapplied_from)

    # --- retention -------------------------------------------------------------------------------

    def retention_sweep(self, actor: str) -> dict[str, Any]:
        """Delete records past their dataset's retention; crypto-shred subjects left with nothing."""
        return self._retention.sweep(actor)

    def reseal_legacy(self, conn: Connection) -> int:
        """Re-seal records sealed before versions and times were bound (in the caller's transaction)."""
        return self._retention.reseal_legacy(conn)

    # --- information -----------------------------------------------------------------------------

    def counts(self, dataset: str | None = None) -> dict[str, int]:
        return self._reads.counts(dataset)
