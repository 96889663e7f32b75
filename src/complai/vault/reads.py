"""Governed reads: which records a purpose may see now, decrypting them, and recording a read (its ledger
entry and the access log of the subjects it reached)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import pandas as pd
from sqlalchemy import ColumnElement, Connection, and_, exists, func, insert, or_, select

from complai.clock import Clock, to_us
from complai.crypto.aead import DataKey
from complai.crypto.keyring import Keyring
from complai.errors import IntegrityError, InvalidInput
from complai.events import DataRead
from complai.inputs import INT64_MAX
from complai.ledger.log import Ledger
from complai.store import Store
from complai.store.tables import access_log, consents, objections, records, subject_keys, subjects
from complai.taxonomy import Taxonomy
from complai.vault.catalog import Catalog, DatasetInfo, layout, present, refuse_external
from complai.vault.readcache import Entry, Look, Opened, ReadCache
from complai.vault.records import column_array, open_record, to_frame, value_fields
from complai.vault.schema import DatasetSchema
from complai.vault.subjects import Subjects, open_external, pack_ids, set_digest

FILL_WAIT_S = 30.0  # the longest a read waits for another that is opening every record of its dataset
_AGAIN = threading.Event()  # "begin the read again now": a wait that is over at once
_AGAIN.set()


class Fetched(NamedTuple):
    """What a purpose may see of a dataset now, decrypted (not yet recorded as a read)."""

    frame: pd.DataFrame
    subjects: dict[str, int]
    """pseudonym -> subject id of every subject with a row in `frame`"""
    total: int
    """records in the dataset, seen or not"""
    columns: list[str]


class Reads:
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
        self.cache: ReadCache | None = None  # opened records kept between reads (a long-running service)
        store.snapshot_marks.append(self._cache_point)

    def _cache_point(self) -> tuple[int, tuple[int, bytes] | None] | None:
        """Where the read cache looks at the ledger from, for a read whose snapshot is taken after now."""
        return self.cache.before_read() if self.cache is not None else None

    def eligible_condition(self, schema: DatasetSchema, purpose: str, at: datetime) -> ColumnElement[bool]:
        """SQL condition on records for: live subject, unexpired, lawful basis live for the purpose."""
        r = records.c
        return and_(
            r.dataset == schema.name,
            r.expires_us > to_us(at),
            self.subject_condition(schema, purpose, at, r.subject_id),
        )

    def subject_condition(
        self, schema: DatasetSchema, purpose: str, at: datetime, subject_id: ColumnElement[Any]
    ) -> ColumnElement[bool]:
        """SQL condition on a subject (`subject_id`, with `subjects` joined) for: not erased or restricted,
        consent live at `at` when the purpose's basis requires it, no live objection to the purpose or to
        all ('*'). The one definition of who a purpose may reach: vault reads and external datasets'
        links both use it."""
        basis = self.taxonomy.legal_basis(schema.basis(purpose))
        s = subjects.c
        cond: list[ColumnElement[bool]] = [s.erased_at.is_(None), s.restricted_at.is_(None)]
        if basis.attrs.get("requires_consent"):
            c = consents.c
            cond.append(
                exists().where(
                    c.subject_id == subject_id,
                    c.purpose == purpose,
                    c.granted_at <= at,
                    or_(c.withdrawn_at.is_(None), c.withdrawn_at > at),
                )
            )
        o = objections.c
        cond.append(
            ~exists().where(
                o.subject_id == subject_id,
                o.purpose.in_([purpose, "*"]),
                o.at <= at,
                or_(o.lifted_at.is_(None), o.lifted_at > at),
            )
        )
        return and_(*cond)

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
        """Decrypt what this purpose may see, without recording (callers record their own event). With
        `pseudonym_column` the frame also carries each row's subject pseudonym under that name;
        `progress(done, total)` is told the records decrypted as it goes. `ordered` gives the rows in a
        stable order (by when each record was stored, then its id: the same on every backend and every
        call, so pages cut from it neither overlap nor skip); `window` (offset, limit) fetches and
        decrypts only that slice of it. Without either, rows come as the store returns them (in the
        order they were stored, on SQLite), which training and federated partitions rely on for
        reproducible runs across workspaces. `info`: the dataset's schema as the caller just read it (it
        is checked in the read's own snapshot, and read again if it changed meanwhile)."""
        deadline = time.monotonic() + FILL_WAIT_S
        waits = 0
        given = info
        attempt = 0
        while True:
            if attempt:  # a retry must see what was committed since: not an operation's shared snapshot
                self.store.renew_shared_reads()
            info, given = given or self.catalog.get(dataset), None
            refuse_external(info, "read in process")
            schema = info.schema
            schema.basis(purpose)
            names = [f.name for f in schema.fields]
            cols = list(columns) if columns else names
            unknown = [c for c in cols if c not in names]
            if unknown:
                raise InvalidInput(f"unknown column(s) {unknown} in dataset {dataset}")
            twice = sorted({c for c in cols if cols.count(c) > 1})
            if twice:
                raise InvalidInput(f"column(s) {twice} asked more than once")
            may_wait = waits < 2 and time.monotonic() < deadline
            got = self._fetch_once(
                dataset, purpose, info, cols, pseudonym_column, progress, ordered, window, may_wait=may_wait
            )
            attempt += 1
            if isinstance(got, Fetched):
                return got
            if isinstance(got, threading.Event):  # another read is opening every record: its entry serves
                waits += 1  # this one too (all waits of one read together last at most FILL_WAIT_S)
                got.wait(max(0.0, deadline - time.monotonic()))
            # else the schema changed between reading it and the read's snapshot: read it again

    def _fetch_once(
        self,
        dataset: str,
        purpose: str,
        info: DatasetInfo,
        cols: list[str],
        pseudonym_column: str | None,
        progress: Callable[[int, int], None] | None,
        ordered: bool,
        window: tuple[int, int] | None,
        may_wait: bool,
    ) -> Fetched | threading.Event | None:
        """One attempt of `fetch`: from the kept records, by opening them all for the cache, or from the
        store alone; or, when another read is already opening them all for the cache (and `may_wait`),
        the event to wait for before trying again, so that concurrent reads after a change open the
        dataset once, not once each; or None when the dataset's schema in this read's snapshot is not
        `info`'s (changed meanwhile: its eligibility and layout would be the old schema's)."""
        schema = info.schema
        now = self.clock.now()
        cache = self.cache
        start = self.store.before_snapshot(self._cache_point) if cache is not None else None
        entry: Entry | None = None
        fill: Look | None = None
        look: Look | None = None
        bound = INT64_MAX
        r, s = records.c, subjects.c
        try:
            with self.store.read() as conn:
                if self.catalog.current(conn, dataset).version != info.version:
                    return None  # read the schema again, then the records under it
                if cache is not None and start is not None:
                    look = cache.look(conn, start, to_us(now))
                    entry = cache.get(dataset, purpose, to_us(now), look, info.version)
                    if entry is None and not look.may_fill and may_wait:
                        # another look emptied the cache after this read began (its snapshot may be
                        # older than that change): begin again after it, to fill or be served the fill
                        return _AGAIN
                if entry is None:
                    total = conn.execute(
                        select(func.count()).select_from(records).where(r.dataset == dataset)
                    ).scalar_one()
                    if look is not None and look.may_fill and cache is not None and total <= cache.max_records:
                        busy = cache.claim(dataset, purpose)
                        if busy is not None and may_wait:
                            return busy
                        if busy is None:
                            fill = look  # open every eligible record once; later reads are served from them
                    q = (
                        select(
                            r.rid,
                            r.subject_id,
                            r.dek_version,
                            r.data,
                            r.version,
                            r.created_us,
                            r.expires_us,
                            r.schema_version,
                            s.pseudonym,
                            s.external_enc,
                        )
                        .select_from(records.join(subjects, subjects.c.id == records.c.subject_id))
                        .where(self.eligible_condition(schema, purpose, now))
                    )
                    if fill is None and (ordered or window is not None):
                        q = q.order_by(r.created_us, r.rid)
                    if fill is None and window is not None:
                        q = q.offset(window[0]).limit(window[1])
                    rows = conn.execute(q).all()
                    keys = self.keyring.load(conn, {int(row.subject_id) for row in rows})
                    versions = self.catalog.versions(conn, dataset)
                    if fill is not None:
                        bound = self._next_change(conn, schema, purpose, now)
            if entry is None:
                if fill is not None and cache is not None:
                    entry = self._open_all(schema, rows, keys, versions, int(total), now, bound, fill, progress)
                    entry.schema_version = info.version
                    cache.put(dataset, purpose, entry, fill)
                else:
                    return self._open(schema, cols, rows, keys, versions, int(total), pseudonym_column, progress)
            elif progress is not None:
                progress(len(entry.rows), len(entry.rows))
        finally:
            if fill is not None and cache is not None:
                cache.release(dataset, purpose)  # filled, or failed: the reads waiting for it go on
        return self._from_entry(schema, cols, entry, pseudonym_column, ordered, window)

    def _open(
        self,
        schema: DatasetSchema,
        cols: list[str],
        rows: Sequence[Any],
        keys: Mapping[int, Mapping[int, DataKey]],
        versions: Mapping[int, Any],
        total: int,
        pseudonym_column: str | None,
        progress: Callable[[int, int], None] | None,
    ) -> Fetched:
        # each record opens under the digest of the schema version it was sealed with, and is presented
        # in the current schema (fields added since are null)
        dataset = schema.name
        layouts = {v: (sv.digest, layout(sv.schema, schema)) for v, sv in versions.items()}
        ext_cache: dict[int, str] = {}
        subject_col: list[str] = []
        values: list[list[Any]] = []
        want_subject = schema.subject_column in cols
        for i, row in enumerate(rows):
            if progress is not None and i % 10_000 == 0:
                progress(i, len(rows))
            sid = int(row.subject_id)
            values.append(self._open_one(dataset, layouts, keys, row))
            if want_subject:
                if sid not in ext_cache:
                    ext_cache[sid] = open_external(dict(keys[sid]), row.pseudonym, row.external_enc)
                subject_col.append(ext_cache[sid])
        if progress is not None:
            progress(len(rows), len(rows))
        frame = to_frame(schema, cols, subject_col, values)
        if pseudonym_column:
            frame[pseudonym_column] = [row.pseudonym for row in rows]
        return Fetched(frame, {str(row.pseudonym): int(row.subject_id) for row in rows}, total, cols)

    @staticmethod
    def _open_one(
        dataset: str,
        layouts: Mapping[int, tuple[str, list[int | None] | None]],
        keys: Mapping[int, Mapping[int, DataKey]],
        row: Any,
    ) -> list[Any]:
        subject_keys_ = keys.get(int(row.subject_id))
        if subject_keys_ is None or int(row.dek_version) not in subject_keys_:
            raise IntegrityError("a record's data key is missing")
        sealed = layouts.get(int(row.schema_version))
        if sealed is None:
            raise IntegrityError(f"a record of {dataset} names a schema version {dataset} never had")
        return present(open_record(subject_keys_[int(row.dek_version)], dataset, sealed[0], row), sealed[1])

    def _open_all(
        self,
        schema: DatasetSchema,
        rows: Sequence[Any],
        keys: Mapping[int, Mapping[int, DataKey]],
        versions: Mapping[int, Any],
        total: int,
        now: datetime,
        bound: int,
        look: Look,
        progress: Callable[[int, int], None] | None,
    ) -> Entry:
        """Every eligible record opened, for the read cache, kept until the first moment (after `now`) at
        which one of them expires or a consent or objection stored for later starts or ends."""
        dataset = schema.name
        layouts = {v: (sv.digest, layout(sv.schema, schema)) for v, sv in versions.items()}
        opened: list[Opened] = []
        externals: dict[int, str] = {}
        until = bound
        for i, row in enumerate(rows):
            if progress is not None and i % 10_000 == 0:
                progress(i, len(rows))
            sid = int(row.subject_id)
            values = self._open_one(dataset, layouts, keys, row)
            # the expiry is authenticated by the record's associated data: an edit at rest failed above
            until = min(until, int(row.expires_us))
            opened.append(Opened(bytes(row.rid), sid, str(row.pseudonym), int(row.created_us), values))
            if sid not in externals:
                externals[sid] = open_external(dict(keys[sid]), row.pseudonym, row.external_enc)
        if progress is not None:
            progress(len(rows), len(rows))
        return Entry(opened, externals, total, to_us(now), until, look.generation)

    @staticmethod
    def _from_entry(
        schema: DatasetSchema,
        cols: list[str],
        entry: Entry,
        pseudonym_column: str | None,
        ordered: bool,
        window: tuple[int, int] | None,
    ) -> Fetched:
        """A read served from opened records: the same frame, in the same order, as from the store. Each
        column's typed array is built once per entry and order; the frame gets copies of (a slice of) them."""
        in_order = ordered or window is not None
        everything = entry.ordered() if in_order else entry.rows
        part = slice(window[0], window[0] + max(window[1], 0)) if window is not None else slice(None)
        rows = everything[part]
        specs = {f.name: f for f in schema.fields}
        where = {f.name: i for i, f in enumerate(value_fields(schema))}
        data: dict[str, Any] = {}
        for name in cols:
            key = (in_order, name)
            array = entry.arrays.get(key)
            if array is None:
                if name == schema.subject_column:
                    array = pd.array([entry.externals[r.subject_id] for r in everything], dtype="string")
                else:
                    i = where[name]
                    array = column_array(specs[name], [r.values[i] for r in everything])
                entry.arrays[key] = array
            data[name] = array[part]
        frame = pd.DataFrame(data, columns=cols, copy=True)  # never a view of what the cache keeps
        if pseudonym_column:
            frame[pseudonym_column] = [r.pseudonym for r in rows]
        subjects = entry.subjects() if window is None else {r.pseudonym: r.subject_id for r in rows}
        return Fetched(frame, subjects, entry.total, cols)

    def _next_change(self, conn: Connection, schema: DatasetSchema, purpose: str, now: datetime) -> int:
        """The first moment after `now`, in epoch microseconds, at which a consent to `purpose` or an
        objection to it already stored starts or ends (records' own expiry is bounded by the caller)."""
        c, o = consents.c, objections.c
        stored = [
            select(func.min(c.granted_at)).where(c.purpose == purpose, c.granted_at > now),
            select(func.min(c.withdrawn_at)).where(c.purpose == purpose, c.withdrawn_at > now),
            select(func.min(o.at)).where(o.purpose.in_([purpose, "*"]), o.at > now),
            select(func.min(o.lifted_at)).where(o.purpose.in_([purpose, "*"]), o.lifted_at > now),
        ]
        found = [conn.execute(q).scalar() for q in stored]
        return min([to_us(t) for t in found if t is not None], default=INT64_MAX)

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
        """Record a governed read: its ledger entry and, in the same transaction, the access log rows
        (entry, subject) an audit checks against consent at that time. `pseudos`: the subjects read, as
        `Fetched.subjects` (pseudonym -> id) or as pseudonyms (their ids are looked up)."""
        with self.store.write() as conn:
            seq = self.ledger.emit(
                conn,
                DataRead,
                actor=actor,
                purpose=purpose,
                dataset=dataset,
                columns=columns,
                rows=rows,
                subjects=len(pseudos),
                records_in_dataset=total,
                subjects_digest=set_digest(pseudos),
                deidentification=deidentification,
            )
            if isinstance(pseudos, Mapping):  # from fetch: the ids are known
                ids = sorted(set(pseudos.values()))
            else:
                ids = sorted(s.id for s in self.subjects.by_pseudonym(conn, pseudos).values())
            conn.execute(insert(access_log).values(seq=seq, subject_ids=pack_ids(ids)))
        return seq

    def counts(self, dataset: str | None = None) -> dict[str, int]:
        with self.store.read() as conn:
            r, s = records.c, subjects.c
            q = select(func.count()).select_from(records)
            if dataset:
                q = q.where(r.dataset == dataset)
            n_rec = conn.execute(q).scalar_one()
            q = select(func.count(func.distinct(r.subject_id)))
            if dataset:
                q = q.where(r.dataset == dataset)
            n_sub = conn.execute(q).scalar_one()
            erased = conn.execute(select(func.count()).where(s.erased_at.is_not(None))).scalar_one()
            n_keys = conn.execute(select(func.count()).select_from(subject_keys)).scalar_one()
        return {"records": int(n_rec), "subjects": int(n_sub), "erased_subjects": int(erased), "data_keys": int(n_keys)}
