"""The vault: encrypted ingest, governed reads, consent, subject-level rights primitives, retention.

Every method that touches personal data or changes governance state appends exactly one ledger event
in the same transaction as its change. Subjects appear in events only as keyed pseudonyms.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, and_, bindparam, delete, exists, func, insert, or_, select, update

from complai.clock import Clock, as_utc, from_us, to_us, utc_iso
from complai.crypto.aead import DataKey
from complai.crypto.keyring import Keyring, new_raw_key
from complai.crypto.digest import digest
from complai.crypto.pseudonym import Pseudonymizer
from complai.errors import IntegrityError, InvalidInput, NotFound
from complai.events import (
    ConsentGranted,
    ConsentWithdrawn,
    DataRead,
    ObjectionRecorded,
    RecordsIngested,
    RetentionSwept,
    SubjectErased,
    SubjectExported,
    SubjectRectified,
    SubjectRestricted,
)
from complai.inputs import TABLE_MAX_BYTES, parse_csv, read_input, summarise
from complai.ledger.log import Ledger
from complai.store import Store, bulk_insert, placeholder
from complai.store.tables import (
    access_log,
    consents,
    ledger_entries,
    model_subjects,
    models,
    objections,
    records,
    subject_keys,
    subjects,
)
from complai.taxonomy import Taxonomy
from complai.vault.catalog import Catalog
from complai.vault.records import (
    RecordSet,
    add_consent,
    check_value,
    encode,
    legacy_record_ad,
    open_record,
    prepare,
    record_ad,
    subject_ad,
    to_frame,
    value_fields,
    withdrawal_element,
)
from complai.vault.schema import DatasetSchema, retention_deadline

CHUNK = 5000
_PSEUDONYM = re.compile(r"^sp:[0-9a-f]{64}$")
_CONSENT_FIELDS = ("purpose", "basis", "granted_at", "withdrawn_at", "notice_version", "source")
_RECORD_COLUMNS = ("rid", "dataset", "subject_id", "dek_version", "created_us", "expires_us", "data", "version")
CONSENT_COLUMNS = {"subject", "purpose", "basis", "granted_at", "withdrawn_at", "notice_version", "source"}


@dataclass(frozen=True)
class IngestResult:
    dataset: str
    rows: int
    subjects: int
    new_subjects: int
    skipped_erased_rows: int
    consents: int
    seq: int


@dataclass(frozen=True)
class Subject:
    id: int
    pseudonym: str
    erased: bool
    restricted: bool


def pack_ids(ids: Iterable[int]) -> bytes:
    """Subject ids as sorted little-endian int64s (the access log's row format)."""
    import numpy as np

    return np.asarray(sorted(ids), dtype="<i8").tobytes()


def unpack_ids(blob: bytes) -> list[int]:
    import numpy as np

    return np.frombuffer(bytes(blob), dtype="<i8").tolist()


def set_digest(pseudonyms: Iterable[str]) -> str:
    h = hashlib.sha256()
    for p in sorted(set(pseudonyms)):
        h.update(p.encode() + b"\n")
    return "sha256:" + h.hexdigest()


def _chunks(seq: list[Any], n: int = CHUNK) -> Iterable[list[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


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
    ) -> None:
        self.store, self.ledger, self.catalog, self.keyring = store, ledger, catalog, keyring
        self.pseudonyms, self.taxonomy, self.clock = pseudonyms, taxonomy, clock

    # --- subjects --------------------------------------------------------------------------------

    def _subjects_by_pseudonym(self, conn: Connection, pseudonyms: list[str]) -> dict[str, Subject]:
        out = {}
        for part in _chunks(sorted(set(pseudonyms))):
            # pseudonyms are sp:<64 hex> (checked), so they can be inlined: no per-value bind expansion
            for p in part:
                if not _PSEUDONYM.match(p):
                    raise InvalidInput("malformed pseudonym")
            sql = (
                "SELECT id, pseudonym, erased_at, restricted_at FROM subjects WHERE pseudonym IN ("
                + ",".join(f"'{p}'" for p in part)
                + ")"
            )
            for sid, p, erased, restricted in conn.exec_driver_sql(sql):
                out[p] = Subject(int(sid), p, erased is not None, restricted is not None)
        return out

    @staticmethod
    def _insert_subjects(conn: Connection, rows: list[tuple[str, bytes, datetime]]) -> set[str]:
        """Insert-or-get: add (pseudonym, sealed external id, created) rows, skipping pseudonyms that
        exist, and return the pseudonyms this transaction inserted. Concurrent ingests of overlapping new
        subjects then all succeed: on PostgreSQL the later one waits for the earlier to commit and skips
        its rows; callers insert in one global order (sorted external ids), so two ingests never wait on
        each other in a cycle."""
        ph = placeholder(conn)
        sqlite = conn.dialect.name == "sqlite"
        mine: set[str] = set()
        for part in _chunks(rows, 2000):
            params: list[Any] = []
            for p, enc, created in part:
                # SQLite: datetimes in SQLAlchemy's own text format, as bulk_insert writes them
                params += [p, enc, created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else created]
            sql = (
                "INSERT INTO subjects (pseudonym, external_enc, created_at) VALUES "
                + ",".join([f"({ph}, {ph}, {ph})"] * len(part))
                + " ON CONFLICT (pseudonym) DO NOTHING RETURNING pseudonym"
            )
            mine.update(str(r[0]) for r in conn.exec_driver_sql(sql, tuple(params)).all())
        return mine

    def subject(self, conn: Connection, external_id: str) -> Subject:
        """Look up a live (not erased) subject by external id."""
        if not external_id or not external_id.strip():
            raise InvalidInput("subject id is empty")
        p = self.pseudonyms.subject(external_id.strip())
        found = self._subjects_by_pseudonym(conn, [p]).get(p)
        if found is None:
            raise NotFound("no such subject")
        if found.erased:
            raise NotFound("the subject was erased")
        return found

    # --- ingest ----------------------------------------------------------------------------------

    def ingest(
        self,
        dataset: str,
        data: pd.DataFrame | Path | str | list[dict[str, Any]],
        actor: str,
        consents_data: pd.DataFrame | Path | str | None = None,
        purpose: str = "administration",
    ) -> IngestResult:
        """Encrypt and store rows, with optional consent records, in one transaction (all or nothing)."""
        schema = self.catalog.get(dataset).schema
        if isinstance(data, str | Path):
            source = read_input(data, "data file", TABLE_MAX_BYTES)
            frame = csv_frame(source, "data", Path(data).name)
        elif isinstance(data, list):
            frame = pd.DataFrame.from_records(data)
            source = pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
        else:
            frame = data
            source = pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
        external, rows = prepare(schema, frame)
        consent_rows: list[dict[str, Any]] = []
        if consents_data is not None:
            if isinstance(consents_data, str | Path):
                consent_source = read_input(consents_data, "consents file", TABLE_MAX_BYTES)
                consents_frame = csv_frame(consent_source, "consents", Path(consents_data).name)
            else:
                consents_frame = consents_data
                consent_source = pd.util.hash_pandas_object(consents_frame, index=False).to_numpy().tobytes()
            consent_rows = self._prepare_consents(schema, consents_frame)
            source += b"\x00consents\x00" + consent_source
        now = self.clock.now()
        now_us = to_us(now)
        expires_us = to_us(retention_deadline(now, schema.retention))
        pseud = {e: self.pseudonyms.subject(e) for e in set(external) | {c["subject"] for c in consent_rows}}
        missing_consent_subjects = {c["subject"] for c in consent_rows} - set(external)
        with self.store.write() as conn:
            known = self._subjects_by_pseudonym(conn, list(pseud.values()))
            if missing_consent_subjects:
                absent = [e for e in missing_consent_subjects if pseud[e] not in known]
                if absent:
                    raise InvalidInput(f"consents name {len(absent)} subject(s) that are neither in the data nor known")
            new_ext = sorted(e for e in set(external) if pseud[e] not in known)
            # new subjects: keys first, so the external id can be sealed before the row exists
            fresh = {e: new_raw_key() for e in new_ext}
            fresh_keys = {e: DataKey(k) for e, k in fresh.items()}
            if new_ext:
                mine = self._insert_subjects(
                    conn, [(pseud[e], fresh_keys[e].seal(e.encode(), subject_ad(pseud[e])), now) for e in new_ext]
                )
                known.update(self._subjects_by_pseudonym(conn, [pseud[e] for e in new_ext]))
                # a concurrent ingest that committed them first made them existing subjects (with their keys)
                new_ext = [e for e in new_ext if pseud[e] in mine]
                fresh = {e: fresh[e] for e in new_ext}
            erased = {p for p, s in known.items() if s.erased}
            per_subject = Counter(e for e in external if pseud[e] not in erased)
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
            sdig = schema.digest()
            out = []
            skipped = 0
            stored = RecordSet()
            for e, values in zip(external, rows, strict=True):
                if pseud[e] in erased:
                    skipped += 1
                    continue
                sid = ids[e]
                ver, key = keys[sid]
                rid = os.urandom(16)
                stored.add(dataset, pseud[e], rid)
                out.append(
                    (
                        rid,
                        dataset,
                        sid,
                        ver,
                        now_us,
                        expires_us,
                        key.seal(encode(values), record_ad(dataset, rid, sdig, 0, now_us, expires_us)),
                        0,
                    )
                )
            bulk_insert(conn, records, out, columns=_RECORD_COLUMNS)
            crow = [
                (known[pseud[c["subject"]]].id, *(c[k] for k in _CONSENT_FIELDS))
                for c in consent_rows
                if not known[pseud[c["subject"]]].erased
            ]
            bulk_insert(conn, consents, crow, columns=("subject_id", *_CONSENT_FIELDS))
            given, withdrawn = RecordSet(), RecordSet()
            for c in consent_rows:
                if not known[pseud[c["subject"]]].erased:
                    add_consent(given, withdrawn, pseud[c["subject"]], c)
            live = [pseud[e] for e in per_subject]
            seq = self.ledger.append(
                conn,
                RecordsIngested(
                    time=now,
                    actor=actor,
                    purpose=purpose,
                    dataset=dataset,
                    rows=len(out),
                    subjects=len(per_subject),
                    new_subjects=len(new_ext),
                    skipped_erased_rows=skipped,
                    consents=len(crow),
                    subjects_digest=set_digest(live),
                    source_digest=digest(source),
                    records_digest=stored.digest(),
                    consents_digest=given.digest(),
                    withdrawals_digest=withdrawn.digest(),
                ),
            )
        return IngestResult(dataset, len(out), len(per_subject), len(new_ext), skipped, len(crow), seq)

    def _prepare_consents(self, schema: DatasetSchema, data: pd.DataFrame | Path | str) -> list[dict[str, Any]]:
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

    def _consent_row(self, schema: DatasetSchema, row: dict[str, Any], where: str, now: datetime) -> dict[str, Any]:
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
            "notice_version": str(row.get("notice_version") or "unspecified"),
            "source": str(row.get("source") or "ingest"),
        }

    # --- governed reads --------------------------------------------------------------------------

    def eligible_condition(self, schema: DatasetSchema, purpose: str, at: datetime) -> Any:
        """SQL condition on records for: live subject, unexpired, lawful basis live for the purpose."""
        basis = self.taxonomy.legal_basis(schema.basis(purpose))
        r, s = records.c, subjects.c
        cond = [
            r.dataset == schema.name,
            r.expires_us > to_us(at),
            s.erased_at.is_(None),
            s.restricted_at.is_(None),
        ]
        if basis.attrs.get("requires_consent"):
            c = consents.c
            cond.append(
                exists().where(
                    c.subject_id == r.subject_id,
                    c.purpose == purpose,
                    c.granted_at <= at,
                    or_(c.withdrawn_at.is_(None), c.withdrawn_at > at),
                )
            )
        o = objections.c
        cond.append(
            ~exists().where(
                o.subject_id == r.subject_id,
                o.purpose.in_([purpose, "*"]),
                o.at <= at,
                or_(o.lifted_at.is_(None), o.lifted_at > at),
            )
        )
        return and_(*cond)

    def fetch(
        self, dataset: str, purpose: str, columns: list[str] | None = None, pseudonym_column: str | None = None
    ) -> tuple[pd.DataFrame, set[str], int, list[str]]:
        """Decrypt what this purpose may see, without recording (callers record their own event).

        Returns (frame, subject pseudonyms, records in the dataset, columns); with `pseudonym_column`
        the frame also carries each row's subject pseudonym under that name."""
        schema = self.catalog.get(dataset).schema
        schema.basis(purpose)
        names = [f.name for f in schema.fields]
        cols = list(columns) if columns else names
        unknown = [c for c in cols if c not in names]
        if unknown:
            raise InvalidInput(f"unknown column(s) {unknown} in dataset {dataset}")
        now = self.clock.now()
        r, s = records.c, subjects.c
        with self.store.read() as conn:
            q = (
                select(
                    r.rid,
                    r.subject_id,
                    r.dek_version,
                    r.data,
                    r.version,
                    r.created_us,
                    r.expires_us,
                    s.pseudonym,
                    s.external_enc,
                )
                .select_from(records.join(subjects, subjects.c.id == records.c.subject_id))
                .where(self.eligible_condition(schema, purpose, now))
            )
            rows = conn.execute(q).all()
            total = conn.execute(select(func.count()).select_from(records).where(r.dataset == dataset)).scalar_one()
            keys = self.keyring.load(conn, {int(row.subject_id) for row in rows})
        sdig = schema.digest()
        ext_cache: dict[int, str] = {}
        subject_col, values = [], []
        want_subject = schema.subject_column in cols
        for row in rows:
            sid = int(row.subject_id)
            subject_keys_ = keys.get(sid)
            if subject_keys_ is None or int(row.dek_version) not in subject_keys_:
                raise IntegrityError("a record's data key is missing")
            key = subject_keys_[int(row.dek_version)]
            values.append(open_record(key, dataset, sdig, row))
            if want_subject:
                if sid not in ext_cache:
                    ext_cache[sid] = self._open_external(keys[sid], row.pseudonym, row.external_enc)
                subject_col.append(ext_cache[sid])
        frame = to_frame(schema, cols, subject_col, values)
        if pseudonym_column:
            frame[pseudonym_column] = [row.pseudonym for row in rows]
        # pseudonym -> subject id: a set of pseudonyms to callers, and the ids the access log needs
        return frame, {row.pseudonym: int(row.subject_id) for row in rows}, int(total), cols  # type: ignore[return-value]

    def read(
        self, dataset: str, purpose: str, actor: str, columns: list[str] | None = None
    ) -> tuple[pd.DataFrame, int]:
        """Decrypt the rows this purpose may see; record the read. Returns (frame, ledger seq)."""
        frame, pseudos, total, _ = self.fetch(dataset, purpose, columns)
        return frame, self.record_read(dataset, purpose, actor, list(frame.columns), len(frame), pseudos, total)

    def record_read(
        self,
        dataset: str,
        purpose: str,
        actor: str,
        columns: list[str],
        rows: int,
        pseudos: set[str],
        total: int,
        deidentification: dict[str, Any] | None = None,
    ) -> int:
        """Record a governed read: its ledger entry and, in the same transaction, the access log rows
        (entry, subject) an audit checks against consent at that time."""
        with self.store.write() as conn:
            seq = self.ledger.append(
                conn,
                DataRead(
                    time=self.clock.now(),
                    actor=actor,
                    purpose=purpose,
                    dataset=dataset,
                    columns=columns,
                    rows=rows,
                    subjects=len(pseudos),
                    records_in_dataset=total,
                    subjects_digest=set_digest(pseudos),
                    deidentification=deidentification,
                ),
            )
            if isinstance(pseudos, dict):  # from fetch: the ids are known
                ids = sorted(set(pseudos.values()))
            else:
                ids = sorted(s.id for s in self._subjects_by_pseudonym(conn, list(pseudos)).values())
            conn.execute(insert(access_log).values(seq=seq, subject_ids=pack_ids(ids)))
        return seq

    @staticmethod
    def _open_external(keys: dict[int, DataKey], pseudonym: str, blob: bytes | None) -> str:
        if blob is None:
            raise IntegrityError("subject identity is missing")
        for key in keys.values():  # sealed under the subject's first key; try the live versions
            try:
                return key.open(bytes(blob), subject_ad(pseudonym)).decode()
            except IntegrityError:
                continue
        raise IntegrityError("subject identity cannot be decrypted")

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
        self.taxonomy.purpose(purpose)
        self.taxonomy.legal_basis(basis)
        now = self.clock.now()
        with self.store.write() as conn:
            subj = self.subject(conn, external_id)
            self._check_declared(conn, subj, purpose)
            conn.execute(
                insert(consents).values(
                    subject_id=subj.id,
                    purpose=purpose,
                    basis=basis,
                    granted_at=now,
                    notice_version=notice_version,
                    source=source,
                )
            )
            return self.ledger.append(
                conn,
                ConsentGranted(
                    time=now,
                    actor=actor,
                    purpose="administration",
                    subject=subj.pseudonym,
                    for_purpose=purpose,
                    basis=basis,
                    notice_version=notice_version,
                    source=source,
                ),
            )

    def _check_declared(self, conn: Connection, subj: Subject, purpose: str) -> None:
        """A consent must be for a purpose one of the subject's datasets declares (else it governs nothing
        and misleads whoever reads the consent register)."""
        names = sorted(
            str(d)
            for d in conn.execute(select(records.c.dataset).where(records.c.subject_id == subj.id).distinct()).scalars()
        )
        declared = {name: list(self.catalog.get(name).schema.purposes) for name in names}
        if any(purpose in purposes for purposes in declared.values()):
            return
        if not declared:
            raise InvalidInput(f"purpose {purpose!r}: the subject has no records in any dataset")
        listed = "; ".join(f"{name}: {', '.join(p)}" for name, p in declared.items())
        raise InvalidInput(f"purpose {purpose!r} is not declared by the subject's dataset(s) ({listed})")

    def withdraw_consent(self, external_id: str, purpose: str, actor: str) -> int:
        self.taxonomy.purpose(purpose)
        now = self.clock.now()
        with self.store.write() as conn:
            subj = self.subject(conn, external_id)
            c = consents.c
            withdrawn = RecordSet()
            for (granted,) in conn.execute(
                select(c.granted_at).where(c.subject_id == subj.id, c.purpose == purpose, c.withdrawn_at.is_(None))
            ):
                withdrawn.add_element(
                    withdrawal_element(subj.pseudonym, purpose, to_us(as_utc(granted)), to_us(now))  # type: ignore[arg-type]
                )
            n = conn.execute(
                update(consents)
                .where(c.subject_id == subj.id, c.purpose == purpose, c.withdrawn_at.is_(None))
                .values(withdrawn_at=now)
            ).rowcount
            if n == 0:
                raise NotFound(f"the subject has no live consent for {purpose}")
            return self.ledger.append(
                conn,
                ConsentWithdrawn(
                    time=now,
                    actor=actor,
                    purpose="administration",
                    subject=subj.pseudonym,
                    for_purpose=purpose,
                    consents=n,
                    withdrawals_digest=withdrawn.digest(),
                ),
            )

    def object(self, external_id: str, purpose: str, actor: str, kind: str = "objection") -> int:
        """Record an objection (GDPR Art. 21) or opt-out (CCPA) to a purpose, or to all ('*')."""
        if purpose != "*":
            self.taxonomy.purpose(purpose)
        if kind not in ("objection", "opt_out"):
            raise InvalidInput("kind must be 'objection' or 'opt_out'")
        now = self.clock.now()
        with self.store.write() as conn:
            subj = self.subject(conn, external_id)
            conn.execute(insert(objections).values(subject_id=subj.id, purpose=purpose, kind=kind, at=now))
            return self.ledger.append(
                conn,
                ObjectionRecorded(
                    time=now,
                    actor=actor,
                    purpose="subject_request",
                    subject=subj.pseudonym,
                    for_purpose=purpose,
                    objection=kind,
                ),
            )

    # --- rights primitives -----------------------------------------------------------------------

    def restrict(self, external_id: str, actor: str, reason: str = "", lift: bool = False) -> int:
        now = self.clock.now()
        with self.store.write() as conn:
            subj = self.subject(conn, external_id)
            if lift != subj.restricted:
                raise InvalidInput("the subject is not restricted" if lift else "the subject is already restricted")
            conn.execute(
                update(subjects)
                .where(subjects.c.id == subj.id)
                .values(restricted_at=None if lift else now, restriction_reason=None if lift else reason[:200])
            )
            return self.ledger.append(
                conn,
                SubjectRestricted(
                    time=now,
                    actor=actor,
                    purpose="subject_request",
                    subject=subj.pseudonym,
                    restricted=not lift,
                    reason_digest=digest(reason.encode()),
                ),
            )

    def rectify(self, external_id: str, dataset: str, field: str, value: Any, actor: str) -> int:
        """Set one field in all of a subject's records of a dataset; re-encrypts them."""
        schema = self.catalog.get(dataset).schema
        if field == schema.subject_column:
            raise InvalidInput("the subject column cannot be rectified; open a new subject instead")
        spec = schema.field(field)
        new_value = check_value(spec, value)
        pos = [f.name for f in value_fields(schema)].index(field)
        now = self.clock.now()
        sdig = schema.digest()
        with self.store.write() as conn:
            subj = self.subject(conn, external_id)
            r = records.c
            rows = conn.execute(
                select(r.rid, r.dek_version, r.data, r.version, r.created_us, r.expires_us).where(
                    r.dataset == dataset, r.subject_id == subj.id
                )
            ).all()
            if not rows:
                raise NotFound(f"the subject has no records in {dataset}")
            old = self.keyring.load(conn, [subj.id])[subj.id]
            ver, key = self.keyring.for_sealing(conn, {subj.id: len(rows)})[subj.id]
            versions: dict[str, int] = {}
            for row in rows:
                if int(row.dek_version) not in old:
                    raise IntegrityError("a record's data key is missing")
                values = open_record(old[int(row.dek_version)], dataset, sdig, row)
                values[pos] = new_value
                version = int(row.version) + 1
                rid = bytes(row.rid)
                ad = record_ad(dataset, rid, sdig, version, int(row.created_us), int(row.expires_us))
                versions[rid.hex()] = version
                conn.execute(
                    update(records)
                    .where(r.rid == row.rid)
                    .values(dek_version=ver, version=version, data=key.seal(encode(values), ad))
                )
            return self.ledger.append(
                conn,
                SubjectRectified(
                    time=now,
                    actor=actor,
                    purpose="subject_request",
                    subject=subj.pseudonym,
                    dataset=dataset,
                    field=field,
                    records=len(rows),
                    value_digest=self.pseudonyms.value(encode([new_value])),
                    record_versions=versions,
                ),
            )

    def export(self, external_id: str, actor: str) -> dict[str, Any]:
        """Everything held about a subject, machine-readable (GDPR Art. 15 / 20)."""
        now = self.clock.now()
        with self.store.write() as conn:
            subj = self.subject(conn, external_id)
            row = conn.execute(select(subjects).where(subjects.c.id == subj.id)).one()
            keys = self.keyring.load(conn, [subj.id]).get(subj.id, {})
            r = records.c
            recs = conn.execute(
                select(r.rid, r.dataset, r.dek_version, r.data, r.created_us, r.expires_us, r.version)
                .where(r.subject_id == subj.id)
                .order_by(r.dataset, r.created_us)
            ).all()
            by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
            schemas: dict[str, DatasetSchema] = {}
            for rec in recs:
                schema = schemas.setdefault(rec.dataset, self.catalog.get(rec.dataset).schema)
                if int(rec.dek_version) not in keys:
                    raise IntegrityError("a record's data key is missing")
                values = open_record(keys[int(rec.dek_version)], rec.dataset, schema.digest(), rec)
                fields = {f.name: v for f, v in zip(value_fields(schema), values, strict=True)}
                by_dataset[rec.dataset].append(
                    {
                        "record_id": bytes(rec.rid).hex(),
                        "stored_at": utc_iso(from_us(int(rec.created_us))),
                        "delete_after": utc_iso(from_us(int(rec.expires_us))),
                        "fields": fields,
                    }
                )
            c = consents.c
            cons = [
                {
                    "purpose": x.purpose,
                    "basis": x.basis,
                    "granted_at": utc_iso(as_utc(x.granted_at)),  # type: ignore[arg-type]
                    "withdrawn_at": utc_iso(as_utc(x.withdrawn_at)) if x.withdrawn_at else None,  # type: ignore[arg-type]
                    "notice_version": x.notice_version,
                    "source": x.source,
                }
                for x in conn.execute(select(consents).where(c.subject_id == subj.id).order_by(c.granted_at))
            ]
            objs = [
                {
                    "purpose": x.purpose,
                    "kind": x.kind,
                    "at": utc_iso(as_utc(x.at)),  # type: ignore[arg-type]
                    "lifted_at": utc_iso(as_utc(x.lifted_at)) if x.lifted_at else None,  # type: ignore[arg-type]
                }
                for x in conn.execute(select(objections).where(objections.c.subject_id == subj.id))
            ]
            history = self._history(conn, subj, list(by_dataset))
            document = {
                "format": "complai-subject-export/1",
                "generated_at": utc_iso(now),
                "subject": {
                    "id": self._open_external(keys, subj.pseudonym, row.external_enc),
                    "pseudonym": subj.pseudonym,
                    "first_seen": utc_iso(as_utc(row.created_at)),  # type: ignore[arg-type]
                    "restricted": row.restricted_at is not None,
                },
                "records": dict(by_dataset),
                "consents": cons,
                "objections": objs,
                "processing_history": history,
            }
            blob = json.dumps(document, sort_keys=True).encode()
            seq = self.ledger.append(
                conn,
                SubjectExported(
                    time=now,
                    actor=actor,
                    purpose="subject_request",
                    subject=subj.pseudonym,
                    records=len(recs),
                    export_digest=digest(blob),
                ),
            )
        document["ledger_seq"] = seq
        return document

    def _history(self, conn: Connection, subj: Subject, datasets: list[str]) -> list[dict[str, Any]]:
        """Ledger events that name the subject, and reads of its datasets it was eligible for then."""
        e = ledger_entries.c
        needle = subj.pseudonym.encode()
        if conn.dialect.name == "postgresql":
            named = e.data.op("LIKE")(b"%" + needle + b"%")
        else:
            named = func.instr(e.data, needle) > 0
        out = []
        for seq, data in conn.execute(select(e.seq, e.data).where(named).order_by(e.seq)):
            ev = json.loads(data)
            out.append(
                {
                    "seq": int(seq),
                    "type": ev["type"],
                    "time": ev["time"],
                    "actor": ev["actor"],
                    "purpose": ev["purpose"],
                }
            )
        if datasets:
            reads = conn.execute(select(e.seq, e.data).where(e.kind == DataRead.kind).order_by(e.seq)).all()
            for seq, data in reads:
                ev = json.loads(data)
                if ev["dataset"] in datasets and self._was_eligible(conn, subj, ev):
                    out.append(
                        {
                            "seq": int(seq),
                            "type": ev["type"],
                            "time": ev["time"],
                            "actor": ev["actor"],
                            "purpose": ev["purpose"],
                            "dataset": ev["dataset"],
                            "note": "your records were eligible for this read (lawful basis live at the time)",
                        }
                    )
        return sorted(out, key=lambda x: x["seq"])

    def _was_eligible(self, conn: Connection, subj: Subject, ev: dict[str, Any]) -> bool:
        at = datetime.fromisoformat(ev["time"].replace("Z", "+00:00"))
        schema = self.catalog.get(ev["dataset"]).schema
        if ev["purpose"] not in schema.purposes:
            return False
        q = (
            select(func.count())
            .select_from(records.join(subjects, subjects.c.id == records.c.subject_id))
            .where(self.eligible_condition(schema, ev["purpose"], at), records.c.subject_id == subj.id)
            .where(records.c.created_us <= to_us(at))
        )
        return bool(conn.execute(q).scalar())

    def erase(self, external_id: str, actor: str, reapplied_from: int | None = None) -> int:
        """Erasure (GDPR Art. 17): delete records and consents, destroy the data keys, keep a tombstone."""
        now = self.clock.now()
        with self.store.write() as conn:
            subj = self.subject(conn, external_id)
            seq = self._erase(conn, subj, actor, now, reapplied_from)
        self.store.purge_freed()
        return seq

    def erase_pseudonym(self, conn: Connection, pseudonym: str, actor: str, reapplied_from: int | None) -> bool:
        """Erase by pseudonym (re-applying a tombstone after a restore). False if nothing to erase."""
        found = self._subjects_by_pseudonym(conn, [pseudonym]).get(pseudonym)
        if found is None or found.erased:
            return False
        self._erase(conn, found, actor, self.clock.now(), reapplied_from)
        return True

    def _erase(self, conn: Connection, subj: Subject, actor: str, now: datetime, reapplied_from: int | None) -> int:
        deleted = _deleted_sets(
            conn, select(records.c.dataset, subjects.c.pseudonym, records.c.rid).where(records.c.subject_id == subj.id)
        )
        n_rec = conn.execute(delete(records).where(records.c.subject_id == subj.id)).rowcount
        given, withdrawn = _consent_sets(conn, [subj.id])
        n_con = conn.execute(delete(consents).where(consents.c.subject_id == subj.id)).rowcount
        conn.execute(delete(objections).where(objections.c.subject_id == subj.id))
        n_keys = self.keyring.destroy(conn, [subj.id])
        conn.execute(
            update(subjects)
            .where(subjects.c.id == subj.id)
            .values(erased_at=now, external_enc=None, restricted_at=None, restriction_reason=None)
        )
        seq = self.ledger.append(
            conn,
            SubjectErased(
                time=now,
                actor=actor,
                purpose="subject_request",
                subject=subj.pseudonym,
                records=n_rec,
                keys_destroyed=n_keys,
                consents=n_con,
                reapplied_from=reapplied_from,
                records_by_dataset={ds: n for ds, (n, _) in deleted.items()},
                records_digests={ds: rs.digest() for ds, (_, rs) in deleted.items()},
                consents_digest=given.digest(),
                withdrawals_digest=withdrawn.digest(),
            ),
        )
        self._flag_models(conn, [subj.id], f"a training subject was erased (ledger entry {seq})", now)
        return seq

    @staticmethod
    def _flag_models(
        conn: Connection, subject_ids: list[int], reason: str, now: datetime, dataset: str | None = None
    ) -> None:
        """Flag the models these subjects' records trained (of `dataset`, or any), so that the next audit
        asks for retraining or a justification; then forget the link."""
        ms = model_subjects.c
        for part in _chunks(subject_ids):
            q = select(ms.model_id).where(ms.subject_id.in_(part))
            if dataset is not None:
                q = q.join(models, models.c.id == ms.model_id).where(models.c.dataset == dataset)
            ids = [str(x) for x in conn.execute(q.distinct()).scalars()]
            if not ids:
                continue
            conn.execute(
                update(models)
                .where(models.c.id.in_(ids), models.c.flagged_at.is_(None))
                .values(flagged_at=now, flag_reason=reason[:200])
            )
            conn.execute(delete(model_subjects).where(ms.subject_id.in_(part), ms.model_id.in_(ids)))

    # --- retention -------------------------------------------------------------------------------

    def retention_sweep(self, actor: str) -> dict[str, Any]:
        """Delete records past their dataset's retention; crypto-shred subjects left with nothing."""
        now = self.clock.now()
        r, s = records.c, subjects.c
        with self.store.write() as conn:
            by_ds = {
                str(d): int(n)
                for d, n in conn.execute(
                    select(r.dataset, func.count()).where(r.expires_us <= to_us(now)).group_by(r.dataset)
                )
            }
            affected = [
                int(x)
                for x in conn.execute(select(r.subject_id).where(r.expires_us <= to_us(now)).distinct()).scalars()
            ]
            for ds in by_ds:
                expired_here = [
                    int(x)
                    for x in conn.execute(
                        select(r.subject_id).where(r.expires_us <= to_us(now), r.dataset == ds).distinct()
                    ).scalars()
                ]
                self._flag_models(conn, expired_here, "a training record passed its retention period", now, ds)
            deleted = _deleted_sets(conn, select(r.dataset, s.pseudonym, r.rid).where(r.expires_us <= to_us(now)))
            n = conn.execute(delete(records).where(r.expires_us <= to_us(now))).rowcount
            empty = []
            for part in _chunks(affected):
                has = set(conn.execute(select(r.subject_id).where(r.subject_id.in_(part)).distinct()).scalars())
                empty += [sid for sid in part if sid not in has]
            pseudos = []
            given, withdrawn = RecordSet(), RecordSet()
            for part in _chunks(empty):
                pseudos += list(conn.execute(select(s.pseudonym).where(s.id.in_(part))).scalars())
                g, w = _consent_sets(conn, part)
                given, withdrawn = given + g, withdrawn + w
                conn.execute(delete(consents).where(consents.c.subject_id.in_(part)))
                conn.execute(delete(objections).where(objections.c.subject_id.in_(part)))
                conn.execute(update(subjects).where(s.id.in_(part)).values(erased_at=now, external_enc=None))
            self.keyring.destroy(conn, empty)
            seq = self.ledger.append(
                conn,
                RetentionSwept(
                    time=now,
                    actor=actor,
                    purpose="legal_obligation",
                    records=n,
                    by_dataset=by_ds,
                    subjects_shredded=len(empty),
                    subject_pseudonyms_digest=set_digest(pseudos),
                    records_digests={ds: rs.digest() for ds, (_, rs) in deleted.items()},
                    consents_digest=given.digest(),
                    withdrawals_digest=withdrawn.digest(),
                ),
            )
        if n:
            self.store.purge_freed()
        return {"records_deleted": n, "by_dataset": by_ds, "subjects_shredded": len(empty), "seq": seq}

    def reseal_legacy(self, conn: Connection) -> int:
        """Re-seal records sealed before versions and times were bound into their associated data (a
        workspace created before that, or restored from an older backup): each is opened under its old
        associated data, so a record edited at rest before the upgrade fails here, and sealed again
        under the same data key with version 0. Runs in the caller's (upgrade) transaction."""
        r = records.c
        schemas: dict[str, str] = {}
        done = 0
        while True:
            rows = conn.execute(
                select(r.rid, r.dataset, r.subject_id, r.dek_version, r.data, r.created_us, r.expires_us)
                .where(r.version.is_(None))
                .order_by(r.rid)
                .limit(CHUNK)
            ).all()
            if not rows:
                return done
            keys = self.keyring.load(conn, {int(row.subject_id) for row in rows})
            resealed = []
            for row in rows:
                ds, rid = str(row.dataset), bytes(row.rid)
                if ds not in schemas:
                    schemas[ds] = self.catalog.get(ds).schema.digest()
                key = keys.get(int(row.subject_id), {}).get(int(row.dek_version))
                if key is None:
                    raise IntegrityError(f"record {rid.hex()} in {ds}: its data key is missing")
                try:
                    plain = key.open(bytes(row.data), legacy_record_ad(ds, rid, schemas[ds]))
                except IntegrityError:
                    raise IntegrityError(f"record {rid.hex()} in {ds} fails authentication") from None
                ad = record_ad(ds, rid, schemas[ds], 0, int(row.created_us), int(row.expires_us))
                resealed.append({"b_rid": rid, "b_data": key.seal(plain, ad)})
            conn.execute(
                update(records).where(r.rid == bindparam("b_rid")).values(version=0, data=bindparam("b_data")),
                resealed,
            )
            done += len(rows)

    # --- information -----------------------------------------------------------------------------

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


def _consent_sets(conn: Connection, subject_ids: list[int]) -> tuple[RecordSet, RecordSet]:
    """The multiset hashes of these subjects' stored consents and of their withdrawals."""
    given, withdrawn = RecordSet(), RecordSet()
    c = consents.c
    q = (
        select(subjects.c.pseudonym, c.purpose, c.basis, c.granted_at, c.withdrawn_at, c.notice_version, c.source)
        .join_from(consents, subjects, subjects.c.id == c.subject_id)
        .where(c.subject_id.in_(subject_ids))
    )
    for row in conn.execute(q).mappings():
        add_consent(given, withdrawn, str(row["pseudonym"]), row)
    return given, withdrawn


def _deleted_sets(conn: Connection, query: Any) -> dict[str, tuple[int, RecordSet]]:
    """Per dataset: how many records a deletion removes and their record-set hash (for the ledger)."""
    out: dict[str, tuple[int, RecordSet]] = {}
    for ds, pseudonym, rid in conn.execute(query.join_from(records, subjects, subjects.c.id == records.c.subject_id)):
        n, rs = out.get(str(ds), (0, RecordSet()))
        rs.add(str(ds), str(pseudonym), bytes(rid))
        out[str(ds)] = (n + 1, rs)
    return out


_ISO_START = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:$|[T ])")


def _parse_time(value: Any, where: str) -> datetime | None:
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
    return ts.to_pydatetime()
