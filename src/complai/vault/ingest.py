"""Ingest: validate rows and consent records, encrypt each record under its subject's data key and store
them in one transaction (all or nothing), with one records.ingested ledger entry."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias, TypedDict

import pandas as pd

from complai.clock import Clock, to_us
from complai.crypto.aead import DataKey
from complai.crypto.digest import digest
from complai.crypto.keyring import Keyring, new_raw_key
from complai.errors import InvalidInput
from complai.events import RecordsIngested
from complai.inputs import TABLE_MAX_BYTES, parse_csv, read_input, summarise
from complai.ledger.log import Ledger
from complai.store import Store, bulk_insert
from complai.store.tables import consents, records
from complai.taxonomy import Taxonomy
from complai.vault.catalog import Catalog
from complai.vault.records import RecordSet, add_consent, encode, prepare, record_ad, subject_ad
from complai.vault.schema import DatasetSchema, retention_deadline
from complai.vault.subjects import Subjects, set_digest

CONSENT_COLUMNS = {"subject", "purpose", "basis", "granted_at", "withdrawn_at", "notice_version", "source"}
_CONSENT_FIELDS = ("purpose", "basis", "granted_at", "withdrawn_at", "notice_version", "source")
_RECORD_COLUMNS = (
    *("rid", "dataset", "subject_id", "dek_version", "created_us", "expires_us", "data", "version"),
    "schema_version",
)

DataInput: TypeAlias = pd.DataFrame | Path | str | list[dict[str, Any]]
ConsentInput: TypeAlias = pd.DataFrame | Path | str


@dataclass(frozen=True)
class IngestResult:
    dataset: str
    rows: int
    subjects: int
    new_subjects: int
    skipped_erased_rows: int
    consents: int
    seq: int


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
    ) -> IngestResult:
        """Encrypt and store rows, with optional consent records, in one transaction (all or nothing)."""
        info = self.catalog.get(dataset)
        schema = info.schema
        if isinstance(data, str | Path):
            source = read_input(data, "data file", TABLE_MAX_BYTES)
            frame = csv_frame(source, "data", Path(data).name)
        elif isinstance(data, list):
            frame = pd.DataFrame.from_records(data)
            source = _frame_bytes(frame)
        else:
            frame = data
            source = _frame_bytes(frame)
        external, rows = prepare(schema, frame)
        consent_rows: list[ConsentRow] = []
        if consents_data is not None:
            if isinstance(consents_data, str | Path):
                consent_source = read_input(consents_data, "consents file", TABLE_MAX_BYTES)
                consents_frame = csv_frame(consent_source, "consents", Path(consents_data).name)
            else:
                consents_frame = consents_data
                consent_source = _frame_bytes(consents_frame)
            consent_rows = self.prepare_consents(schema, consents_frame)
            source += b"\x00consents\x00" + consent_source
        now = self.clock.now()
        now_us = to_us(now)
        expires_us = to_us(retention_deadline(now, schema.retention))
        pseudonyms = self.subjects.pseudonyms
        pseud = {e: pseudonyms.subject(e) for e in set(external) | {c["subject"] for c in consent_rows}}
        missing_consent_subjects = {c["subject"] for c in consent_rows} - set(external)
        with self.store.write() as conn:
            self.catalog.check_version(conn, dataset, info.version)  # sealed and stamped under this version
            known = self.subjects.by_pseudonym(conn, pseud.values())
            if missing_consent_subjects:
                absent = [e for e in missing_consent_subjects if pseud[e] not in known]
                if absent:
                    raise InvalidInput(f"consents name {len(absent)} subject(s) that are neither in the data nor known")
            new_ext = sorted(e for e in set(external) if pseud[e] not in known)
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
                        info.version,
                    )
                )
            bulk_insert(conn, records, out, columns=_RECORD_COLUMNS)
            crow = [
                (
                    known[pseud[c["subject"]]].id,
                    c["purpose"],
                    c["basis"],
                    c["granted_at"],
                    c["withdrawn_at"],
                    c["notice_version"],
                    c["source"],
                )
                for c in consent_rows
                if not known[pseud[c["subject"]]].erased
            ]
            bulk_insert(conn, consents, crow, columns=("subject_id", *_CONSENT_FIELDS))
            given, withdrawn = RecordSet(), RecordSet()
            for c in consent_rows:
                if not known[pseud[c["subject"]]].erased:
                    add_consent(given, withdrawn, pseud[c["subject"]], c)
            live = [pseud[e] for e in per_subject]
            seq = self.ledger.emit(
                conn,
                RecordsIngested,
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
            )
        return IngestResult(dataset, len(out), len(per_subject), len(new_ext), skipped, len(crow), seq)

    def prepare_consents(self, schema: DatasetSchema, data: ConsentInput) -> list[ConsentRow]:
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
            "notice_version": str(row.get("notice_version") or "unspecified"),
            "source": str(row.get("source") or "ingest"),
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
