"""Subject-level rights primitives: export (GDPR Art. 15/20), erasure (Art. 17), rectification (Art. 16)
and restriction (Art. 18). Each appends one ledger entry in the transaction of its change; an erasure
raises `SubjectsErased` in that transaction for the services that keep links to the subject."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, delete, func, select, update

from complai.clock import Clock, as_utc, from_us, parse_utc, to_us, utc_iso
from complai.crypto.digest import digest
from complai.crypto.keyring import Keyring
from complai.errors import IntegrityError, InvalidInput, NotFound
from complai.events import DataRead, SubjectErased, SubjectExported, SubjectRectified, SubjectRestricted
from complai.ledger.log import Ledger
from complai.store import Store
from complai.store.tables import (
    consents,
    external_erasures,
    external_subjects,
    ledger_entries,
    objections,
    records,
    subjects,
)
from complai.vault.catalog import Catalog, SchemaVersion, layout, present, refuse_external
from complai.vault.external import External
from complai.vault.notices import Notices, SubjectsErased
from complai.vault.reads import Reads
from complai.vault.records import check_value, encode, open_record, record_ad, value_fields
from complai.vault.schema import DatasetSchema
from complai.vault.subjects import Subject, Subjects, open_external
from complai.vault.tallies import consent_sets, deleted_sets


def _iso(when: datetime | None) -> str | None:
    """A stored time (naive UTC from SQLite) as complai writes it, or None."""
    aware = as_utc(when)
    return None if aware is None else utc_iso(aware)


class Rights:
    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        catalog: Catalog,
        keyring: Keyring,
        subjects: Subjects,
        reads: Reads,
        notices: Notices,
        clock: Clock,
        external: External | None = None,
    ) -> None:
        self.store, self.ledger, self.catalog, self.keyring = store, ledger, catalog, keyring
        self.subjects, self.reads, self.notices, self.clock = subjects, reads, notices, clock
        self.external = external

    def restrict(self, external_id: str, actor: str, reason: str = "", lift: bool = False) -> int:
        now = self.clock.now()
        with self.store.write() as conn:
            subj = self.subjects.get(conn, external_id)
            if lift != subj.restricted:
                raise InvalidInput("the subject is not restricted" if lift else "the subject is already restricted")
            conn.execute(
                update(subjects)
                .where(subjects.c.id == subj.id)
                .values(restricted_at=None if lift else now, restriction_reason=None if lift else reason[:200])
            )
            return self.ledger.emit(
                conn,
                SubjectRestricted,
                time=now,
                actor=actor,
                purpose="subject_request",
                subject=subj.pseudonym,
                restricted=not lift,
                reason_digest=digest(reason.encode()),
            )

    def rectify(self, external_id: str, dataset: str, field: str, value: Any, actor: str) -> int:
        """Set one field in all of a subject's records of a dataset; re-encrypts them."""
        info = self.catalog.get(dataset)
        refuse_external(info, "rectified by the vault (its owner system rectifies its rows)")
        schema = info.schema
        if field == schema.subject_column:
            raise InvalidInput("the subject column cannot be rectified; open a new subject instead")
        spec = schema.field(field)
        new_value = check_value(spec, value)
        pos = [f.name for f in value_fields(schema)].index(field)
        now = self.clock.now()
        with self.store.write() as conn:
            # rectified records are sealed again under the current schema version, held until commit
            self.catalog.check_version(conn, dataset, info.version)
            sealed_under = {
                v: (sv.digest, layout(sv.schema, schema)) for v, sv in self.catalog.versions(conn, dataset).items()
            }
            sdig = sealed_under[info.version][0]
            subj = self.subjects.get(conn, external_id)
            r = records.c
            rows = conn.execute(
                select(r.rid, r.dek_version, r.data, r.version, r.created_us, r.expires_us, r.schema_version).where(
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
                vdig, where = sealed_under[int(row.schema_version)]
                values = present(open_record(old[int(row.dek_version)], dataset, vdig, row), where)
                values[pos] = new_value
                version = int(row.version) + 1
                rid = bytes(row.rid)
                ad = record_ad(dataset, rid, sdig, version, int(row.created_us), int(row.expires_us))
                versions[rid.hex()] = version
                conn.execute(
                    update(records)
                    .where(r.rid == row.rid)
                    .values(
                        dek_version=ver,
                        version=version,
                        data=key.seal(encode(values), ad),
                        schema_version=info.version,
                    )
                )
            return self.ledger.emit(
                conn,
                SubjectRectified,
                time=now,
                actor=actor,
                purpose="subject_request",
                subject=subj.pseudonym,
                dataset=dataset,
                field=field,
                records=len(rows),
                value_digest=self.subjects.pseudonyms.value(encode([new_value])),
                record_versions=versions,
            )

    def export(self, external_id: str, actor: str) -> dict[str, Any]:
        """Everything held about a subject, machine-readable (GDPR Art. 15 / 20)."""
        now = self.clock.now()
        with self.store.write() as conn:
            subj = self.subjects.get(conn, external_id)
            row = conn.execute(select(subjects).where(subjects.c.id == subj.id)).one()
            keys = self.keyring.load(conn, [subj.id]).get(subj.id, {})
            r = records.c
            recs = conn.execute(
                select(r.rid, r.dataset, r.dek_version, r.data, r.created_us, r.expires_us, r.version, r.schema_version)
                .where(r.subject_id == subj.id)
                .order_by(r.dataset, r.created_us)
            ).all()
            by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
            schemas: dict[str, DatasetSchema] = {}
            versions: dict[str, dict[int, SchemaVersion]] = {}
            for rec in recs:
                schema = schemas.setdefault(rec.dataset, self.catalog.get(rec.dataset).schema)
                if int(rec.dek_version) not in keys:
                    raise IntegrityError("a record's data key is missing")
                sv = versions.setdefault(rec.dataset, self.catalog.versions(conn, rec.dataset)).get(
                    int(rec.schema_version)
                )
                if sv is None:
                    raise IntegrityError(f"a record of {rec.dataset} names a schema version it never had")
                values = present(
                    open_record(keys[int(rec.dek_version)], rec.dataset, sv.digest, rec), layout(sv.schema, schema)
                )
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
                    "granted_at": _iso(x.granted_at),
                    "withdrawn_at": _iso(x.withdrawn_at),
                    "notice_version": x.notice_version,
                    "source": x.source,
                }
                for x in conn.execute(select(consents).where(c.subject_id == subj.id).order_by(c.granted_at))
            ]
            objs = [
                {"purpose": x.purpose, "kind": x.kind, "at": _iso(x.at), "lifted_at": _iso(x.lifted_at)}
                for x in conn.execute(select(objections).where(objections.c.subject_id == subj.id))
            ]
            history = self._history(conn, subj, list(by_dataset))
            document: dict[str, Any] = {
                "format": "complai-subject-export/1",
                "generated_at": utc_iso(now),
                "subject": {
                    "id": open_external(keys, subj.pseudonym, row.external_enc),
                    "pseudonym": subj.pseudonym,
                    "first_seen": _iso(row.created_at),
                    "restricted": row.restricted_at is not None,
                },
                "records": dict(by_dataset),
                "consents": cons,
                "objections": objs,
                "processing_history": history,
            }
            blob = json.dumps(document, sort_keys=True).encode()
            seq = self.ledger.emit(
                conn,
                SubjectExported,
                time=now,
                actor=actor,
                purpose="subject_request",
                subject=subj.pseudonym,
                records=len(recs),
                export_digest=digest(blob),
            )
        document["ledger_seq"] = seq
        return document

    def _history(self, conn: Connection, subj: Subject, datasets: list[str]) -> list[dict[str, Any]]:
        """Ledger events that name the subject, and reads of its datasets it was eligible for then."""
        e = ledger_entries.c
        needle = subj.pseudonym.encode()
        named: ColumnElement[bool]
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
        return sorted(out, key=lambda x: int(x["seq"]))

    def _was_eligible(self, conn: Connection, subj: Subject, ev: dict[str, Any]) -> bool:
        at = parse_utc(ev["time"])
        schema = self.catalog.get(ev["dataset"]).schema
        if ev["purpose"] not in schema.purposes:
            return False
        q = (
            select(func.count())
            .select_from(records.join(subjects, subjects.c.id == records.c.subject_id))
            .where(self.reads.eligible_condition(schema, ev["purpose"], at), records.c.subject_id == subj.id)
            .where(records.c.created_us <= to_us(at))
        )
        return bool(conn.execute(q).scalar())

    def erase(self, external_id: str, actor: str, reapplied_from: int | None = None) -> int:
        """Erasure (GDPR Art. 17): delete records and consents, destroy the data keys, keep a tombstone."""
        now = self.clock.now()
        with self.store.write() as conn:
            subj = self.subjects.get(conn, external_id)
            seq = self._erase(conn, subj, actor, now, reapplied_from, external_id.strip())
        self.store.purge_freed()
        return seq

    def erase_pseudonym(self, conn: Connection, pseudonym: str, actor: str, reapplied_from: int | None) -> bool:
        """Erase by pseudonym (re-applying a tombstone after a restore). False if nothing to erase."""
        found = self.subjects.by_pseudonym(conn, [pseudonym]).get(pseudonym)
        if found is None or found.erased:
            return False
        self._erase(conn, found, actor, self.clock.now(), reapplied_from, self._enrolled_id(conn, found))
        return True

    def _enrolled_id(self, conn: Connection, subj: Subject) -> str | None:
        """The external id of a subject enrolled in an external dataset, opened from its sealed identity
        (before the erasure shreds it), so that re-applying an erasure after a restore sends its owner
        systems the requests the restored state lacks; None for a subject enrolled nowhere."""
        x = external_subjects.c
        if conn.execute(select(x.subject_id).where(x.subject_id == subj.id).limit(1)).first() is None:
            return None
        blob = conn.execute(select(subjects.c.external_enc).where(subjects.c.id == subj.id)).scalar_one()
        return open_external(self.keyring.load(conn, [subj.id]).get(subj.id, {}), subj.pseudonym, blob)

    def _erase(
        self,
        conn: Connection,
        subj: Subject,
        actor: str,
        now: datetime,
        reapplied_from: int | None,
        external_id: str | None = None,
    ) -> int:
        """Erase in the caller's transaction. With the subject's `external_id` (not after a restore), an
        erasure request is opened to the owner system of every external dataset it was enrolled in."""
        deleted = deleted_sets(
            conn, select(records.c.dataset, subjects.c.pseudonym, records.c.rid).where(records.c.subject_id == subj.id)
        )
        n_rec = conn.execute(delete(records).where(records.c.subject_id == subj.id)).rowcount
        given, withdrawn = consent_sets(conn, [subj.id])
        n_con = conn.execute(delete(consents).where(consents.c.subject_id == subj.id)).rowcount
        conn.execute(delete(objections).where(objections.c.subject_id == subj.id))
        n_keys = self.keyring.destroy(conn, [subj.id])
        conn.execute(
            update(subjects)
            .where(subjects.c.id == subj.id)
            .values(erased_at=now, external_enc=None, restricted_at=None, restriction_reason=None)
        )
        requests: list[str] = []
        if self.external is not None:
            # the request rows name the erasure's ledger entry: reserve their ids now, fill them after
            requests = self.external.on_erased(conn, subj, external_id, now, seq=-1)
        seq = self.ledger.emit(
            conn,
            SubjectErased,
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
            external_requests=requests or None,
        )
        if requests:
            conn.execute(update(external_erasures).where(external_erasures.c.id.in_(requests)).values(erase_seq=seq))
        self.notices.publish(SubjectsErased(conn, now, (subj.id,), seq))
        return seq
