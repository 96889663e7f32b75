"""Ingest: validate rows and consent records, encrypt each record under its subject's data key and store
them in one transaction (all or nothing), with one records.ingested ledger entry.

A file is read in chunks (vault/sources.py), twice, inside one write transaction, so memory holds one
chunk whatever the file's size: the first pass checks every row (all bad rows are reported together,
before anything is written) and collects the rows' record keys in a temporary table; the second
encrypts and inserts. A record key is a keyed digest (HMAC under the workspace's pseudonym key) of the
values that name the record: the dataset's declared `record_key`, or, without one, the subject and all
its values. The mode says what happens to a row whose key is already stored:

- `insert` (the default): nothing is stored if any row's key is stored already or repeats in the file;
- `append`: rows whose key is stored are skipped (running the same file again stores nothing);
- `upsert` (needs a declared record_key): a row whose key is stored supersedes that record: the record
  is deleted and the row stored as a new record (a new record id, version 0), both in the ledger's
  multiset hashes;
- `replace`: every record of the dataset is deleted and the file's rows stored.

In every mode a key repeated inside the file is refused. Subjects keep their identity, keys and
consents when their records are superseded or replaced, even if left without records (a later file
may bring them back; an erasure would bar them for good).

Consents given as `IngestConsents(..., any_subject=False)` (a principal who may not record consents)
may name only subjects the ingest itself creates: a consent covers all of its subject's records, in
every dataset, so one naming a subject already known would make records the ingest never brought
processable on a basis nobody with that right recorded. Any other subject refuses the whole ingest
(PolicyDenied, recorded as access.denied once the transaction is rolled back).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeAlias, TypedDict, get_args

import pandas as pd
from sqlalchemy import Column, Connection, LargeBinary, MetaData, String, Table, delete, exists, func, select
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError

from complai.clock import Clock, to_us
from complai.crypto.aead import DataKey
from complai.crypto.keyring import Keyring, new_raw_key
from complai.crypto.pseudonym import Pseudonymizer
from complai.errors import InvalidInput, PolicyDenied
from complai.events import AccessDenied, RecordsIngested
from complai.inputs import MAX_REPORTED, TABLE_MAX_BYTES, parse_csv, read_input, summarise
from complai.ledger.log import Ledger
from complai.store import Store, bulk_insert, placeholder
from complai.store.tables import consents, records, subjects
from complai.taxonomy import Taxonomy
from complai.vault.catalog import Catalog, refuse_external
from complai.vault.consent import NOTICE_VERSION_MAX, SOURCE_MAX, consent_text
from complai.vault.records import (
    Problems,
    RecordSet,
    add_consent,
    convert_rows,
    encode,
    record_ad,
    subject_ad,
    value_fields,
)
from complai.vault.schema import DatasetSchema, retention_deadline
from complai.vault.sources import Chunk, FrameSource, RowProblems, Source, SourceOptions, problems_message
from complai.vault.subjects import CHUNK, Subjects, chunks

CONSENT_COLUMNS = {"subject", "purpose", "basis", "granted_at", "withdrawn_at", "notice_version", "source"}
_CONSENT_FIELDS = ("purpose", "basis", "granted_at", "withdrawn_at", "notice_version", "source")
_RECORD_COLUMNS = (
    *("rid", "dataset", "subject_id", "dek_version", "created_us", "expires_us", "data", "version"),
    "schema_version",
    "record_key",
)

ConsentSource: TypeAlias = pd.DataFrame | Path | str


@dataclass(frozen=True)
class IngestConsents:
    """Consent records given with an ingest, and whether their giver may record consents for any
    subject (the right `consent grant` needs); without it, only for subjects this ingest creates.
    Plain consent records (a frame, a file) are taken as given with that right."""

    data: ConsentSource
    any_subject: bool = False


DataInput: TypeAlias = pd.DataFrame | Path | str | list[dict[str, Any]]
ConsentInput: TypeAlias = pd.DataFrame | Path | str | IngestConsents
IngestMode = Literal["insert", "append", "upsert", "replace"]
MODES: tuple[str, ...] = get_args(IngestMode)
IngestProgress = Callable[[str, int, int], None]
"""(stage, done, total): "checking" counts bytes of the file, "storing" rows."""

# the ingest's working sets, temporary to its transaction: the file's record keys, the subjects it stored
_tmp = MetaData()
_keys = Table("ingest_keys", _tmp, Column("k", LargeBinary))
_subjects = Table("ingest_subjects", _tmp, Column("p", String))
_STREAM = {"stream_results": True, "yield_per": CHUNK}


@dataclass(frozen=True)
class IngestResult:
    dataset: str
    rows: int
    subjects: int
    new_subjects: int
    skipped_erased_rows: int
    consents: int
    seq: int
    mode: str = "insert"
    inserted: int = 0
    """rows stored whose record key was new"""
    updated: int = 0
    """rows stored in place of a record with their key (upsert, replace)"""
    deleted: int = 0
    """records removed without a row of the file taking their place (replace)"""
    skipped_existing_rows: int = 0
    """rows not stored because their record key is stored already (append)"""


class ConsentRow(TypedDict):
    """A checked consent record to store."""

    subject: str
    purpose: str
    basis: str
    granted_at: datetime
    withdrawn_at: datetime | None
    notice_version: str
    source: str


def csv_frame(data: bytes, what: str, name: str) -> pd.DataFrame:
    """Strictly parsed CSV bytes as a frame of strings (None for an empty field); each row's file line is
    in `frame.attrs["lines"]`, so that later checks name lines. Ragged rows are refused, all at once."""
    table = parse_csv(data, what, name)
    frame = pd.DataFrame(table.rows, columns=table.header, dtype=object)
    for column in table.header:
        empty = (frame[column] == "").to_numpy(dtype=bool)
        if empty.any():
            frame.loc[empty, column] = None
    frame.attrs["lines"] = table.lines
    return frame


def read_csv(path: Path | str, what: str) -> pd.DataFrame:
    """A user's CSV file (a regular file only), parsed by `csv_frame`."""
    return csv_frame(read_input(path, f"{what} file", TABLE_MAX_BYTES), what, Path(path).name)


def _frame_bytes(frame: pd.DataFrame) -> bytes:
    """What the ingest's source digest binds for a frame given in memory."""
    return bytes(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())


class RecordKeys:
    """A record's key: a keyed digest of the values that name it, per dataset. With a declared
    record_key, those fields' values; without one, the subject and all the record's values."""

    def __init__(self, schema: DatasetSchema, pseudonyms: Pseudonymizer) -> None:
        self.pseudonyms = pseudonyms
        names = [f.name for f in value_fields(schema)]
        self.declared = schema.record_key
        if schema.record_key:
            self.prefix = b"record-key\x00" + schema.name.encode() + b"\x00"
            self.positions: list[int | None] | None = [
                None if n == schema.subject_column else names.index(n) for n in schema.record_key
            ]
        else:
            self.prefix = b"record-row\x00" + schema.name.encode() + b"\x00"
            self.positions = None

    def of(self, subject: str, values: Sequence[Any]) -> bytes:
        if self.positions is None:
            parts: list[Any] = [subject, *values]
        else:
            parts = [subject if p is None else values[p] for p in self.positions]
        return bytes.fromhex(self.pseudonyms.value(self.prefix + encode(parts)).removeprefix("hmac-sha256:"))

    def describe(self) -> str:
        if self.declared:
            return f"record key ({', '.join(self.declared)})"
        return "subject and values (the dataset declares no record_key)"


def _open_source(data: DataInput, options: SourceOptions, fields: list[str]) -> Source | FrameSource:
    if isinstance(data, str | Path):
        return Source(data, options, fields)
    frame = pd.DataFrame.from_records(data) if isinstance(data, list) else data
    if options.mapping:
        missing = [c for c in options.mapping if c not in frame.columns]
        if missing:
            raise InvalidInput(f"the data has no column(s) {missing} to map")
        frame = frame.rename(columns=dict(options.mapping))
    return FrameSource(frame, options.chunk_rows)


def _temp_tables(conn: Connection) -> None:
    """The ingest's working tables, private to this connection and transaction (on a connection used
    before, dropped first)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("DROP TABLE IF EXISTS pg_temp.ingest_keys, pg_temp.ingest_subjects")
        conn.exec_driver_sql("CREATE TEMPORARY TABLE ingest_keys (k BYTEA PRIMARY KEY) ON COMMIT DROP")
        conn.exec_driver_sql('CREATE TEMPORARY TABLE ingest_subjects (p TEXT COLLATE "C" PRIMARY KEY) ON COMMIT DROP')
    else:
        _drop_temp(conn)
        conn.exec_driver_sql("CREATE TEMPORARY TABLE ingest_keys (k BLOB PRIMARY KEY)")
        conn.exec_driver_sql("CREATE TEMPORARY TABLE ingest_subjects (p TEXT PRIMARY KEY)")


def _drop_temp(conn: Connection) -> None:
    if conn.dialect.name != "postgresql":  # PostgreSQL drops them at commit
        conn.exec_driver_sql("DROP TABLE IF EXISTS temp.ingest_keys")
        conn.exec_driver_sql("DROP TABLE IF EXISTS temp.ingest_subjects")


def _insert_temp(conn: Connection, table: str, column: str, values: Sequence[Any]) -> None:
    if values:
        ph = placeholder(conn)
        sql = f"INSERT INTO {table} ({column}) VALUES ({ph}) ON CONFLICT DO NOTHING"
        conn.exec_driver_sql(sql, [(v,) for v in values])


def _converted(
    schema: DatasetSchema, source: Source | FrameSource, chunk: Chunk, bad: RowProblems
) -> tuple[list[str], list[list[Any]]]:
    """A chunk's subjects and values; its bad values into `bad`, located by file line or row number."""
    found = Problems(None)
    ext, rows = convert_rows(schema, chunk.frame, found)
    if found.count:
        shown = sorted(found.items)[:MAX_REPORTED]
        bad.extend(
            [(chunk.lines[pos], f"{head}{source.where} {chunk.lines[pos]}{tail}") for pos, _, head, tail in shown],
            found.count,
        )
    return ext, rows


class _Run:
    """What one ingest works under: the schema (its version and digest), the keys, the time, the mode;
    with `new_only`, the pseudonyms of the consents' subjects, which this ingest must create (`created`:
    those it did)."""

    def __init__(
        self,
        schema: DatasetSchema,
        schema_version: int,
        keyer: RecordKeys,
        now: datetime,
        mode: str,
        new_only: frozenset[str] | None = None,
    ) -> None:
        self.schema, self.schema_version, self.keyer, self.now, self.mode = schema, schema_version, keyer, now, mode
        self.sdig = schema.digest()
        self.now_us = to_us(now)
        self.expires_us = to_us(retention_deadline(now, schema.retention))
        self.new_only = new_only
        self.created: set[str] = set()


class Ingest:
    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        catalog: Catalog,
        keyring: Keyring,
        subjects: Subjects,
        taxonomy: Taxonomy,
        clock: Clock,
    ) -> None:
        self.store, self.ledger, self.catalog, self.keyring = store, ledger, catalog, keyring
        self.subjects, self.taxonomy, self.clock = subjects, taxonomy, clock

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
        """Encrypt and store rows (a file, a frame or a list of mappings), with optional consent records,
        in one transaction (all or nothing); `mode` says what becomes of rows whose record is stored.
        Consents given as IngestConsents without `any_subject` may name only subjects this ingest creates
        (PolicyDenied, recorded, otherwise)."""
        new_only = isinstance(consents_data, IngestConsents) and not consents_data.any_subject
        if isinstance(consents_data, IngestConsents):
            consents_data = consents_data.data
        if mode not in MODES:
            raise InvalidInput(f"unknown ingest mode {mode!r} (one of {', '.join(MODES)})")
        info = self.catalog.get(dataset)
        refuse_external(info, "ingested into (enrol its subjects instead)")
        schema = info.schema
        if mode == "upsert" and not schema.record_key:
            raise InvalidInput(f"mode upsert needs a record_key in the schema of {dataset} (which row replaces which)")
        options = options or SourceOptions()
        consent_rows: list[ConsentRow] = []
        consent_source = b""
        if consents_data is not None:
            if isinstance(consents_data, str | Path):
                consent_source = read_input(consents_data, "consents file", TABLE_MAX_BYTES)
                consents_frame = csv_frame(consent_source, "consents", Path(consents_data).name)
            else:
                consents_frame = consents_data
                consent_source = _frame_bytes(consents_frame)
            consent_rows = self.prepare_consents(schema, consents_frame)
        pseudonyms = self.subjects.pseudonyms
        named = frozenset(pseudonyms.subject(c["subject"]) for c in consent_rows) if new_only else None
        source = _open_source(data, options, [f.name for f in schema.fields])
        try:
            run = _Run(schema, info.version, RecordKeys(schema, pseudonyms), self.clock.now(), mode, named)
            return self._ingest(run, source, actor, consent_rows, consent_source, purpose, progress)
        except PolicyDenied as exc:  # the transaction is rolled back: the refusal is all that is written
            self.ledger.emit(
                None, AccessDenied, actor=actor, purpose=purpose, action="admin", dataset="*", reason=exc.message
            )
            raise
        finally:
            source.close()

    def _ingest(
        self,
        run: _Run,
        source: Source | FrameSource,
        actor: str,
        consent_rows: list[ConsentRow],
        consent_source: bytes,
        purpose: str,
        progress: IngestProgress | None,
    ) -> IngestResult:
        schema, keyer, mode, now = run.schema, run.keyer, run.mode, run.now
        dataset = schema.name
        r, s = records.c, subjects.c
        with self.store.write() as conn:
            self.catalog.check_version(conn, dataset, run.schema_version)  # sealed and stamped under this version
            if run.new_only:  # authorised before a row is read: no consent may name a subject already known
                known = self.subjects.by_pseudonym(conn, run.new_only)
                if known:
                    self._refuse_consents(actor, dataset, len(known))
            _temp_tables(conn)
            total, checked = self._check(conn, schema, source, keyer, progress)
            distinct = int(conn.execute(select(func.count()).select_from(_keys)).scalar_one())
            repeated = total - distinct
            stored_before = int(
                conn.execute(
                    select(func.count())
                    .select_from(records.join(_keys, r.record_key == _keys.c.k))
                    .where(r.dataset == dataset)
                ).scalar_one()
            )
            if repeated or (mode == "insert" and stored_before):
                parts = []
                if stored_before and mode == "insert":
                    parts.append(f"{stored_before:,} of {total:,} rows are records already stored in {dataset}")
                if repeated:
                    parts.append(f"{repeated:,} rows repeat an earlier row of the file")
                hint = "" if mode != "insert" or repeated else " (mode append stores only new records, upsert replaces"
                hint += " stored ones)" if hint else ""
                raise InvalidInput(f"{' and '.join(parts)} (by {keyer.describe()}); nothing was stored{hint}")
            removed, removed_set = 0, RecordSet()
            if mode in ("upsert", "replace"):
                gone = r.dataset == dataset
                if mode == "upsert":
                    gone = gone & r.record_key.in_(select(_keys.c.k))
                q = select(r.dataset, s.pseudonym, r.rid).where(gone).execution_options(**_STREAM)
                for ds, pseudonym, rid in conn.execute(q.join_from(records, subjects, s.id == r.subject_id)):
                    removed_set.add(str(ds), str(pseudonym), bytes(rid))
                    removed += 1
                conn.execute(delete(records).where(gone))
            stored, counts = self._write(conn, run, source, stored_before, total, progress)
            if source.digest != checked:
                raise InvalidInput(f"data file {source.name} changed while it was being ingested; nothing was stored")
            n_consents, given, withdrawn = self._store_consents(conn, run, actor, consent_rows)
            n_subjects = int(conn.execute(select(func.count()).select_from(_subjects)).scalar_one())
            h = hashlib.sha256()
            for (p,) in conn.execute(select(_subjects.c.p).order_by(_subjects.c.p).execution_options(**_STREAM)):
                h.update(str(p).encode() + b"\n")
            emptied = None
            if removed:
                emptied = int(
                    conn.execute(
                        select(func.count())
                        .select_from(subjects)
                        .where(s.erased_at.is_(None), ~exists().where(r.subject_id == s.id))
                    ).scalar_one()
                )
            updated = stored_before if mode in ("upsert", "replace") else 0
            source_digest = str(checked)
            if consent_rows or consent_source:
                source_hash = source.hash.copy()
                source_hash.update(b"\x00consents\x00" + consent_source)
                source_digest = "sha256:" + source_hash.hexdigest()
            rows = counts["rows"]
            _drop_temp(conn)
            seq = self.ledger.emit(
                conn,
                RecordsIngested,
                time=now,
                actor=actor,
                purpose=purpose,
                dataset=dataset,
                rows=rows,
                subjects=n_subjects,
                new_subjects=counts["new_subjects"],
                skipped_erased_rows=counts["skipped_erased"],
                consents=n_consents,
                subjects_digest="sha256:" + h.hexdigest(),
                source_digest=source_digest,
                records_digest=stored.digest(),
                consents_digest=given.digest(),
                withdrawals_digest=withdrawn.digest(),
                mode=mode,
                inserted=rows - min(updated, rows),
                updated=min(updated, rows),
                deleted=removed - min(updated, rows),
                skipped_existing_rows=counts["skipped_existing"],
                removed_records=removed,
                removed_digest=removed_set.digest() if removed else None,
                subjects_without_records=emptied,
            )
        return IngestResult(
            dataset,
            rows,
            n_subjects,
            counts["new_subjects"],
            counts["skipped_erased"],
            n_consents,
            seq,
            mode=mode,
            inserted=rows - min(updated, rows),
            updated=min(updated, rows),
            deleted=removed - min(updated, rows),
            skipped_existing_rows=counts["skipped_existing"],
        )

    def _check(
        self,
        conn: Connection,
        schema: DatasetSchema,
        source: Source | FrameSource,
        keyer: RecordKeys,
        progress: IngestProgress | None,
    ) -> tuple[int, str]:
        """The first pass: every row checked (InvalidInput naming every bad row, none stored) and its
        record key collected. Returns (rows, the digest of what was read)."""
        bad = RowProblems()
        total = 0
        for chunk in source.chunks():
            ext, rows = _converted(schema, source, chunk, bad)
            total += len(rows)
            if not bad.count and not source.problems.count:
                _insert_temp(conn, "ingest_keys", "k", [keyer.of(e, v) for e, v in zip(ext, rows, strict=True)])
            if progress is not None:
                progress("checking", source.position, source.size)
        if bad.count or source.problems.count:
            raise InvalidInput(problems_message(source, bad))
        assert source.digest is not None
        return total, source.digest

    def _write(
        self,
        conn: Connection,
        run: _Run,
        source: Source | FrameSource,
        stored_before: int,
        total: int,
        progress: IngestProgress | None,
    ) -> tuple[RecordSet, Counter[str]]:
        """The second pass: new subjects created, every row kept sealed under its subject's data key and
        inserted, chunk by chunk. Returns the multiset hash of the records stored and the counts."""
        schema, keyer, dataset = run.schema, run.keyer, run.schema.name
        stored = RecordSet()
        counts: Counter[str] = Counter(rows=0, new_subjects=0, skipped_erased=0, skipped_existing=0)
        done = 0
        for chunk in source.chunks():
            bad = RowProblems()
            external, rows = _converted(schema, source, chunk, bad)
            if bad.count or source.problems.count:
                raise InvalidInput(f"data file {source.name} changed while it was being ingested; nothing was stored")
            rkeys = [keyer.of(e, v) for e, v in zip(external, rows, strict=True)]
            keep = list(range(len(rows)))
            if run.mode == "append" and stored_before:
                present = self._stored_keys(conn, dataset, rkeys)
                keep = [i for i in keep if rkeys[i] not in present]
                counts["skipped_existing"] += len(rows) - len(keep)
            done += len(rows)
            if keep:
                self._store_chunk(conn, run, external, rows, rkeys, keep, stored, counts)
            if progress is not None:
                progress("storing", done, total)
        return stored, counts

    @staticmethod
    def _stored_keys(conn: Connection, dataset: str, keys: Sequence[bytes]) -> set[bytes]:
        r = records.c
        out: set[bytes] = set()
        for part in chunks(keys):
            q = select(r.record_key).where(r.dataset == dataset, r.record_key.in_(list(part)))
            out.update(bytes(k) for k in conn.execute(q).scalars())
        return out

    def _store_chunk(
        self,
        conn: Connection,
        run: _Run,
        external: list[str],
        rows: list[list[Any]],
        rkeys: list[bytes],
        keep: list[int],
        stored: RecordSet,
        counts: Counter[str],
    ) -> None:
        """One chunk's kept rows: subjects created as needed, each row sealed and inserted."""
        dataset, now = run.schema.name, run.now
        pseudonyms = self.subjects.pseudonyms
        chunk_subjects = {external[i] for i in keep}
        pseud = {e: pseudonyms.subject(e) for e in chunk_subjects}
        known = self.subjects.by_pseudonym(conn, pseud.values())
        new_ext = sorted(e for e in chunk_subjects if pseud[e] not in known)
        # new subjects: keys first, so the external id can be sealed before the row exists
        fresh = {e: new_raw_key() for e in new_ext}
        fresh_keys = {e: DataKey(k) for e, k in fresh.items()}
        if new_ext:
            mine = self.subjects.insert(
                conn, [(pseud[e], fresh_keys[e].seal(e.encode(), subject_ad(pseud[e])), now) for e in new_ext]
            )
            known.update(self.subjects.by_pseudonym(conn, [pseud[e] for e in new_ext]))
            # a concurrent ingest that committed them first made them existing subjects (with their keys)
            new_ext = [e for e in new_ext if pseud[e] in mine]
            fresh = {e: fresh[e] for e in new_ext}
            if run.new_only:
                run.created.update(pseud[e] for e in new_ext if pseud[e] in run.new_only)
        counts["new_subjects"] += len(new_ext)
        erased = {p for p, subj in known.items() if subj.erased}
        per_subject = Counter(external[i] for i in keep if pseud[external[i]] not in erased)
        ids = {e: known[pseud[e]].id for e in per_subject}
        keys: dict[int, tuple[int, DataKey]] = {}
        if new_ext:
            keys.update(
                self.keyring.create_prepared(
                    conn,
                    {ids[e]: (fresh[e], fresh_keys[e]) for e in new_ext},
                    sealed={ids[e]: per_subject[e] + 1 for e in new_ext},
                )
            )
        old = {ids[e]: n for e, n in per_subject.items() if e not in fresh}
        if old:
            keys.update(self.keyring.for_sealing(conn, old))
        out = []
        for i in keep:
            e = external[i]
            if pseud[e] in erased:
                counts["skipped_erased"] += 1
                continue
            sid = ids[e]
            ver, key = keys[sid]
            rid = os.urandom(16)
            stored.add(dataset, pseud[e], rid)
            ad = record_ad(dataset, rid, run.sdig, 0, run.now_us, run.expires_us)
            sealed = key.seal(encode(rows[i]), ad)
            out.append((rid, dataset, sid, ver, run.now_us, run.expires_us, sealed, 0, run.schema_version, rkeys[i]))
        try:
            bulk_insert(conn, records, out, columns=_RECORD_COLUMNS)
        except DatabaseIntegrityError:
            raise InvalidInput(
                f"another ingest stored records with the same keys in {dataset} meanwhile; nothing was stored "
                "(run it again)"
            ) from None
        counts["rows"] += len(out)
        _insert_temp(conn, "ingest_subjects", "p", sorted(pseud[e] for e in per_subject))

    @staticmethod
    def _refuse_consents(actor: str, dataset: str, n: int) -> NoReturn:
        raise PolicyDenied(
            f"{actor} may not record consents for {n} subject(s) this ingest into {dataset} does not create: "
            "consents given with an ingest name only its new subjects, unless the principal may record "
            "consents (admin, as consent grant needs)"
        )

    def _store_consents(
        self, conn: Connection, run: _Run, actor: str, consent_rows: list[ConsentRow]
    ) -> tuple[int, RecordSet, RecordSet]:
        """Consent rows for subjects of the data or already known (InvalidInput naming how many are
        neither), or with `run.new_only` for subjects this ingest created (PolicyDenied otherwise: a
        concurrent ingest created them first); those of erased subjects are not stored."""
        given, withdrawn = RecordSet(), RecordSet()
        if not consent_rows:
            return 0, given, withdrawn
        pseudonyms = self.subjects.pseudonyms
        pseud = {e: pseudonyms.subject(e) for e in {c["subject"] for c in consent_rows}}
        known = self.subjects.by_pseudonym(conn, pseud.values())
        absent = [e for e in pseud if pseud[e] not in known]
        if absent:
            raise InvalidInput(f"consents name {len(absent)} subject(s) that are neither in the data nor known")
        if run.new_only is not None:
            others = [p for p in pseud.values() if p not in run.created]
            if others:
                self._refuse_consents(actor, run.schema.name, len(others))
        crow = []
        for c in consent_rows:
            subj = known[pseud[c["subject"]]]
            if subj.erased:
                continue
            crow.append(
                (
                    subj.id,
                    c["purpose"],
                    c["basis"],
                    c["granted_at"],
                    c["withdrawn_at"],
                    c["notice_version"],
                    c["source"],
                )
            )
            add_consent(given, withdrawn, pseud[c["subject"]], c)
        bulk_insert(conn, consents, crow, columns=("subject_id", *_CONSENT_FIELDS))
        return len(crow), given, withdrawn

    def prepare_consents(self, schema: DatasetSchema, data: ConsentSource) -> list[ConsentRow]:
        """Checked consent rows; every bad row (unknown or undeclared purpose, bad basis or time) is
        reported at once, by file line when the consents came from a CSV."""
        frame = read_csv(Path(data), "consents") if isinstance(data, str | Path) else data.astype("object")
        cols = set(frame.columns)
        if schema.subject_column in cols and "subject" not in cols:
            frame = frame.rename(columns={schema.subject_column: "subject"})
            cols = set(frame.columns)
        unknown = cols - CONSENT_COLUMNS
        if unknown:
            raise InvalidInput(f"consents: unknown column(s) {sorted(unknown)} (expected {sorted(CONSENT_COLUMNS)})")
        for required in ("subject", "purpose"):
            if required not in cols:
                raise InvalidInput(f"consents: column {required!r} is required")
        lines = frame.attrs.get("lines")
        now = self.clock.now()
        out = []
        problems: list[str] = []
        for i, row in enumerate(frame.to_dict("records")):
            where = f"consents line {lines[i]}" if lines is not None and i < len(lines) else f"consents row {i + 1}"
            try:
                out.append(self._consent_row(schema, row, where, now))
            except InvalidInput as exc:
                problems.append(exc.message)
        if len(problems) == 1:
            raise InvalidInput(problems[0])
        if problems:
            raise InvalidInput(f"{len(problems)} invalid consent rows: " + summarise(problems))
        return out

    def _consent_row(self, schema: DatasetSchema, row: dict[Any, Any], where: str, now: datetime) -> ConsentRow:
        subject = row.get("subject")
        if not isinstance(subject, str) or not subject.strip():
            raise InvalidInput(f"{where}: missing subject id")
        purpose = str(row.get("purpose") or "")
        try:
            self.taxonomy.purpose(purpose)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from None
        if purpose not in schema.purposes:
            raise InvalidInput(
                f"{where}: purpose {purpose!r} is not declared by dataset {schema.name} "
                f"(its purposes: {', '.join(schema.purposes)})"
            )
        basis = row.get("basis") or schema.purposes.get(purpose) or "gdpr.consent"
        try:
            self.taxonomy.legal_basis(str(basis))
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from None
        granted = _parse_time(row.get("granted_at"), f"{where}: granted_at") or now
        withdrawn = _parse_time(row.get("withdrawn_at"), f"{where}: withdrawn_at")
        if withdrawn is not None and withdrawn < granted:
            raise InvalidInput(f"{where}: withdrawn_at is before granted_at")
        return {
            "subject": subject.strip(),
            "purpose": purpose,
            "basis": str(basis),
            "granted_at": granted,
            "withdrawn_at": withdrawn,
            "notice_version": consent_text(
                str(row.get("notice_version") or "unspecified"), "notice_version", NOTICE_VERSION_MAX, where
            ),
            "source": consent_text(str(row.get("source") or "ingest"), "source", SOURCE_MAX, where),
        }


_ISO_START = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:$|[T ])")


def _parse_time(value: object, where: str) -> datetime | None:
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() == "":
        return None
    if not isinstance(value, datetime | pd.Timestamp) and not _ISO_START.match(str(value).strip()):
        # ISO 8601 only: never a word read as the clock (`today`) or a locale's order (06/05/2020)
        raise InvalidInput(f"{where}: {value!r} is not an ISO 8601 date/time")
    try:
        ts = pd.Timestamp(str(value).strip())
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"{where}: {value!r} is not a date/time") from None
    if pd.isna(ts):
        raise InvalidInput(f"{where}: {value!r} is not a date/time")
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    when: datetime = ts.to_pydatetime()
    return when
