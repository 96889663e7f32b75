"""Datasets over time: changing a dataset's schema (a new schema version) and dropping a dataset.

A schema change is checked against every stored record before it is made: a change that only widens
what the schema accepts is safe; one that narrows it (tighter bounds, fewer declared values, a field
made non-nullable) is made only when no stored record violates it, and is refused with the number of
records that would (never their values). Records keep the schema version they were sealed under; reads
present them in the current schema (fields added since are null). Retention changes apply to records
ingested from then on (a record's expiry is bound into its associated data). A purpose removed stops
reads for it; the consents given for it stay, as they belong to the subject, not the dataset.

Dropping a dataset deletes every record of it and crypto-shreds, as an erasure does, every subject left
without records anywhere; the dataset's name stays taken (a tombstone), so nothing can come back under it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from complai.clock import Clock
from complai.crypto.keyring import Keyring
from complai.errors import IntegrityError, InvalidInput, NotFound
from complai.events import DatasetAltered, DatasetDropped
from complai.ledger.log import Ledger
from complai.store import Store
from complai.store.tables import dataset_versions, datasets, external_subjects, records, subjects
from complai.taxonomy import Taxonomy
from complai.vault.catalog import Catalog, SchemaVersion, stored_schema
from complai.vault.notices import Notices, RecordsExpired, SubjectsErased
from complai.vault.records import RecordSet, check_value, open_record, value_fields
from complai.vault.retention import shred_emptied
from complai.vault.schema import DatasetSchema, FieldSpec, load_schema
from complai.vault.subjects import CHUNK, set_digest

Progress = Callable[[int, int], None]
"""Called with (records checked, records in the dataset) while a schema change is checked."""


@dataclass
class Change:
    """What a new schema version changes, by kind (each a list of short descriptions, no data values
    beyond what the schemas declare), and which fields every stored record must be checked against."""

    added: list[str] = field(default_factory=list)
    widened: list[str] = field(default_factory=list)
    narrowed: list[str] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    purposes: list[str] = field(default_factory=list)
    retention: list[str] = field(default_factory=list)
    deidentify: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    check: dict[str, FieldSpec] = field(default_factory=dict)

    def summary(self) -> dict[str, list[str]]:
        """The non-empty kinds, as the ledger records them."""
        kinds = ("added", "widened", "narrowed", "values", "categories", "fields", "purposes", "retention")
        out = {k: list(getattr(self, k)) for k in (*kinds, "deidentify", "other")}
        return {k: v for k, v in out.items() if v}


@dataclass(frozen=True)
class AlterResult:
    dataset: str
    from_version: int
    version: int
    from_schema_digest: str
    schema_digest: str
    changes: dict[str, list[str]]
    records_checked: int
    dry_run: bool
    seq: int | None
    notes: list[str]


@dataclass(frozen=True)
class DropResult:
    dataset: str
    records: int
    subjects: int
    subjects_shredded: int
    subjects_kept: int
    keys_destroyed: int
    seq: int


def _bound(value: Any) -> str:
    return "none" if value is None else str(value)


def diff(old: DatasetSchema, new: DatasetSchema) -> Change:
    """What changing `old` to `new` does; InvalidInput for a change no migration makes safe (the name,
    subject column, subject type or jurisdiction changed, a field removed or its type changed, a
    non-nullable field added)."""
    ch = Change()
    for what, a, b in (
        ("name", old.name, new.name),
        ("subject column", old.subject_column, new.subject_column),
        ("subject type", old.subject_type, new.subject_type),
        ("jurisdiction", old.jurisdiction, new.jurisdiction),
    ):
        if a != b:
            raise InvalidInput(f"dataset {old.name}: the {what} cannot change ({a!r} to {b!r})")
    before = {f.name: f for f in old.fields}
    after = {f.name: f for f in new.fields}
    removed = sorted(set(before) - set(after))
    if removed:
        raise InvalidInput(
            f"dataset {old.name}: removing field(s) {removed} is not supported (stored records hold their values)"
        )
    for f in new.fields:
        if f.name not in before:
            if not f.nullable:
                raise InvalidInput(
                    f"dataset {old.name}: new field {f.name!r} must be nullable (stored records have no value for it)"
                )
            ch.added.append(f"{f.name} ({f.type})")
            continue
        o = before[f.name]
        if o.type != f.type:
            raise InvalidInput(f"dataset {old.name}: field {f.name!r} cannot change type ({o.type} to {f.type})")
        _field_changes(ch, o, f)
    # subject ids live (encrypted) with the subjects, not in records, and ingest requires one on every row
    ch.check.pop(new.subject_column, None)
    if [f.name for f in old.fields if f.name in after] != [f.name for f in new.fields if f.name in before]:
        ch.fields.append("field order changed")
    for p in sorted(set(new.purposes) - set(old.purposes)):
        ch.purposes.append(f"added {p} ({new.purposes[p]})")
    for p in sorted(set(old.purposes) - set(new.purposes)):
        ch.purposes.append(f"removed {p} (reads for it stop; consents given for it stay)")
    for p in sorted(set(old.purposes) & set(new.purposes)):
        if old.purposes[p] != new.purposes[p]:
            ch.purposes.append(f"{p}: basis {old.purposes[p]} -> {new.purposes[p]}")
    if old.retention != new.retention:
        ch.retention.append(f"{old.retention} -> {new.retention} (for records ingested from now on)")
    if old.deidentify != new.deidentify:
        changed = sorted(
            p for p in set(old.deidentify) | set(new.deidentify) if old.deidentify.get(p) != new.deidentify.get(p)
        )
        ch.deidentify.append(f"de-identification changed for {', '.join(changed)}")
    if old.description != new.description:
        ch.other.append("description changed")
    return ch


def _field_changes(ch: Change, o: FieldSpec, f: FieldSpec) -> None:
    narrowed = False
    lo_old, hi_old = o.numeric_bounds
    lo_new, hi_new = f.numeric_bounds
    if lo_old != lo_new:
        tighter = lo_new is not None and (lo_old is None or lo_new > lo_old)
        (ch.narrowed if tighter else ch.widened).append(f"{f.name}: min {_bound(o.min)} -> {_bound(f.min)}")
        narrowed |= tighter
    if hi_old != hi_new:
        tighter = hi_new is not None and (hi_old is None or hi_new < hi_old)
        (ch.narrowed if tighter else ch.widened).append(f"{f.name}: max {_bound(o.max)} -> {_bound(f.max)}")
        narrowed |= tighter
    if o.nullable != f.nullable:
        (ch.narrowed if not f.nullable else ch.widened).append(
            f"{f.name}: {'no longer' if not f.nullable else 'now'} nullable"
        )
        narrowed |= not f.nullable
    if o.values != f.values:
        if f.values is None:
            ch.widened.append(f"{f.name}: any value (no declared values)")
        elif o.values is None:
            ch.narrowed.append(f"{f.name}: values restricted to {f.values}")
            narrowed = True
        else:
            gone = [v for v in o.values if v not in f.values]
            new = [v for v in f.values if v not in o.values]
            if new:
                ch.values.append(f"{f.name}: added {new}")
            if gone:
                ch.values.append(f"{f.name}: removed {gone}")
                ch.narrowed.append(f"{f.name}: values {gone} no longer allowed")
                narrowed = True
            if not new and not gone:
                ch.values.append(f"{f.name}: values reordered")
    if o.category != f.category:
        ch.categories.append(f"{f.name}: {o.category} -> {f.category}")
    for attr in ("identifier", "sensitive", "description"):
        if getattr(o, attr) != getattr(f, attr):
            ch.other.append(f"{f.name}: {attr} {getattr(o, attr)} -> {getattr(f, attr)}")
    if narrowed:
        ch.check[f.name] = f


def _valid(spec: FieldSpec, value: Any) -> bool:
    try:
        check_value(spec, value)
    except InvalidInput:
        return False
    return True


class Lifecycle:
    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        catalog: Catalog,
        keyring: Keyring,
        notices: Notices,
        taxonomy: Taxonomy,
        clock: Clock,
    ) -> None:
        self.store, self.ledger, self.catalog, self.keyring = store, ledger, catalog, keyring
        self.notices, self.taxonomy, self.clock = notices, taxonomy, clock

    # --- alter -----------------------------------------------------------------------------------

    def alter(
        self,
        name: str,
        schema: DatasetSchema,
        actor: str,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> AlterResult:
        """Change a dataset's schema to a new version. Every stored record is decrypted and checked
        against each narrowed field inside the write transaction; InvalidInput with the number of
        offending records if any does not fit. One DatasetAltered event in the same transaction. With
        `dry_run`, the same checks in a read transaction, and nothing is written."""
        new = load_schema(schema.model_dump(mode="json"), self.taxonomy)
        if new.name != name:
            raise InvalidInput(f"the schema names dataset {new.name!r}, not {name!r}")
        now = self.clock.now()
        with self.store.read() if dry_run else self.store.write() as conn:
            row = self._lock(conn, name, shared=dry_run)
            current = stored_schema(name, row.schema_json, row.schema_digest, "its current version")
            version = int(row.version)
            versions = self.catalog.versions(conn, name)
            if version not in versions or versions[version].digest != row.schema_digest:
                raise IntegrityError(f"dataset {name}: its current schema is not its version {version}")
            if new.digest() == row.schema_digest:
                raise InvalidInput(f"dataset {name}: the schema is the same as its current version {version}")
            change = diff(current, new)
            if self.catalog.current(conn, name).source is not None and _fields(current) != _fields(new):
                # no stored record to check: the source's physical types would have to be (a new registration)
                raise InvalidInput(
                    f"dataset {name} is external: its fields' names and types are its source's and cannot change "
                    "here (purposes, retention, bounds and descriptions can); register the changed source as a new "
                    "dataset"
                )
            checked = self._check_records(conn, name, versions, change.check, progress)
            notes = []
            if change.retention:
                notes.append(
                    "the new retention applies to records ingested from now on; stored records keep their expiry"
                )
            if any(p.startswith("removed ") for p in change.purposes):
                notes.append("reads for a removed purpose stop; consents given for it stay with their subjects")
            seq = None
            if not dry_run:
                text, sdig = new.canonical_json(), new.digest()
                conn.execute(
                    insert(dataset_versions).values(
                        dataset=name, version=version + 1, schema_json=text, schema_digest=sdig, created_at=now
                    )
                )
                conn.execute(
                    update(datasets)
                    .where(datasets.c.name == name)
                    .values(
                        schema_json=text,
                        schema_digest=sdig,
                        purposes_json=json.dumps(new.purposes, sort_keys=True),
                        retention=new.retention,
                        version=version + 1,
                    )
                )
                seq = self.ledger.emit(
                    conn,
                    DatasetAltered,
                    time=now,
                    actor=actor,
                    purpose="administration",
                    dataset=name,
                    from_version=version,
                    version=version + 1,
                    from_schema_digest=str(row.schema_digest),
                    schema_digest=sdig,
                    changes=change.summary(),
                    records_checked=checked,
                    fields=len(new.fields),
                    purposes=dict(new.purposes),
                    retention=new.retention,
                    jurisdiction=new.jurisdiction,
                )
        return AlterResult(
            name,
            version,
            version + 1,
            str(row.schema_digest),
            new.digest(),
            change.summary(),
            checked,
            dry_run,
            seq,
            notes,
        )

    def _lock(self, conn: Connection, name: str, shared: bool = False) -> Any:
        """The live dataset's row, held to the end of the transaction (no ingest under the old version
        commits after a change is checked); NotFound if there is none or it was dropped."""
        query = select(datasets).where(datasets.c.name == name).with_for_update(read=shared)
        row = conn.execute(query).first()
        if row is None or row.dropped_at is not None:
            raise NotFound(f"no dataset named {name!r}")
        return row

    def _check_records(
        self,
        conn: Connection,
        name: str,
        versions: dict[int, SchemaVersion],
        check: dict[str, FieldSpec],
        progress: Progress | None,
    ) -> int:
        """Decrypt every stored record of the dataset (each under its own version's digest) and count
        those with a value a narrowed field no longer accepts; InvalidInput with the count if any."""
        r = records.c
        total = int(conn.execute(select(func.count()).select_from(records).where(r.dataset == name)).scalar_one())
        if not check:
            return 0
        layouts = {v: [f.name for f in value_fields(sv.schema)] for v, sv in versions.items()}
        offending: dict[str, int] = dict.fromkeys(check, 0)
        bad_records = 0
        seen = 0
        last: bytes | None = None
        while True:
            q = (
                select(
                    r.rid, r.subject_id, r.dek_version, r.data, r.version, r.created_us, r.expires_us, r.schema_version
                )
                .where(r.dataset == name)
                .order_by(r.rid)
                .limit(CHUNK)
            )
            if last is not None:
                q = q.where(r.rid > last)
            rows = conn.execute(q).all()
            if not rows:
                break
            last = bytes(rows[-1].rid)
            keys = self.keyring.load(conn, {int(row.subject_id) for row in rows})
            for row in rows:
                sv = versions.get(int(row.schema_version))
                key = keys.get(int(row.subject_id), {}).get(int(row.dek_version))
                if sv is None or key is None:
                    raise IntegrityError(f"a record of {name} has no schema version or data key to open it")
                values = dict(zip(layouts[sv.version], open_record(key, name, sv.digest, row), strict=True))
                bad = False
                for fname, spec in check.items():
                    if not _valid(spec, values.get(fname)):
                        offending[fname] += 1
                        bad = True
                bad_records += bad
            seen += len(rows)
            if progress is not None:
                progress(seen, total)
        if bad_records:
            per = ", ".join(f"{f}: {n}" for f, n in offending.items() if n)
            raise InvalidInput(
                f"dataset {name}: {bad_records} stored record(s) do not fit the new schema ({per}); "
                "rectify or erase them first, or keep the wider declaration"
            )
        return seen

    # --- drop ------------------------------------------------------------------------------------

    def drop(self, name: str, actor: str) -> DropResult:
        """Drop a dataset: delete its records, crypto-shred the subjects left without records anywhere;
        one DatasetDropped event in the same transaction."""
        with self.store.write() as conn:
            result = self.drop_in(conn, name, actor, None)
        self.store.purge_freed()
        return result

    def drop_in(self, conn: Connection, name: str, actor: str, reapplied_from: int | None) -> DropResult:
        """`drop` in the caller's transaction (a restore re-applies a drop made after its backup)."""
        now = self.clock.now()
        row = self._lock(conn, name)
        r, s = records.c, subjects.c
        affected = [int(x) for x in conn.execute(select(r.subject_id).where(r.dataset == name).distinct()).scalars()]
        # an external dataset's subjects are unlinked with it (the rows stay in the owner's lake)
        x = external_subjects.c
        enrolled = [int(i) for i in conn.execute(select(x.subject_id).where(x.dataset == name)).scalars()]
        conn.execute(delete(external_subjects).where(x.dataset == name))
        deleted = RecordSet()
        n_rec = 0
        q = select(s.pseudonym, r.rid).join_from(records, subjects, s.id == r.subject_id).where(r.dataset == name)
        for pseudonym, rid in conn.execute(q):
            deleted.add(name, str(pseudonym), bytes(rid))
            n_rec += 1
        if affected:
            # the models these records trained are flagged, as when records are deleted at their retention
            self.notices.publish(RecordsExpired(conn, now, name, tuple(affected), "was deleted with its dataset"))
        conn.execute(delete(records).where(r.dataset == name))
        if enrolled:
            affected = sorted(set(affected) | set(enrolled))
        gone = shred_emptied(conn, self.keyring, affected, now, restricted_at=None, restriction_reason=None)
        empty, pseudos, n_keys, n_con = gone.subject_ids, gone.pseudonyms, gone.keys_destroyed, gone.consents
        given, withdrawn = gone.given, gone.withdrawn
        conn.execute(update(datasets).where(datasets.c.name == name).values(dropped_at=now))
        seq = self.ledger.emit(
            conn,
            DatasetDropped,
            time=now,
            actor=actor,
            purpose="administration",
            dataset=name,
            version=int(row.version),
            schema_digest=str(row.schema_digest),
            records=n_rec,
            records_digest=deleted.digest(),
            subjects=len(affected),
            subjects_shredded=len(empty),
            subject_pseudonyms_digest=set_digest(pseudos),
            subjects_kept=len(affected) - len(empty),
            keys_destroyed=n_keys,
            consents=n_con,
            consents_digest=given.digest(),
            withdrawals_digest=withdrawn.digest(),
            reapplied_from=reapplied_from,
        )
        if empty:
            self.notices.publish(SubjectsErased(conn, now, tuple(empty), seq))
        return DropResult(name, n_rec, len(affected), len(empty), len(affected) - len(empty), n_keys, seq)


def _fields(schema: DatasetSchema) -> list[tuple[str, str]]:
    """What an external dataset's source was checked against: its fields' names and types, and its
    subject column."""
    return [(f.name, f.type) for f in schema.fields] + [("\x00subject", schema.subject_column)]
